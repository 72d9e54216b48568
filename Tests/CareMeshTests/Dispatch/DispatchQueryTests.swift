import CareMeshContracts
import CareMeshRPC
import DispatchService
import Foundation
import Testing

/// Seed 001's queries and zones, through the router (the same stack as `DispatchTests`).
extension DispatchTests {
    @Test("histories, the active board and volunteer performance: what each role may see, in the seed's order")
    func queries() async throws {
        try await withStack(["DISPATCH_WAVE_SIZE": "3", "DISPATCH_WAVE_RADII_M": "3000"]) { s in
            let alice = try await account(s, "user"), bob = try await account(s, "user")
            let coordinator = try await account(s, "coordinator")
            let v = try await account(s, "volunteer"), w = try await account(s, "volunteer")
            let here = (lat: 48.8566, lon: 2.3522)
            try await seedResponder(s, id: v.id, at: (here.lat + 0.001, here.lon))
            try await seedResponder(s, id: w.id, at: (here.lat + 0.002, here.lon))
            func create(_ who: Account, _ priority: Caremesh_Dispatch_V1_Priority, at p: (lat: Double, lon: Double) = (48.8566, 2.3522))
                async throws -> String
            {
                try await s.client.call(DispatchMethods.createSos, request: sosRequest(p, priority: priority), options: who.auth).sos.id
            }
            func call<Q, A>(_ m: RPCMethod<Q, A>, _ who: Account, _ r: Q) async throws -> A {
                try await s.client.call(m, request: r, options: who.auth)
            }

            // Bob's low-priority SOS is the oldest; Alice raises three: one resolved and rated by
            // her, one she cancels, one critical and still pending. W accepts one of Bob's and
            // hands it back.
            let bobLow = try await create(bob, .low)
            let bobMedium = try await create(bob, .medium)
            let resolved = try await create(alice, .high)
            _ = try await call(DispatchMethods.acceptSos, v, .with { $0.sosID = resolved })
            _ = try await call(DispatchMethods.startSos, v, .with { $0.sosID = resolved })
            _ = try await call(DispatchMethods.resolveSos, v, .with { $0.sosID = resolved })
            _ = try await call(DispatchMethods.submitFeedback, alice, .with { $0.sosID = resolved; $0.rating = 4; $0.comment = "quick" })
            let cancelled = try await create(alice, .medium)
            _ = try await call(DispatchMethods.cancelSos, alice, .with { $0.sosID = cancelled })
            let critical = try await create(alice, .critical, at: (here.lat + 0.01, here.lon + 0.01))
            _ = try await call(DispatchMethods.acceptSos, w, .with { $0.sosID = bobMedium })
            _ = try await call(DispatchMethods.cancelSos, w, .with { $0.sosID = bobMedium; $0.reason = "flat tyre" })

            // Alice's history: hers only, newest first, paged, with the rating and the duration.
            let first = try await call(DispatchMethods.listMySos, alice, .with { $0.pageSize = 2 })
            #expect(first.entries.map(\.sos.id) == [critical, cancelled])
            #expect(!first.nextPageToken.isEmpty)
            let second = try await call(DispatchMethods.listMySos, alice, .with { $0.pageSize = 2; $0.pageToken = first.nextPageToken })
            #expect(second.entries.map(\.sos.id) == [resolved])
            #expect(second.nextPageToken.isEmpty)
            let rated = try #require(second.entries.first)
            #expect(rated.rating == 4 && rated.comment == "quick" && rated.sos.acceptedBy == v.id.uuidString.lowercased())
            #expect(rated.durationS > 0 && rated.durationS < 60)
            #expect(first.entries.allSatisfy { $0.rating == 0 && $0.durationS == 0 })
            #expect(try await call(DispatchMethods.listMySos, bob, .init()).entries.map(\.sos.id) == [bobMedium, bobLow])
            #expect(await violations { _ = try await call(DispatchMethods.listMySos, alice, .with { $0.pageToken = "nope" }) } == ["page_token"])

            // A volunteer's history: their own, or anyone's for staff; never another volunteer's.
            #expect(try await call(DispatchMethods.listVolunteerSos, v, .init()).entries.map(\.sos.id) == [resolved])
            #expect(try await call(DispatchMethods.listVolunteerSos, coordinator, .with { $0.volunteerID = v.id.uuidString })
                .entries.map(\.sos.id) == [resolved])
            #expect(await code { _ = try await call(DispatchMethods.listVolunteerSos, w, .with { $0.volunteerID = v.id.uuidString }) }
                == .permissionDenied)
            #expect(await violations { _ = try await call(DispatchMethods.listVolunteerSos, coordinator, .with { $0.volunteerID = "x" }) }
                == ["volunteer_id"])

            // The board: staff only; active SOS by urgency, then age; coordinates and offers out.
            #expect(await code { _ = try await call(DispatchMethods.activeBoard, alice, .init()) } == .permissionDenied)
            #expect(await code { _ = try await call(DispatchMethods.activeBoard, v, .init()) } == .permissionDenied)
            let board = try await call(DispatchMethods.activeBoard, coordinator, .init())
            #expect(board.entries.map(\.sos.id) == [critical, bobMedium, bobLow])
            let top = try #require(board.entries.first)
            #expect(abs(top.sos.location.latitude - (here.lat + 0.01)) < 1e-9 && abs(top.sos.location.longitude - (here.lon + 0.01)) < 1e-9)
            #expect(top.elapsedS >= 0 && top.elapsedS < 60)
            let pendingOffers = try await s.count("""
                SELECT count(*) FROM dispatch.sos_offers WHERE sos_id = \(UUID(uuidString: critical)!) AND response = 'PENDING'
                """)
            #expect(Int64(top.offersOut) == pendingOffers && pendingOffers > 0)
            #expect(try await call(DispatchMethods.activeBoard, coordinator, .with { $0.limit = 1 }).entries.count == 1)
            #expect(await violations { _ = try await call(DispatchMethods.activeBoard, coordinator, .with { $0.limit = 5_000 }) } == ["limit"])

            // Performance (seed 001's query 4): by rating, then SOS handled.
            let figures = try await call(DispatchMethods.getVolunteerPerformance, coordinator, .init()).volunteers
            #expect(figures.map(\.volunteerID) == [v.id, w.id].map { $0.uuidString.lowercased() })
            let vf = try #require(figures.first), wf = try #require(figures.last)
            #expect(vf.handled == 1 && vf.resolved == 1 && vf.averageRating == 4 && vf.ratingCount == 1 && vf.cancellations == 0)
            #expect(vf.meanResponseS > 0 && vf.meanResponseS < 60)
            #expect(wf.handled == 0 && wf.resolved == 0 && wf.cancellations == 1 && wf.meanResponseS == 0)
            let own = try await call(DispatchMethods.getVolunteerPerformance, w, .init()).volunteers
            #expect(own.map(\.volunteerID) == [w.id.uuidString.lowercased()])
            #expect(await code { _ = try await call(DispatchMethods.getVolunteerPerformance, w, .with { $0.volunteerID = v.id.uuidString }) }
                == .permissionDenied)
        }
    }

    @Test("zones: admins draw them, invalid shapes are refused with nothing written, the smallest covering zone is found")
    func zones() async throws {
        try await withStack { s in
            let admin = try await account(s, "admin"), coordinator = try await account(s, "coordinator")
            func square(_ name: String, _ lat: Double, _ lon: Double, _ half: Double) -> Caremesh_Dispatch_V1_PutZoneRequest {
                .with {
                    $0.zone.name = name
                    $0.zone.boundary = [(lat - half, lon - half), (lat - half, lon + half), (lat + half, lon + half), (lat + half, lon - half)]
                        .map { p in .with { $0.latitude = p.0; $0.longitude = p.1 } }
                }
            }
            func put(_ r: Caremesh_Dispatch_V1_PutZoneRequest, _ who: Account) async throws -> Caremesh_Dispatch_V1_Zone {
                try await s.client.call(DispatchMethods.putZone, request: r, options: who.auth).zone
            }
            func find(_ lat: Double, _ lon: Double) async throws -> Caremesh_Dispatch_V1_FindZoneResponse {
                try await s.client.call(DispatchMethods.findZone, request: .with { $0.location.latitude = lat; $0.location.longitude = lon },
                                        options: coordinator.auth)
            }

            #expect(await code { _ = try await put(square("region", 51.5, -0.1, 0.5), coordinator) } == .permissionDenied)
            let region = try await put(square("region", 51.5, -0.1, 0.5), admin)
            let district = try await put(square("district", 51.5, -0.1, 0.05), admin)
            #expect(district.boundary.count == 4 && district.boundary[2].latitude == 51.55 && district.boundary[2].longitude == -0.05)

            // A point in both is the district's (the smaller); one only in the region is the
            // region's; one outside both is in none. Edges count as covered (edges are geodesics:
            // an east or west edge is a meridian).
            #expect(try await find(51.5, -0.1).zone.name == "district")
            #expect(try await find(51.8, -0.1).zone.id == region.id)
            #expect(try await find(51.5, -0.05).zone.name == "district")
            let outside = try await find(40.0, 3.0)
            #expect(!outside.found && !outside.hasZone)

            // Putting a name again replaces its shape (same id); an id renames.
            let moved = try await put(square("district", 51.8, -0.1, 0.05), admin)
            #expect(moved.id == district.id)
            #expect(try await find(51.5, -0.1).zone.name == "region")
            #expect(try await find(51.8, -0.1).zone.name == "district")
            var rename = square("north-district", 51.8, -0.1, 0.05)
            rename.zone.id = district.id
            #expect(try await put(rename, admin).name == "north-district")
            #expect(try await s.client.call(DispatchMethods.listZones, request: .init(), options: coordinator.auth).zones.map(\.name)
                == ["north-district", "region"])

            // Bad shapes and names: INVALID_ARGUMENT naming the field; nothing written.
            var bowtie = square("bowtie", 10, 10, 1)
            bowtie.zone.boundary.swapAt(2, 3)
            var tooFew = square("line", 10, 10, 1)
            tooFew.zone.boundary = Array(tooFew.zone.boundary.prefix(2))
            var offEarth = square("off-earth", 10, 10, 1)
            offEarth.zone.boundary[1].latitude = 95
            var unknown = square("ghost", 10, 10, 1)
            unknown.zone.id = UUID().uuidString
            #expect(await violations { _ = try await put(bowtie, admin) } == ["zone.boundary"])
            #expect(await violations { _ = try await put(tooFew, admin) } == ["zone.boundary"])
            #expect(await violations { _ = try await put(offEarth, admin) } == ["zone.boundary[1].latitude"])
            #expect(await violations { _ = try await put(square("Bad Name", 10, 10, 1), admin) } == ["zone.name"])
            #expect(await code { _ = try await put(unknown, admin) } == .notFound)
            #expect(await violations { _ = try await find(91, 0) } == ["location.latitude"])
            #expect(try await s.count("SELECT count(*) FROM dispatch.zones") == 2)
        }
    }
}

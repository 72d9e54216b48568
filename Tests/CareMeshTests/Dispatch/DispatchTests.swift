import CareMeshContracts
import CareMeshRPC
import CareMeshRouter
import CareMeshStore
import CareMeshTesting
import DispatchService
import Foundation
import IdentityService
import Logging
import PostgresNIO
import Synchronization
import Testing

/// Dispatch through a router that requires tokens, with identity beside it, on real
/// PostgreSQL with PostGIS.
@Suite(.serialized) struct DispatchTests {
    let logger = TestDatabase.logger

    struct Stack: Sendable {
        let router: Router
        let client: RPCClient
        let db: TestDatabase
        let environment: [String: String]

        /// Runs a dispatch service (its own instance) around `body`, then stops it as SIGTERM would.
        func withDispatch(_ body: @Sendable () async throws -> Void) async throws {
            let host = try await DispatchService.make(environment: environment, logger: TestDatabase.logger)
            try await TestStack.withHosts([host]) {
                try await TestStack.waitUntilServing(client, "dispatch")
                try await body()
            }
        }

        /// Runs `sql` as the superuser in the test database (fixtures and checks).
        func sql(_ query: PostgresQuery) async throws -> [PostgresRow] { try await db.sql(query) }

        func count(_ query: PostgresQuery) async throws -> Int64 { try await db.count(query) }
    }

    /// A fresh database, a router that requires tokens, identity and dispatch; with
    /// `separateDispatch`, dispatch is left to `body` (`s.dispatch()` makes one to run).
    func withStack(_ extra: [String: String] = [:], separateDispatch: Bool = false,
                   _ body: @Sendable (Stack) async throws -> Void) async throws {
        let router = try TestStack.startRouter(TestStack.routerConfiguration(authentication: .required))
        defer { router.stop() }
        let db = try await TestDatabase.fresh("dispatch")
        let env = db.environment.merging(TestStack.workerEnvironment(router)) { $1 }
            .merging(["IDENTITY_SCRYPT_LN": "10", "CAREMESH_ROUTER": router.boundEndpoints.client]) { $1 }
            .merging(extra) { $1 }
        let identity = try await IdentityService.make(environment: env, logger: logger)
        let hosts = separateDispatch ? [identity] : [identity, try await DispatchService.make(environment: env, logger: logger)]
        let client = TestStack.client(router, timeout: .seconds(10))
        defer { client.close() }
        try await TestStack.withHosts(hosts) {
            try await TestStack.waitUntilServing(client, "identity")
            if !separateDispatch { try await TestStack.waitUntilServing(client, "dispatch") }
            _ = try await TestStack.eventually(timeout: .seconds(10)) {
                if router.signingKeyIDs.isEmpty { throw RPCError(.unavailable, "no keys yet") }
            }
            try await body(Stack(router: router, client: client, db: db, environment: env))
        }
    }

    typealias Account = TestAccount

    /// A signed-in account holding `role`.
    func account(_ s: Stack, _ role: String) async throws -> Account { try await TestAccount.make(s.client, s.db, role: role) }

    /// A responder straight in dispatch's tables (as the projection would hold it), with a fix.
    func seedResponder(_ s: Stack, id: UUID = UUID(), role: String = "volunteer", verified: Bool = true, active: Bool = true,
                       expired: Bool = false, available: Bool = true, skills: [String] = [], at p: (lat: Double, lon: Double),
                       ageSeconds: Double = 60) async throws {
        _ = try await s.sql("""
            INSERT INTO dispatch.responders (user_id, role, verified, verified_at, active, credential_expired, available, skills)
            VALUES (\(id), \(role), \(verified), now(), \(active), \(expired), \(available), \(skills))
            """)
        _ = try await s.sql("""
            INSERT INTO dispatch.user_locations (user_id, location, updated_at)
            VALUES (\(id), ST_SetSRID(ST_MakePoint(\(p.lon), \(p.lat)), 4326)::geography, now() - make_interval(secs => \(ageSeconds)))
            """)
    }

    func sosRequest(_ p: (lat: Double, lon: Double), _ type: Caremesh_Dispatch_V1_EmergencyType = .medical,
                    priority: Caremesh_Dispatch_V1_Priority = .high) -> Caremesh_Dispatch_V1_CreateSosRequest {
        var r = Caremesh_Dispatch_V1_CreateSosRequest()
        r.emergencyType = type
        r.priority = priority
        r.location.latitude = p.lat
        r.location.longitude = p.lon
        r.description_p = "help"
        return r
    }

    func code(_ body: () async throws -> Void) async -> StatusCode? { await statusCode(of: body) }

    func violations(_ body: () async throws -> Void) async -> Set<String> { await fieldViolations(of: body) }

    /// Great-circle distance on PostGIS's sphere (the WGS 84 mean radius, (2a + b) / 3).
    static func haversine(_ a: (lat: Double, lon: Double), _ b: (lat: Double, lon: Double)) -> Double {
        let r = 6_371_008.771_415, rad = Double.pi / 180
        let dLat = (b.lat - a.lat) * rad, dLon = (b.lon - a.lon) * rad
        let h = pow(sin(dLat / 2), 2) + cos(a.lat * rad) * cos(b.lat * rad) * pow(sin(dLon / 2), 2)
        return 2 * r * asin(min(1, sqrt(h)))
    }

    @Test("eligibility follows identity's events: unverified never offered, verified offered, deactivated dropped")
    func eligibilityFromIdentity() async throws {
        try await withStack(["DISPATCH_SOS_RATE_LIMIT": "100"]) { s in
            let admin = try await account(s, "admin")
            let requester = try await account(s, "user")
            let volunteer = try await account(s, "volunteer")
            let here = (lat: 48.8566, lon: 2.3522)

            var creds = Caremesh_Identity_V1_SubmitVolunteerCredentialsRequest()
            creds.credentials.skills = [.firstAid]
            _ = try await s.client.call(IdentityMethods.submitVolunteerCredentials, request: creds, options: volunteer.auth)
            var available = Caremesh_Dispatch_V1_SetAvailabilityRequest()
            available.available = true
            _ = try await s.client.call(DispatchMethods.setAvailability, request: available, options: volunteer.auth)
            var location = Caremesh_Dispatch_V1_UpdateLocationRequest()
            location.location.latitude = here.lat + 0.001
            location.location.longitude = here.lon
            location.accuracyM = 15
            _ = try await s.client.call(DispatchMethods.updateLocation, request: location, options: volunteer.auth)

            // Not verified yet: available and near, but never offered.
            let first = try await s.client.call(DispatchMethods.createSos, request: sosRequest(here), options: requester.auth)
            #expect(first.offers.isEmpty)
            #expect(first.sos.status == .escalated)

            var verify = Caremesh_Identity_V1_VerifyUserRequest()
            verify.userID = volunteer.id.uuidString.lowercased()
            _ = try await s.client.call(IdentityMethods.verifyUser, request: verify, options: admin.auth)
            let me = try await TestStack.eventually {
                let r = try await s.client.call(DispatchMethods.getResponder, request: .init(), options: volunteer.auth).responder
                if !r.eligible { throw RPCError(.unavailable, "not yet") }
                return r
            }
            #expect(me.skills == [.firstAid] && me.verified && me.active)

            let second = try await s.client.call(DispatchMethods.createSos, request: sosRequest(here), options: requester.auth)
            #expect(second.offers.map(\.responderID) == [volunteer.id.uuidString.lowercased()])
            #expect(second.offers.first?.skillMatch == true)
            #expect(abs((second.offers.first?.distanceM ?? 0) - Self.haversine(here, (here.lat + 0.001, here.lon))) < 0.01)
            #expect(second.sos.status == .pending && second.sos.wave == 1)

            // Deactivated at identity: dropped from matching.
            var deactivate = Caremesh_Identity_V1_DeactivateUserRequest()
            deactivate.userID = volunteer.id.uuidString.lowercased()
            deactivate.reason = "left"
            _ = try await s.client.call(IdentityMethods.deactivateUser, request: deactivate, options: admin.auth)
            _ = try await TestStack.eventually {
                if try await s.count("SELECT count(*) FROM dispatch.responders WHERE NOT active") != 1 {
                    throw RPCError(.unavailable, "not yet")
                }
            }
            let third = try await s.client.call(DispatchMethods.createSos, request: sosRequest(here), options: requester.auth)
            #expect(third.offers.isEmpty)
        }
    }

    @Test("matching equals a brute-force distance computation on random responders, wave after wave")
    func matchingAgainstBruteForce() async throws {
        try await withStack(["DISPATCH_SOS_RATE_LIMIT": "1000", "DISPATCH_WAVE_SIZE": "5",
                             "DISPATCH_WAVE_RADII_M": "2000,5000,10000"]) { s in
            let requester = try await account(s, "user")
            let center = (lat: 51.5072, lon: -0.1276)
            struct Seeded { var id: UUID; var p: (lat: Double, lon: Double); var eligible: Bool; var skills: [String]; var role: String }
            var rng = SystemRandomNumberGenerator()
            var seeded: [Seeded] = []
            let allSkills = ["FIRST_AID", "CPR", "DRIVER", "COUNSELING", "FIREFIGHTING", "SEARCH_RESCUE"]
            for _ in 0..<400 {
                let p = (lat: center.lat + Double.random(in: -0.12...0.12, using: &rng),
                         lon: center.lon + Double.random(in: -0.18...0.18, using: &rng))
                let verified = Int.random(in: 0..<10, using: &rng) > 0
                let active = Int.random(in: 0..<20, using: &rng) > 0
                let expired = Int.random(in: 0..<20, using: &rng) == 0
                let available = Int.random(in: 0..<5, using: &rng) > 0
                let stale = Int.random(in: 0..<10, using: &rng) == 0
                let role = Int.random(in: 0..<8, using: &rng) == 0 ? "professional" : "volunteer"
                let skills = allSkills.filter { _ in Int.random(in: 0..<4, using: &rng) == 0 }
                let id = UUID()
                try await seedResponder(s, id: id, role: role, verified: verified, active: active, expired: expired,
                                        available: available && active, skills: skills, at: p,
                                        ageSeconds: stale ? 7_200 : Double.random(in: 0...1_500, using: &rng))
                seeded.append(Seeded(id: id, p: p, eligible: verified && active && !expired && available && !stale,
                                     skills: skills, role: role))
            }
            let preferred: Set<String> = ["FIRST_AID", "CPR", "MEDICAL_PROFESSIONAL"]
            for _ in 0..<8 {
                let at = (lat: center.lat + Double.random(in: -0.08...0.08, using: &rng),
                          lon: center.lon + Double.random(in: -0.1...0.1, using: &rng))
                let created = try await s.client.call(DispatchMethods.createSos, request: sosRequest(at, .medical), options: requester.auth)
                // The first wave that finds anyone, exactly as specified: the 15 nearest within
                // the radius, the preferred skills first, then by distance, 5 of them.
                var expected: [UUID] = []
                var wave = 0
                for (i, radius) in [2_000.0, 5_000, 10_000].enumerated() {
                    let near = seeded.filter { $0.eligible && $0.role == "volunteer" }
                        .map { (r: $0, d: Self.haversine(at, $0.p)) }.filter { $0.d <= radius }
                        .sorted { $0.d < $1.d }.prefix(15)
                        .sorted { (preferred.isDisjoint(with: $0.r.skills) ? 1 : 0, $0.d) < (preferred.isDisjoint(with: $1.r.skills) ? 1 : 0, $1.d) }
                        .prefix(5)
                    if !near.isEmpty {
                        expected = near.map(\.r.id)
                        wave = i + 1
                        break
                    }
                }
                #expect(created.offers.map { UUID(uuidString: $0.responderID)! } == expected)
                if !expected.isEmpty { #expect(Int(created.sos.wave) == wave) }
                for offer in created.offers {
                    let r = seeded.first { $0.id.uuidString.lowercased() == offer.responderID }!
                    #expect(abs(offer.distanceM - Self.haversine(at, r.p)) < 0.01)
                    #expect(offer.skillMatch == !preferred.isDisjoint(with: r.skills))
                }
            }
        }
    }

    @Test("50 concurrent accepts: exactly one wins, the others get FAILED_PRECONDITION, offers settle")
    func acceptRace() async throws {
        try await withStack(["DISPATCH_WAVE_SIZE": "50"]) { s in
            let requester = try await account(s, "user")
            let here = (lat: 40.4168, lon: -3.7038)
            let volunteers = try await withThrowingTaskGroup(of: Account.self) { group in
                for _ in 0..<50 { group.addTask { try await account(s, "volunteer") } }
                return try await group.reduce(into: [Account]()) { $0.append($1) }
            }
            for (i, v) in volunteers.enumerated() {
                try await seedResponder(s, id: v.id, at: (here.lat + Double(i) * 0.0002, here.lon))
            }
            let sos = try await s.client.call(DispatchMethods.createSos, request: sosRequest(here), options: requester.auth).sos
            let accept = Caremesh_Dispatch_V1_AcceptSosRequest.with { $0.sosID = sos.id }
            let outcomes = await withTaskGroup(of: StatusCode?.self) { group in
                for v in volunteers {
                    group.addTask { await code { _ = try await s.client.call(DispatchMethods.acceptSos, request: accept, options: v.auth) } }
                }
                return await group.reduce(into: [StatusCode?]()) { $0.append($1) }
            }
            #expect(outcomes.filter { $0 == nil }.count == 1)
            #expect(outcomes.filter { $0 == .failedPrecondition }.count == 49)
            let id = UUID(uuidString: sos.id)!
            #expect(try await s.count("SELECT count(*) FROM dispatch.sos_offers WHERE sos_id = \(id) AND response = 'ACCEPTED'") == 1)
            #expect(try await s.count("SELECT count(*) FROM dispatch.sos_offers WHERE sos_id = \(id) AND response = 'WITHDRAWN'") == 49)
            #expect(try await s.count("""
                SELECT count(*) FROM dispatch.outbox WHERE type = 'caremesh.dispatch.v1.SosAccepted'
                """) == 1)
            let got = try await s.client.call(DispatchMethods.getSos, request: .with { $0.sosID = sos.id }, options: requester.auth)
            #expect(got.sos.status == .accepted && !got.sos.acceptedBy.isEmpty)
        }
    }

    @Test("the lifecycle through the router: decline, accept, withdraw (re-offered, counted), start, resolve, feedback once")
    func lifecycle() async throws {
        try await withStack(["DISPATCH_WAVE_SIZE": "2", "DISPATCH_WAVE_RADII_M": "1000,5000"]) { s in
            let requester = try await account(s, "user")
            let stranger = try await account(s, "volunteer")
            let a = try await account(s, "volunteer"), b = try await account(s, "volunteer"), c = try await account(s, "volunteer")
            let here = (lat: 52.52, lon: 13.405)
            try await seedResponder(s, id: a.id, at: (here.lat + 0.001, here.lon))
            try await seedResponder(s, id: b.id, at: (here.lat + 0.002, here.lon))
            try await seedResponder(s, id: c.id, at: (here.lat + 0.02, here.lon))  // ~2.2 km: wave 2
            let created = try await s.client.call(DispatchMethods.createSos, request: sosRequest(here), options: requester.auth)
            #expect(created.offers.map(\.responderID) == [a.id, b.id].map { $0.uuidString.lowercased() })
            let id = created.sos.id
            let ref = Caremesh_Dispatch_V1_AcceptSosRequest.with { $0.sosID = id }

            // Strangers are refused before anything else.
            #expect(await code { _ = try await s.client.call(DispatchMethods.acceptSos, request: ref, options: stranger.auth) } == .permissionDenied)
            #expect(await code { _ = try await s.client.call(DispatchMethods.getSos, request: .with { $0.sosID = id }, options: stranger.auth) }
                == .permissionDenied)

            // Both of wave 1 decline: wave 2 goes out at once.
            for v in [a, b] {
                _ = try await s.client.call(DispatchMethods.declineSos, request: .with { $0.sosID = id }, options: v.auth)
            }
            let afterDeclines = try await s.client.call(DispatchMethods.getSos, request: .with { $0.sosID = id }, options: requester.auth)
            #expect(afterDeclines.sos.wave == 2)
            #expect(afterDeclines.offers.filter { $0.response == .pending }.map(\.responderID) == [c.id.uuidString.lowercased()])
            // A decliner cannot change their mind.
            #expect(await code { _ = try await s.client.call(DispatchMethods.acceptSos, request: ref, options: a.auth) } == .permissionDenied)

            // c accepts, then withdraws: back to pending, counted, never offered to c again.
            _ = try await s.client.call(DispatchMethods.acceptSos, request: ref, options: c.auth)
            let withdrawn = try await s.client.call(DispatchMethods.cancelSos, request: .with { $0.sosID = id; $0.reason = "car broke down" },
                                                    options: c.auth).sos
            #expect(withdrawn.status != .accepted && withdrawn.acceptedBy.isEmpty)
            #expect(try await s.count("SELECT cancellation_count::int8 FROM dispatch.responders WHERE user_id = \(c.id)") == 1)
            #expect(try await s.count("SELECT count(*) FROM dispatch.sos_cancellations WHERE volunteer_id = \(c.id)") == 1)

            // A fresh volunteer nearby takes it through to the end.
            let d = try await account(s, "volunteer")
            try await seedResponder(s, id: d.id, at: (here.lat + 0.0005, here.lon))
            _ = try await s.sql("""
                INSERT INTO dispatch.sos_offers (sos_id, responder_id, wave, distance_m) VALUES (\(UUID(uuidString: id)!), \(d.id), 3, 55)
                """)
            #expect(await code { _ = try await s.client.call(DispatchMethods.startSos, request: .with { $0.sosID = id }, options: d.auth) }
                == .permissionDenied)
            _ = try await s.client.call(DispatchMethods.acceptSos, request: ref, options: d.auth)

            // Feedback before resolution, by someone else, out of range: refused, nothing written.
            func feedback(_ rating: UInt32, _ who: Account) async -> StatusCode? {
                await code {
                    _ = try await s.client.call(DispatchMethods.submitFeedback, request: .with { $0.sosID = id; $0.rating = rating }, options: who.auth)
                }
            }
            #expect(await feedback(5, requester) == .failedPrecondition)
            #expect(await code { _ = try await s.client.call(DispatchMethods.resolveSos, request: .with { $0.sosID = id }, options: d.auth) }
                == .failedPrecondition)
            _ = try await s.client.call(DispatchMethods.startSos, request: .with { $0.sosID = id }, options: d.auth)
            let resolved = try await s.client.call(DispatchMethods.resolveSos, request: .with { $0.sosID = id }, options: d.auth).sos
            #expect(resolved.status == .resolved)
            #expect(resolved.resolvedAt.seconds >= resolved.startedAt.seconds && resolved.startedAt.seconds >= resolved.acceptedAt.seconds)
            #expect(await feedback(5, d) == .permissionDenied)
            #expect(await violations {
                _ = try await s.client.call(DispatchMethods.submitFeedback, request: .with { $0.sosID = id; $0.rating = 6 }, options: requester.auth)
            } == ["rating"])
            #expect(try await s.count("SELECT count(*) FROM dispatch.sos_feedback") == 0)
            let rated = try await s.client.call(DispatchMethods.submitFeedback, request: .with { $0.sosID = id; $0.rating = 4 }, options: requester.auth)
            #expect(rated.volunteerAverageRating == 4)
            #expect(await feedback(5, requester) == .failedPrecondition)
            #expect(try await s.count("SELECT rating_count::int8 FROM dispatch.responders WHERE user_id = \(d.id)") == 1)
            #expect(await code { _ = try await s.client.call(DispatchMethods.cancelSos, request: .with { $0.sosID = id }, options: requester.auth) }
                == .failedPrecondition)
        }
    }

    @Test("bad input is INVALID_ARGUMENT naming the fields, and nothing is written")
    func badInput() async throws {
        try await withStack { s in
            let requester = try await account(s, "user")
            let volunteer = try await account(s, "volunteer")
            var bad = sosRequest((91, 181))
            bad.emergencyType = .unspecified
            bad.priority = .init(rawValue: 42)!
            #expect(await violations { _ = try await s.client.call(DispatchMethods.createSos, request: bad, options: requester.auth) }
                == ["location.latitude", "location.longitude", "emergency_type", "priority"])
            var nan = sosRequest((.nan, 0))
            nan.description_p = String(repeating: "x", count: 2_001)
            #expect(await violations { _ = try await s.client.call(DispatchMethods.createSos, request: nan, options: requester.auth) }
                == ["location.latitude", "description"])
            var noLocation = sosRequest((0, 0))
            noLocation.clearLocation()
            #expect(await violations { _ = try await s.client.call(DispatchMethods.createSos, request: noLocation, options: requester.auth) }
                == ["location"])
            #expect(try await s.count("SELECT count(*) FROM dispatch.sos_requests") == 0)

            var far = Caremesh_Dispatch_V1_UpdateLocationRequest()
            far.location.latitude = -90.5
            far.location.longitude = 10
            far.accuracyM = -1
            #expect(await violations { _ = try await s.client.call(DispatchMethods.updateLocation, request: far, options: volunteer.auth) }
                == ["location.latitude", "accuracy_m"])
            // Only responders have a location; a requester is refused.
            var ok = far
            ok.location.latitude = 10
            ok.accuracyM = 5
            #expect(await code { _ = try await s.client.call(DispatchMethods.updateLocation, request: ok, options: requester.auth) }
                == .permissionDenied)
            #expect(try await s.count("SELECT count(*) FROM dispatch.user_locations") == 0)
            #expect(await code { _ = try await s.client.call(DispatchMethods.getSos, request: .with { $0.sosID = "nope" }, options: requester.auth) }
                == .invalidArgument)
            #expect(await code { _ = try await s.client.call(DispatchMethods.createSos, request: sosRequest((0, 0))) } == .unauthenticated)
        }
    }

    @Test("the SOS rate limit: RESOURCE_EXHAUSTED beyond it, reported to identity once per window")
    func rateLimit() async throws {
        try await withStack(["DISPATCH_SOS_RATE_LIMIT": "2", "DISPATCH_SOS_RATE_WINDOW_S": "600"]) { s in
            let requester = try await account(s, "user")
            for _ in 0..<2 {
                _ = try await s.client.call(DispatchMethods.createSos, request: sosRequest((1, 1)), options: requester.auth)
            }
            for _ in 0..<3 {
                #expect(await code { _ = try await s.client.call(DispatchMethods.createSos, request: sosRequest((1, 1)), options: requester.auth) }
                    == .resourceExhausted)
            }
            #expect(try await s.count("SELECT count(*) FROM dispatch.sos_requests") == 2)
            _ = try await TestStack.eventually {
                let n = try await s.count("""
                    SELECT count(*) FROM identity.suspicious_activities WHERE user_id = \(requester.id) AND activity_type = 'RATE_LIMIT_EXCEEDED'
                    """)
                if n == 0 { throw RPCError(.unavailable, "not yet") }
            }
            try await Task.sleep(for: .milliseconds(500))
            #expect(try await s.count("""
                SELECT count(*) FROM identity.suspicious_activities WHERE user_id = \(requester.id) AND activity_type = 'RATE_LIMIT_EXCEEDED'
                """) == 1)
        }
    }

    @Test("a wave's timer is durable: dispatch stops right after the SOS, and the next instance sends wave 2")
    func waveTimerSurvivesRestart() async throws {
        try await withStack(["DISPATCH_WAVE_SIZE": "1", "DISPATCH_WAVE_RADII_M": "1000,5000", "DISPATCH_WAVE_TIMEOUT_S": "3"],
                            separateDispatch: true) { s in
            let requester = try await account(s, "user")
            let near = UUID(), far = UUID()
            let here = (lat: 45.764, lon: 4.8357)
            let created = Mutex<Caremesh_Dispatch_V1_CreateSosResponse?>(nil)
            try await s.withDispatch {
                // (Dispatch's schema exists once an instance has migrated it.)
                try await seedResponder(s, id: near, at: (here.lat + 0.003, here.lon))
                try await seedResponder(s, id: far, at: (here.lat + 0.02, here.lon))
                let r = try await s.client.call(DispatchMethods.createSos, request: sosRequest(here), options: requester.auth)
                created.withLock { $0 = r }
            }
            let first = try #require(created.withLock { $0 })
            #expect(first.offers.map(\.responderID) == [near.uuidString.lowercased()])
            // Dispatch is down; the timer waits in its table.
            #expect(try await s.count("SELECT count(*) FROM dispatch.jobs WHERE kind = 'sos-wave' AND state = 'scheduled'") == 1)
            try await Task.sleep(for: .seconds(3))
            #expect(try await s.count("SELECT max(wave)::int8 FROM dispatch.sos_requests") == 1)
            try await s.withDispatch {
                let sos = try await TestStack.eventually(timeout: .seconds(10)) {
                    let got = try await s.client.call(DispatchMethods.getSos, request: .with { $0.sosID = first.sos.id }, options: requester.auth)
                    if got.sos.wave != 2 { throw RPCError(.unavailable, "still wave \(got.sos.wave)") }
                    return got
                }
                #expect(sos.offers.map(\.responderID) == [near, far].map { $0.uuidString.lowercased() })
                #expect(sos.offers.map(\.wave) == [1, 2])
            }
        }
    }

    @Test("after the last regular wave the SOS escalates and professionals are offered it; each responder lists their offers")
    func escalationAndOfferLists() async throws {
        try await withStack(["DISPATCH_WAVE_SIZE": "1", "DISPATCH_WAVE_RADII_M": "1000"]) { s in
            let requester = try await account(s, "user")
            let volunteer = try await account(s, "volunteer")
            let professional = try await account(s, "professional")
            let here = (lat: 59.3293, lon: 18.0686)
            try await seedResponder(s, id: volunteer.id, at: (here.lat + 0.0045, here.lon))
            try await seedResponder(s, id: professional.id, role: "professional", at: (here.lat + 0.0027, here.lon))
            // Wave 1 is for volunteers only, though the professional is nearer.
            let created = try await s.client.call(DispatchMethods.createSos, request: sosRequest(here), options: requester.auth)
            #expect(created.offers.map(\.responderID) == [volunteer.id.uuidString.lowercased()])
            #expect(created.sos.status == .pending)
            let open = Caremesh_Dispatch_V1_ListMyOffersRequest.with { $0.openOnly = true }
            let listed = try await s.client.call(DispatchMethods.listMyOffers, request: open, options: volunteer.auth).offers
            #expect(listed.map(\.sos.id) == [created.sos.id])
            #expect(listed.first?.offer.response == .pending && listed.first?.sos.location == created.sos.location)

            // The volunteer declines: the escalation wave offers the professional.
            _ = try await s.client.call(DispatchMethods.declineSos, request: .with { $0.sosID = created.sos.id }, options: volunteer.auth)
            let escalated = try await s.client.call(DispatchMethods.getSos, request: .with { $0.sosID = created.sos.id },
                                                    options: requester.auth)
            #expect(escalated.sos.status == .escalated && escalated.sos.wave == 2 && escalated.sos.hasEscalatedAt)
            #expect(escalated.offers.map(\.responderID) == [volunteer.id, professional.id].map { $0.uuidString.lowercased() })
            #expect(escalated.offers.map(\.response) == [.declined, .pending])
            #expect(try await s.count("SELECT count(*) FROM dispatch.outbox WHERE type = 'caremesh.dispatch.v1.SosEscalated'") == 1)
            // The SOS's events in seq order: each transaction's, appended together at its end,
            // keep the order they were made in; each wave names whom it offered.
            let events = try await s.sql("SELECT type, payload FROM dispatch.outbox WHERE key = \(created.sos.id) ORDER BY seq")
                .map { try $0.decode((String, ByteBuffer).self) }
            #expect(events.map(\.0) == ["SosCreated", "SosOffered", "SosEscalated", "SosStatusChanged", "SosOffered"]
                .map { "caremesh.dispatch.v1.\($0)" })
            let offered = try events.filter { $0.0 == Caremesh_Dispatch_V1_SosOffered.protoMessageName }
                .map { try Caremesh_Dispatch_V1_SosOffered(serializedBytes: Data($0.1.readableBytesView)) }
            #expect(offered.map(\.responderIds) == [[volunteer.id], [professional.id]].map { $0.map { $0.uuidString.lowercased() } })
            #expect(offered.map(\.wave) == [1, 2] && offered.map(\.escalated) == [false, true])

            // Open offers only: the volunteer has none left, the professional has this one.
            #expect(try await s.client.call(DispatchMethods.listMyOffers, request: open, options: volunteer.auth).offers.isEmpty)
            let all = try await s.client.call(DispatchMethods.listMyOffers, request: .init(), options: volunteer.auth).offers
            #expect(all.map(\.offer.response) == [.declined])
            let theirs = try await s.client.call(DispatchMethods.listMyOffers, request: open, options: professional.auth).offers
            #expect(theirs.map(\.offer.wave) == [2] && theirs.first?.sos.status == .escalated)
        }
    }

    @Test("identity revoking a verification makes the responder ineligible")
    func revocationFromIdentity() async throws {
        try await withStack { s in
            let admin = try await account(s, "admin")
            let volunteer = try await account(s, "volunteer")
            var creds = Caremesh_Identity_V1_SubmitVolunteerCredentialsRequest()
            creds.credentials.skills = [.cpr]
            _ = try await s.client.call(IdentityMethods.submitVolunteerCredentials, request: creds, options: volunteer.auth)
            _ = try await s.client.call(DispatchMethods.setAvailability, request: .with { $0.available = true }, options: volunteer.auth)
            _ = try await s.client.call(IdentityMethods.verifyUser, request: .with { $0.userID = volunteer.id.uuidString.lowercased() },
                                        options: admin.auth)
            func responder() async throws -> Caremesh_Dispatch_V1_Responder {
                try await s.client.call(DispatchMethods.getResponder, request: .init(), options: volunteer.auth).responder
            }
            _ = try await TestStack.eventually { if try await !responder().eligible { throw RPCError(.unavailable, "not yet") } }
            _ = try await s.client.call(IdentityMethods.revokeVerification, request: .with {
                $0.userID = volunteer.id.uuidString.lowercased()
                $0.reason = "certificate withdrawn"
            }, options: admin.auth)
            let revoked = try await TestStack.eventually {
                let r = try await responder()
                if r.verified { throw RPCError(.unavailable, "not yet") }
                return r
            }
            #expect(!revoked.eligible && revoked.available && revoked.active)
        }
    }

    @Test("an expired certification (identity's durable timer) and a role change make a responder ineligible")
    func expiryAndRoleChangeFromIdentity() async throws {
        try await withStack { s in
            let admin = try await account(s, "admin")
            let a = try await account(s, "volunteer"), b = try await account(s, "volunteer")
            for v in [a, b] {
                var creds = Caremesh_Identity_V1_SubmitVolunteerCredentialsRequest()
                creds.credentials.skills = [.firstAid]
                creds.credentials.certifications = [.with {
                    $0.name = "First aid"
                    $0.issuedBy = "Red Cross"
                    $0.issueDate = "2025-01-10"
                    $0.expiryDate = "2099-01-10"
                }]
                _ = try await s.client.call(IdentityMethods.submitVolunteerCredentials, request: creds, options: v.auth)
                _ = try await s.client.call(DispatchMethods.setAvailability, request: .with { $0.available = true }, options: v.auth)
                _ = try await s.client.call(IdentityMethods.verifyUser, request: .with { $0.userID = v.id.uuidString.lowercased() },
                                            options: admin.auth)
            }
            func responder(_ v: Account) async throws -> Caremesh_Dispatch_V1_Responder {
                try await s.client.call(DispatchMethods.getResponder, request: .init(), options: v.auth).responder
            }
            for v in [a, b] {
                _ = try await TestStack.eventually { if try await !responder(v).eligible { throw RPCError(.unavailable, "not yet") } }
            }

            // a's certification runs out: identity's timer (made due now) announces it.
            _ = try await s.sql("UPDATE identity.certifications SET expiry_date = current_date - 1 WHERE volunteer_id = \(a.id)")
            // (b's timer runs too and finds nothing expired.)
            _ = try await s.sql("UPDATE identity.jobs SET run_at = now() WHERE kind = 'certification-expiry' AND state = 'scheduled'")
            let expired = try await TestStack.eventually {
                let r = try await responder(a)
                if !r.credentialExpired { throw RPCError(.unavailable, "not yet") }
                return r
            }
            #expect(!expired.eligible && expired.verified && expired.available)

            // b is made a coordinator: no longer verified as a responder, nor available.
            _ = try await s.client.call(IdentityMethods.setUserRole, request: .with {
                $0.userID = b.id.uuidString.lowercased()
                $0.role = .coordinator
            }, options: admin.auth)
            let changed = try await TestStack.eventually {
                let r = try await s.client.call(DispatchMethods.getResponder, request: .with { $0.userID = b.id.uuidString }, options: admin.auth)
                    .responder
                if r.verified { throw RPCError(.unavailable, "not yet") }
                return r
            }
            #expect(!changed.eligible && !changed.available)
        }
    }
}

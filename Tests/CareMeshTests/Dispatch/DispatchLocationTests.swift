import CareMeshContracts
import CareMeshRPC
import DispatchService
import Foundation
import PostgresNIO
import Testing

/// Location fixes are written in batches (group commit): many at once must each land, and a
/// person's later fix must win over an earlier one.
extension DispatchTests {
    @Test("concurrent location updates: every fix lands, a person's later fix wins, duplicates in one batch are fine")
    func concurrentLocationUpdates() async throws {
        try await withStack { s in
            let volunteers = try await withThrowingTaskGroup(of: Account.self) { group in
                for _ in 0..<6 { group.addTask { try await account(s, "volunteer") } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            func fix(_ lat: Double, _ lon: Double, _ accuracy: Double) -> Caremesh_Dispatch_V1_UpdateLocationRequest {
                .with { $0.location.latitude = lat; $0.location.longitude = lon; $0.accuracyM = accuracy }
            }
            // Each volunteer sends 15 fixes one after another, all six at once; each answer's
            // time never goes back.
            let rounds = 15
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (n, v) in volunteers.enumerated() {
                    group.addTask {
                        var last = 0.0
                        for i in 0..<rounds {
                            let a = try await s.client.call(DispatchMethods.updateLocation,
                                                            request: fix(48 + Double(n), 2 + Double(i) / 100, Double(i)), options: v.auth)
                            let t = a.updatedAt.timeIntervalSince1970
                            #expect(t >= last)
                            last = t
                        }
                    }
                }
                try await group.waitForAll()
            }
            for (n, v) in volunteers.enumerated() {
                let row = try await s.sql("""
                    SELECT ST_Y(location::geometry), ST_X(location::geometry), accuracy_m FROM dispatch.user_locations
                    WHERE user_id = \(v.id)
                    """).first?.decode((Double, Double, Double).self)
                #expect(row?.0 == 48 + Double(n))
                #expect(row?.1 == 2 + Double(rounds - 1) / 100)
                #expect(row?.2 == Double(rounds - 1))
            }

            // One person's twenty fixes at once: several share a batch, and each call succeeds.
            let v = volunteers[0]
            let answers = try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<20 {
                    group.addTask {
                        (try? await s.client.call(DispatchMethods.updateLocation, request: fix(10, Double(i), 5), options: v.auth)) != nil
                    }
                }
                return try await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(answers.allSatisfy { $0 })
            let lon = try await s.sql("SELECT ST_X(location::geometry) FROM dispatch.user_locations WHERE user_id = \(v.id)")
                .first?.decode(Double.self)
            #expect(lon.map { (0..<20).contains(Int($0)) && $0 == $0.rounded() } == true)
            #expect(try await s.count("SELECT count(*) FROM dispatch.user_locations") == Int64(volunteers.count))
        }
    }
}

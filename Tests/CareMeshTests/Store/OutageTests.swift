import CareMeshContracts
import CareMeshRPC
import CareMeshRouter
import CareMeshStore
import CareMeshTesting
import Foundation
import DispatchService
import Synchronization
import Testing

/// PostgreSQL stopped and started under load, on a cluster of its own (the other suites share
/// the test cluster): callers get UNAVAILABLE quickly, never a hang, and the same service
/// process serves again once the server is back.
@Suite(.serialized) struct OutageTests {
    @Test("PostgreSQL stopped under load → UNAVAILABLE; started again → served, no restart", .timeLimit(.minutes(3)))
    func outageAndRecovery() async throws {
        let logger = TestDatabase.logger
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("caremesh-outage-\(UUID().uuidString)")
        let cluster = EmbeddedPostgres(directory: dir, logger: logger)
        defer { try? cluster.stop(); try? FileManager.default.removeItem(at: dir) }
        let admin = try await cluster.start()
        let urls = try cluster.serviceURLs(admin: admin)
        let router = try TestStack.startRouter()
        defer { router.stop() }
        let env = TestStack.workerEnvironment(router).merging(["DISPATCH_DATABASE_URL": urls["dispatch"]!.urlString]) { $1 }
        let host = try await DispatchService.make(environment: env, logger: logger)
        let client = TestStack.client(router, timeout: .seconds(3))
        defer { client.close() }

        let load = Load()
        try await TestStack.withHosts([host]) {
            try await TestStack.waitUntilServing(client, "dispatch")
            try await withThrowingTaskGroup(of: Void.self) { group in
                // Load: 4 callers reading events (a database query each) until told to stop.
                for _ in 0..<4 {
                    group.addTask {
                        while load.phase.withLock({ $0 }) != "done" {
                            let clock = ContinuousClock(), start = clock.now
                            do {
                                var r = Caremesh_Events_V1_PullEventsRequest()
                                r.limit = 10
                                _ = try await client.call(EventsMethods.pull, service: "dispatch", request: r)
                                load.tally.withLock { $0.ok += 1 }
                            } catch let e as RPCError where e.code == .unavailable {
                                load.tally.withLock { $0.unavailable += 1; $0.lastUnavailable = "\(load.phase.withLock { $0 }): \(e.message)" }
                            } catch {
                                load.tally.withLock { $0.other.append("\(load.phase.withLock { $0 }): \(error)") }
                            }
                            let took = clock.now - start
                            load.tally.withLock { $0.slowest = max($0.slowest, took) }
                            try await Task.sleep(for: .milliseconds(20))
                        }
                    }
                }
                try await Task.sleep(for: .seconds(1))
                let okBefore = load.tally.withLock { $0.ok }
                load.phase.withLock { $0 = "down" }
                try cluster.stop()
                try await Task.sleep(for: .seconds(3))
                let duringOutage = load.tally.withLock { ($0.ok, $0.unavailable) }
                load.phase.withLock { $0 = "restarting" }
                _ = try await cluster.start()
                // Healed: successes resume without restarting anything.
                let clock = ContinuousClock(), restarted = clock.now
                let okAtRestart = load.tally.withLock { $0.ok }
                while load.tally.withLock({ $0.ok }) < okAtRestart + 20 && clock.now - restarted < .seconds(20) {
                    try await Task.sleep(for: .milliseconds(100))
                }
                load.phase.withLock { $0 = "done" }
                try await group.waitForAll()
                let t = load.tally.withLock { $0 }
                #expect(okBefore > 10)
                #expect(duringOutage.1 > 0, "callers saw UNAVAILABLE while PostgreSQL was down")
                #expect(t.ok >= okAtRestart + 20, "served again after PostgreSQL came back; last: \(t.lastUnavailable)")
                #expect(clock.now - restarted < .seconds(20))
                #expect(t.other.isEmpty, "only UNAVAILABLE during the outage: \(t.other.prefix(3))")
                #expect(t.slowest < .seconds(3), "no call waited out its deadline: slowest \(t.slowest)")
            }
        }
    }
}

struct Tally: Sendable {
    var ok = 0, unavailable = 0, other: [String] = [], slowest: Duration = .zero
    var lastUnavailable = ""
}

final class Load: Sendable {
    let tally = Mutex(Tally())
    let phase = Mutex("before")
}

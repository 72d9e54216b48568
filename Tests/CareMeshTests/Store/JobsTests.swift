import CareMeshRPC
import CareMeshStore
import CareMeshTesting
import Foundation
import Logging
import PostgresNIO
import Synchronization
import Testing

@Suite(.serialized) struct JobsTests {
    let logger = TestDatabase.logger

    /// A migrated alerts schema with a `ticks` table for job effects.
    func prepare(_ label: String) async throws -> DatabaseURL {
        let db = try await TestDatabase.fresh(label)
        let url = db.url("alerts")
        try await Migrator(schema: "alerts", migrations: PlatformMigrations.all, logger: logger).up(url)
        try await Store.withSingleConnection(url, logger: logger) { c in
            try await c.query("CREATE TABLE ticks (n int NOT NULL, runner text NOT NULL)", logger: self.logger)
        }
        return url
    }

    func count(_ url: DatabaseURL, _ sql: String) async throws -> Int {
        try await Store.withSingleConnection(url, logger: logger) { c in
            let rows = try await c.query(PostgresQuery(unsafeSQL: sql), logger: self.logger).collect()
            return try rows[0].decode(Int.self)
        }
    }

    func schedule(_ url: DatabaseURL, _ n: Int, kind: String = "tick", runAt: Date? = nil, uniqueKey: String? = nil,
                  maxAttempts: Int = 10) async throws -> Int64? {
        try await Store.withSingleConnection(url, logger: logger) { c in
            try await Jobs.schedule(kind, payload: Data("\(n)".utf8), runAt: runAt, uniqueKey: uniqueKey,
                                    maxAttempts: maxAttempts, on: c, logger: self.logger)
        }
    }

    func tick(_ name: String) -> JobRunner.Handler {
        { job, c in
            let n = Int(String(decoding: job.payload, as: UTF8.self))!
            try await c.query("INSERT INTO ticks (n, runner) VALUES (\(n), \(name))", logger: TestDatabase.logger)
        }
    }

    @Test("due jobs run once across two instances racing for them")
    func onceAcrossInstances() async throws {
        let url = try await prepare("jobs_once")
        for n in 0..<300 { _ = try await schedule(url, n) }
        let a = try Store(url: url, logger: logger), b = try Store(url: url, logger: logger)
        let runners = [JobRunner(store: a, handlers: ["tick": tick("a")], logger: logger),
                       JobRunner(store: b, handlers: ["tick": tick("b")], logger: logger)]
        try await withRunning(a) {
            try await withRunning(b) {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for r in runners { group.addTask { while try await r.runOne() {} } }
                    try await group.waitForAll()
                }
            }
        }
        #expect(try await count(url, "SELECT count(*)::int FROM ticks") == 300)
        #expect(try await count(url, "SELECT count(DISTINCT n)::int FROM ticks") == 300)
        #expect(try await count(url, "SELECT count(*)::int FROM jobs WHERE state = 'done' AND attempts = 1") == 300)
        // Both instances took part.
        #expect(try await count(url, "SELECT count(DISTINCT runner)::int FROM ticks") == 2)
    }

    @Test("a timer survives a restart and fires once when due; a crash mid-run leaves it for another instance")
    func survivesRestartAndCrash() async throws {
        let url = try await prepare("jobs_restart")
        _ = try await schedule(url, 1, runAt: Date().addingTimeInterval(1.0))
        // An instance that stops before the timer is due does nothing.
        let early = try Store(url: url, logger: logger)
        let ranEarly = try await withRunning(early) {
            try await JobRunner(store: early, handlers: ["tick": tick("early")], logger: logger).runOne()
        }
        #expect(ranEarly == false)
        // A new instance, after the due time, runs it once.
        try await Task.sleep(for: .milliseconds(1_100))
        let later = try Store(url: url, logger: logger)
        let laterRuns = try await withRunning(later) {
            let runner = JobRunner(store: later, handlers: ["tick": tick("later")], logger: logger)
            return [try await runner.runOne(), try await runner.runOne()]
        }
        #expect(laterRuns == [true, false])
        #expect(try await count(url, "SELECT count(*)::int FROM ticks WHERE n = 1") == 1)

        // Crash: the instance's connection dies while the handler runs (as when the process is
        // killed). Its transaction, effect included, is gone; another instance runs the job.
        _ = try await schedule(url, 2)
        // A short operation limit: after the kill, postgres-nio would wait for ever on the dead
        // connection; the store gives up and answers UNAVAILABLE instead.
        let doomed = try Store(url: url, logger: logger, operationTimeout: .seconds(3))
        let started = Mutex(false)
        let crashing = JobRunner(store: doomed, handlers: ["tick": { job, c in
            try await c.query("INSERT INTO ticks (n, runner) VALUES (2, 'doomed')", logger: TestDatabase.logger)
            started.withLock { $0 = true }
            // Busy until the connection is killed under it (at most 10 s).
            for _ in 0..<200 where !c.isClosed { try await Task.sleep(for: .milliseconds(50)) }

        }], logger: logger)
        try await withRunning(doomed) {
            async let crashed: (any Error)? = { do { _ = try await crashing.runOne(); return nil } catch { return error } }()
            while !started.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
            try await Store.withSingleConnection(url, logger: logger) { c in
                try await c.query("""
                    SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                    WHERE usename = 'caremesh_alerts' AND state LIKE 'idle in transaction%'
                    """, logger: self.logger)
            }
            let failure = await crashed
            #expect((failure as? StoreError).map { if case .unavailable = $0 { true } else { false } } == true
                    || (failure as? PSQLError) != nil, "the dead instance's run fails: \(String(describing: failure))")
        }
        let survivor = try Store(url: url, logger: logger)
        let survived = try await withRunning(survivor) {
            try await JobRunner(store: survivor, handlers: ["tick": tick("survivor")], logger: logger).runOne()
        }
        #expect(survived)
        #expect(try await count(url, "SELECT count(*)::int FROM ticks WHERE n = 2") == 1)
        #expect(try await count(url, "SELECT count(*)::int FROM ticks WHERE n = 2 AND runner = 'survivor'") == 1)
    }

    @Test("failures roll back the handler's work and retry with backoff, then fail for good; unique keys dedupe")
    func retriesAndUniqueness() async throws {
        let url = try await prepare("jobs_retry")
        #expect(try await schedule(url, 7, uniqueKey: "sos-1:wave-2", maxAttempts: 3) != nil)
        #expect(try await schedule(url, 8, uniqueKey: "sos-1:wave-2", maxAttempts: 3) == nil)  // already armed
        let store = try Store(url: url, logger: logger)
        var runner = JobRunner(store: store, handlers: ["tick": { job, c in
            try await c.query("INSERT INTO ticks (n, runner) VALUES (\(job.attempt), 'flaky')", logger: TestDatabase.logger)
            throw RPCError(.unavailable, "provider down")
        }], logger: logger)
        runner.backoff = .milliseconds(100)
        try await withRunning(store) {
            let clock = ContinuousClock()
            let start = clock.now
            var runs: [ContinuousClock.Instant] = []
            while runs.count < 3 && clock.now - start < .seconds(10) {
                if try await runner.runOne() { runs.append(clock.now) } else { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(runs.count == 3)
            // Backoff doubles: ~100 ms, then ~200 ms (±20 % jitter).
            if runs.count == 3 {
                #expect(runs[1] - runs[0] >= .milliseconds(70))
                #expect(runs[2] - runs[1] >= .milliseconds(150))
            }
            #expect(try await runner.runOne() == false)
        }
        #expect(try await count(url, "SELECT count(*)::int FROM ticks") == 0)  // every attempt rolled back
        #expect(try await count(url, "SELECT count(*)::int FROM jobs WHERE state = 'failed' AND attempts = 3 AND last_error = 'UNAVAILABLE'") == 1)
        // Once failed, the key can be armed again.
        #expect(try await schedule(url, 9, uniqueKey: "sos-1:wave-2") != nil)
        let cancelled = try await Store.withSingleConnection(url, logger: logger) { c in
            try await Jobs.cancel("tick", uniqueKey: "sos-1:wave-2", on: c, logger: self.logger)
        }
        #expect(cancelled)
    }
}

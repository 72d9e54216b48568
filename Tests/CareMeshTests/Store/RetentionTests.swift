import CareMeshContracts
import CareMeshRPC
import CareMeshRouter
import CareMeshStore
import CareMeshTesting
import Foundation
import IdentityService
import Logging
import PostgresNIO
import Synchronization
import Testing
import ZMQ

@Suite(.serialized) struct RetentionTests {
    let logger = TestDatabase.logger

    func rows(_ url: DatabaseURL, _ query: PostgresQuery) async throws -> [PostgresRow] {
        try await Store.withSingleConnection(url, logger: logger) { c in try await c.query(query, logger: self.logger).collect() }
    }

    /// `Events.Pull` called in-process as `subject` with `roles` (the router sets the caller).
    func pull(_ outbox: Outbox, after: Int64, as subject: String, roles: [String], consumer: String = "") async throws {
        var caller = Caremesh_Rpc_V1_Caller()
        caller.subject = subject
        caller.roles = roles
        var r = Caremesh_Events_V1_PullEventsRequest()
        r.after = after
        r.consumer = consumer
        r.limit = 1
        _ = try await outbox.pull(r, context: RPCContext(method: EventsMethods.pull.path, requestID: 1,
                                                         deadline: monotonicNanos() + 5_000_000_000, caller: caller))
    }

    @Test("the outbox deletes old events only once every recent consumer has read them; a pull from before what it deleted is OUT_OF_RANGE, and a consumer there waits instead of skipping")
    func outboxRetention() async throws {
        let events = EventsTests()
        // This test prunes by hand: the host's own job stays off.
        try await events.withProducer("retention_outbox", environment: ["CAREMESH_EVENT_RETENTION_DAYS": "0"]) { db, host, client, consumerStore in
            let url = db.url("identity")
            let retention = PlatformRetention(retention: .seconds(14 * 86_400), batch: 100)
            @Sendable func prune() async throws -> PlatformRetention.Deleted {
                try await Store.withSingleConnection(url, logger: logger) { c in try await retention.prune(on: c, logger: self.logger) }
            }
            @Sendable func remaining() async throws -> [Int64] {
                try await rows(url, "SELECT seq FROM outbox ORDER BY seq").map { try $0.decode(Int64.self) }
            }
            @Sendable func horizon() async throws -> Int64? {
                try await rows(url, "SELECT pruned_through FROM outbox_horizon").first?.decode(Int64.self)
            }

            try await TestStack.withHosts([host]) {
                try await TestStack.waitUntilServing(client, "identity")
                #expect(try await prune() == PlatformRetention.Deleted())  // nothing at all yet
                try await host.store.withTransaction { c in
                    for i in 0..<10 { try await host.outbox.append(events.event("e\(i)"), key: "k", on: c) }
                }
                let seqs = try await events.pull(client, after: 0).map(\.seq)
                #expect(seqs.count == 10)
                #expect(try await prune().events == 0)  // all young
                _ = try await rows(url, "UPDATE outbox SET occurred_at = now() - interval '21 days' WHERE seq <= \(seqs[7])")

                // alerts (a service) has read up to seqs[4]; "gone" was last seen a month ago at 0;
                // an admin's pull does not count as a consumer's.
                // alerts reads with a second consumer too (its own cursor, its own place here).
                try await pull(host.outbox, after: seqs[4], as: "service:alerts", roles: ["service"])
                try await pull(host.outbox, after: seqs[6], as: "service:alerts", roles: ["service"], consumer: "notifications")
                let badName = await #expect(throws: RPCError.self) {
                    try await pull(host.outbox, after: 0, as: "service:alerts", roles: ["service"], consumer: "no/slash")
                }
                #expect(badName?.code == .invalidArgument && badName?.message.hasPrefix("consumer:") == true)
                try await pull(host.outbox, after: 0, as: "some-admin", roles: ["admin"])
                _ = try await rows(url, """
                    INSERT INTO event_consumers (consumer, position, seen_at) VALUES ('service:gone', 0, now() - interval '30 days')
                    """)
                let consumers = try await rows(url, "SELECT consumer, position FROM event_consumers ORDER BY consumer")
                    .map { try $0.decode((String, Int64).self) }
                #expect(consumers.map(\.0) == ["service:alerts", "service:alerts/notifications", "service:gone"])
                #expect(consumers.map(\.1) == [seqs[4], seqs[6], 0])

                // Old, and read by alerts: seqs[0...4] go. Old but unread by alerts: kept.
                #expect(try await prune().events == 5)
                #expect(try await remaining() == Array(seqs[5...]))
                #expect(try await horizon() == seqs[4])

                // From before what was deleted, over the bus: OUT_OF_RANGE naming `after`.
                for after in [0, seqs[3]] {
                    let error = await #expect(throws: RPCError.self) { _ = try await events.pull(client, after: after) }
                    #expect(error?.code == .outOfRange)
                    #expect(error?.reason == "EVENTS_PRUNED")
                    #expect(error?.message.hasPrefix("after:") == true)
                }
                #expect(try await events.pull(client, after: seqs[4]).map(\.seq) == Array(seqs[5...]))

                // A consumer at 0 waits there, logging, and never skips to what is left.
                let handled = Mutex(0)
                let consumer = EventConsumer(source: "identity", store: consumerStore, client: client, logger: logger) { _, _ in
                    handled.withLock { $0 += 1 }
                }
                try await TestStack.withServices([consumerStore, consumer]) {
                    try await Task.sleep(for: .seconds(2))
                    #expect(try await EventConsumer.cursor(source: "identity", store: consumerStore) == 0)
                }
                #expect(handled.withLock { $0 } == 0)

                // alerts reads on: the old rest goes, the two young events stay.
                try await pull(host.outbox, after: seqs[9], as: "service:alerts", roles: ["service"])
                #expect(try await prune().events == 2)  // up to the named consumer's seqs[6]
                try await pull(host.outbox, after: seqs[9], as: "service:alerts", roles: ["service"], consumer: "notifications")
                #expect(try await prune().events == 1)
                #expect(try await remaining() == Array(seqs[8...]))
                #expect(try await horizon() == seqs[7])
                #expect(try await prune().events == 0)
            }
        }
    }

    @Test("applied event ids and finished jobs past the retention go in batches; the job re-arms itself, at once while a batch was full, else in a day")
    func appliedAndJobs() async throws {
        let db = try await TestDatabase.fresh("retention_tables")
        let url = db.url("alerts")
        try await Migrator.forService("alerts", own: [], logger: logger).up(url)
        _ = try await rows(url, """
            INSERT INTO applied_events (source, event_id, seq, applied_at)
            SELECT 'identity', gen_random_uuid(), i, now() - CASE WHEN i <= 5 THEN interval '20 days' ELSE interval '1 day' END
            FROM generate_series(1, 7) i
            """)
        _ = try await rows(url, """
            INSERT INTO jobs (kind, state, run_at, finished_at, created_at) VALUES
                ('old-done', 'done', now() - interval '30 days', now() - interval '20 days', now() - interval '30 days'),
                ('old-done', 'done', now() - interval '30 days', now() - interval '19 days', now() - interval '30 days'),
                ('old-done', 'done', now() - interval '30 days', now() - interval '18 days', now() - interval '30 days'),
                ('old-failed', 'failed', now() - interval '30 days', now() - interval '17 days', now() - interval '30 days'),
                ('young-cancelled', 'cancelled', now(), now() - interval '1 day', now() - interval '2 days'),
                ('later', 'scheduled', now() + interval '1 hour', NULL, now() - interval '30 days')
            """)
        let store = try await Store.connect(url: url, logger: logger)
        let retention = PlatformRetention(retention: .seconds(14 * 86_400), batch: 2)
        try await Store.withSingleConnection(url, logger: logger) { c in
            try await PlatformRetention.arm(on: c, logger: self.logger)
            try await PlatformRetention.arm(on: c, logger: self.logger)  // at every start: still one
        }
        let runner = JobRunner(store: store, handlers: [PlatformRetention.job: { job, c in
            try await retention.run(job, c, logger: TestDatabase.logger)
        }], logger: logger)
        var runs = 0
        try await withRunning(store) {
            while try await runner.runOne() { runs += 1 }
        }
        // Runs 1 and 2 were full (2 ids, 2 jobs each); run 3 took the last old id and stopped.
        #expect(runs == 3)
        let applied = try await rows(url, "SELECT seq FROM applied_events ORDER BY seq").map { try $0.decode(Int64.self) }
        #expect(applied == [6, 7])
        let jobs = try await rows(url, "SELECT kind, state FROM jobs ORDER BY id").map { try $0.decode((String, String).self) }
        #expect(jobs.filter { $0.0 != PlatformRetention.job }.map(\.0) == ["young-cancelled", "later"])
        let next = try await rows(url, """
            SELECT extract(epoch FROM run_at - now())::float8 FROM jobs WHERE kind = \(PlatformRetention.job) AND state = 'scheduled'
            """).map { try $0.decode(Double.self) }
        #expect(next.count == 1 && next[0] > 86_000 && next[0] <= 86_400)
    }

    @Test("a service host arms the retention job when it starts, once however often it starts, and not at all with a retention of 0")
    func hostArmsTheJob() async throws {
        let db = try await TestDatabase.fresh("retention_arm")
        @Sendable func armed() async throws -> Int {
            try await rows(db.url("identity"), """
                SELECT count(*)::int FROM jobs WHERE kind = \(PlatformRetention.job) AND state = 'scheduled'
                """)[0].decode(Int.self)
        }
        _ = try await IdentityService.make(environment: db.environment.merging(["CAREMESH_EVENT_RETENTION_DAYS": "0"]) { $1 },
                                           logger: logger)
        #expect(try await armed() == 0)
        for _ in 0..<2 { _ = try await IdentityService.make(environment: db.environment, logger: logger) }
        #expect(try await armed() == 1)
    }

    @Test("CAREMESH_EVENT_RETENTION_DAYS and CAREMESH_RETENTION_BATCH: defaults, 0 keeps everything, bad values named")
    func configuration() throws {
        let defaults = try #require(try PlatformRetention(environment: [:]))
        #expect(defaults.retention == .seconds(14 * 86_400) && defaults.batch == 10_000)
        let set = try #require(try PlatformRetention(environment: ["CAREMESH_EVENT_RETENTION_DAYS": "30", "CAREMESH_RETENTION_BATCH": "500"]))
        #expect(set.retention == .seconds(30 * 86_400) && set.batch == 500)
        #expect(try PlatformRetention(environment: ["CAREMESH_EVENT_RETENTION_DAYS": "0"]) == nil)
        for (key, value) in [("CAREMESH_EVENT_RETENTION_DAYS", "-1"), ("CAREMESH_EVENT_RETENTION_DAYS", "two weeks"),
                             ("CAREMESH_RETENTION_BATCH", "0")] {
            let error = #expect(throws: RPCError.self) { _ = try PlatformRetention(environment: [key: value]) }
            #expect(error?.code == .invalidArgument && error?.message.hasPrefix(key) == true)
        }
    }
}

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

@Suite(.serialized) struct EventsTests {
    let logger = TestDatabase.logger

    func event(_ text: String) -> Caremesh_Health_V1_HealthCheckRequest {
        var m = Caremesh_Health_V1_HealthCheckRequest()
        m.service = text
        return m
    }

    /// The producer: identity, serving its outbox through `router` (`environment` added).
    func identity(_ router: Router, _ db: TestDatabase, _ environment: [String: String] = [:]) async throws -> ServiceHost {
        try await IdentityService.make(environment: db.environment.merging(TestStack.workerEnvironment(router)) { $1 }
                                           .merging(environment) { $1 },
                                       logger: logger)
    }

    /// A router; identity (the producer, with `environment` added) on a fresh database `name`;
    /// a client; and a store on that database's alerts schema, migrated, for a consumer.
    func withProducer<T>(_ name: String, environment: [String: String] = [:],
                         _ body: (TestDatabase, ServiceHost, RPCClient, Store) async throws -> T) async throws -> T {
        let router = try TestStack.startRouter()
        defer { router.stop() }
        let db = try await TestDatabase.fresh(name)
        let host = try await identity(router, db, environment)
        let client = TestStack.client(router)
        defer { client.close() }
        try await Migrator.forService("alerts", own: [], logger: logger).up(db.url("alerts"))
        let store = try await Store.connect(url: db.url("alerts"), logger: logger)
        return try await body(db, host, client, store)
    }

    func pull(_ client: RPCClient, after: Int64, limit: UInt32 = 100, waitMs: UInt32 = 0) async throws -> [Event] {
        try await pulled(client, after: after, limit: limit, waitMs: waitMs).events
    }

    func pulled(_ client: RPCClient, after: Int64, limit: UInt32 = 100, waitMs: UInt32 = 0, types: [String] = []) async throws
        -> Caremesh_Events_V1_PullEventsResponse
    {
        var r = Caremesh_Events_V1_PullEventsRequest()
        r.after = after
        r.limit = limit
        r.waitMs = waitMs
        r.types = types
        return try await client.call(EventsMethods.pull, service: "identity", request: r,
                                     options: .init(timeout: .milliseconds(Int(waitMs) + 3_000)))
    }

    @Test("Events.Pull of some types: only those, how far it looked, and a long poll that others do not end")
    func pullTypes() async throws {
        try await withProducer("pulltypes") { _, host, client, _ in
            try await TestStack.withHosts([host]) {
                try await TestStack.waitUntilServing(client, "identity")
                let wanted = [Caremesh_Health_V1_HealthCheckRequest.protoMessageName]
                let other = Caremesh_Health_V1_HealthCheckResponse.with { $0.status = .serving }
                try await host.store.withTransaction { c in
                    try await host.outbox.append(event("a"), key: "a", on: c)
                    try await host.outbox.append(other, key: "x", on: c)
                    try await host.outbox.append(event("b"), key: "b", on: c)
                    try await host.outbox.append(other, key: "y", on: c)
                }
                let all = try await pulled(client, after: 0)
                #expect(all.events.count == 4)
                let (a, b, y) = (all.events[0].seq, all.events[2].seq, all.events[3].seq)
                #expect(all.scannedThrough == y)

                let some = try await pulled(client, after: 0, types: wanted)
                #expect(some.events.map(\.seq) == [a, b])
                #expect(some.scannedThrough == y)  // past x and y, which it skipped
                let first = try await pulled(client, after: 0, limit: 1, types: wanted)
                #expect(first.events.map(\.seq) == [a] && first.scannedThrough == a)  // it looked no further
                let none = try await pulled(client, after: b, types: wanted)
                #expect(none.events.isEmpty && none.scannedThrough == y)

                // A long poll: an event of another type does not answer it, one of its types does.
                let clock = ContinuousClock()
                let started = clock.now
                async let waited = pulled(client, after: y, waitMs: 5_000, types: wanted)
                try await Task.sleep(for: .milliseconds(300))
                _ = try await host.store.withTransaction { c in try await host.outbox.append(other, key: "z", on: c) }
                try await Task.sleep(for: .milliseconds(700))
                _ = try await host.store.withTransaction { c in try await host.outbox.append(event("c"), key: "c", on: c) }
                let late = try await waited
                #expect(late.events.count == 1 && late.events[0].seq > y + 1)
                #expect(late.scannedThrough == late.events[0].seq)
                #expect(clock.now - started >= .milliseconds(950) && clock.now - started < .seconds(4))

                // Nothing of its types until wait_ms: empty, but past what came meanwhile.
                let c = late.events[0].seq
                async let idle = pulled(client, after: c, waitMs: 600, types: wanted)
                try await Task.sleep(for: .milliseconds(200))
                _ = try await host.store.withTransaction { conn in try await host.outbox.append(other, key: "w", on: conn) }
                let quiet = try await idle
                #expect(quiet.events.isEmpty && quiet.scannedThrough > c)
            }
        }
    }

    @Test("Events.Pull: in order after a cursor, a long poll woken by the commit, bad input refused")
    func pullAndLongPoll() async throws {
        let router = try TestStack.startRouter()
        defer { router.stop() }
        let db = try await TestDatabase.fresh("pull")
        let host = try await identity(router, db)
        let client = TestStack.client(router)
        defer { client.close() }
        try await TestStack.withHosts([host]) {
            try await TestStack.waitUntilServing(client, "identity")
            try await host.store.withTransaction { c in
                for i in 0..<3 { try await host.outbox.append(event("e\(i)"), key: "k", on: c) }
            }
            // Rolled back: never visible.
            try? await host.store.withTransaction { c in
                try await host.outbox.append(event("ghost"), key: "k", on: c)
                throw RPCError(.aborted, "rolled back")
            }
            let first = try await pull(client, after: 0)
            #expect(first.map { try! Caremesh_Health_V1_HealthCheckRequest(serializedBytes: $0.payload).service } == ["e0", "e1", "e2"])
            #expect(first.map(\.type) == Array(repeating: "caremesh.health.v1.HealthCheckRequest", count: 3))
            #expect(zip(first, first.dropFirst()).allSatisfy { $0.seq < $1.seq })
            #expect(try await pull(client, after: first[0].seq, limit: 1).map(\.seq) == [first[1].seq])

            // Nothing new: the poll waits, and a commit wakes it long before wait_ms.
            let clock = ContinuousClock()
            let started = clock.now
            async let waited = pull(client, after: first[2].seq, waitMs: 5_000)
            try await Task.sleep(for: .milliseconds(300))
            _ = try await host.store.withTransaction { c in try await host.outbox.append(event("late"), key: "k", on: c) }
            let late = try await waited
            #expect(late.count == 1 && late[0].seq > first[2].seq)
            #expect(clock.now - started < .seconds(2))

            // Nothing at all: answers empty after wait_ms, before the deadline.
            let quiet = clock.now
            #expect(try await pull(client, after: late[0].seq, waitMs: 400).isEmpty)
            #expect(clock.now - quiet >= .milliseconds(350))

            await #expect(throws: RPCError.self) { _ = try await pull(client, after: -1) }
            let big = await #expect(throws: RPCError.self) { _ = try await pull(client, after: 0, limit: 5_000) }
            #expect(big?.code == .invalidArgument)
        }
    }

    @Test("a failing handler is retried with backoff and never skipped: nothing behind it is applied first")
    func failingHandlerHoldsTheLine() async throws {
        try await withProducer("retry") { db, host, client, store in
            // The effects, with the transaction that made each.
            try await Store.withSingleConnection(db.url("alerts"), logger: logger) { c in
                try await c.query("""
                    CREATE TABLE held_effects (n int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL,
                                               tx xid8 NOT NULL DEFAULT pg_current_xact_id())
                    """, logger: self.logger)
            }
            let applied = AppliedLog()
            let consumer = EventConsumer(source: "identity", store: store, client: client, logger: logger) { event, c in
                let name = try Caremesh_Health_V1_HealthCheckRequest(serializedBytes: event.payload).service
                // "b" fails twice (a downstream outage), then goes through.
                if name == "b" && applied.failOnce(limit: 2) { throw RPCError(.unavailable, "downstream is down") }
                try await c.query("INSERT INTO held_effects (name) VALUES (\(name))", logger: self.logger)
                applied.append(name)
            }
            let last = try await TestStack.withHosts([host]) {
                try await TestStack.waitUntilServing(client, "identity")
                try await host.store.withTransaction { c in
                    for n in ["a", "b", "c"] { try await host.outbox.append(event(n), key: n, on: c) }
                }
                try await TestStack.withServices([store, consumer]) {
                    // Until all three are committed (the handlers' own log counts a rolled-back "a"
                    // too, so it could say three while the last batch was still open).
                    _ = try await TestStack.eventually(timeout: .seconds(20)) {
                        let committed = try await Store.withSingleConnection(db.url("alerts"), logger: self.logger) { c in
                            try await c.query("SELECT count(*) FROM held_effects", logger: self.logger).first(Int64.self) ?? 0
                        }
                        if committed < 3 { throw RPCError(.unavailable, "not yet") }
                    }
                }
                return try await pull(client, after: 0).last?.seq
            }
            // Committed once each, in order. The first pull brings all three: their batch fails at
            // "b" (failure 1), then "a" is committed alone and "b" fails alone (failure 2); after
            // the backoff "b" and "c" go through in one batch.
            let effects = try await Store.withSingleConnection(db.url("alerts"), logger: logger) { c in
                try await c.query("SELECT name, tx::text FROM held_effects ORDER BY n", logger: self.logger).collect()
                    .map { try $0.decode((String, String).self) }
            }
            #expect(effects.map(\.0) == ["a", "b", "c"])
            #expect(effects.count == 3 && effects[0].1 != effects[1].1 && effects[1].1 == effects[2].1)
            #expect(applied.failures == 2)
            // Handlers of a rolled-back batch ran, but their effects did not stay.
            #expect(applied.names.filter { $0 == "a" }.count == 2)
            let cursor = try await Store.withSingleConnection(db.url("alerts"), logger: logger) { c in
                try await c.query("SELECT position FROM event_cursors WHERE source = 'identity'", logger: logger).first(Int64.self)
            }
            #expect(cursor == last)
        }
    }

    @Test("a consumer of some types: the others only move its cursor (no handler call, no applied_events row)")
    func typeFilter() async throws {
        try await withProducer("types") { db, host, client, store in
            let applied = AppliedLog()
            let wanted = Caremesh_Health_V1_HealthCheckRequest.protoMessageName
            let consumer = {
                var c = EventConsumer(source: "identity", types: [wanted], store: store, client: client, logger: logger) { event, _ in
                    applied.append(try Caremesh_Health_V1_HealthCheckRequest(serializedBytes: event.payload).service)
                }
                c.waitMs = 300  // a pull that finds only other types answers after this
                return c
            }()
            let other = Caremesh_Health_V1_HealthCheckResponse.with { $0.status = .serving }
            let (last, later) = try await TestStack.withHosts([host]) {
                try await TestStack.waitUntilServing(client, "identity")
                try await host.store.withTransaction { c in
                    try await host.outbox.append(event("a"), key: "a", on: c)
                    try await host.outbox.append(other, key: "x", on: c)
                    try await host.outbox.append(event("b"), key: "b", on: c)
                    try await host.outbox.append(other, key: "y", on: c)
                }
                let last = try #require(try await pull(client, after: 0).last?.seq)
                return try await TestStack.withServices([store, consumer]) {
                    func reached(_ seq: Int64) async throws {
                        _ = try await TestStack.eventually(timeout: .seconds(20)) {
                            if try await EventConsumer.cursor(source: "identity", store: store) < seq { throw RPCError(.unavailable, "not yet") }
                        }
                    }
                    try await reached(last)
                    #expect(try await EventConsumer.cursor(source: "identity", store: store) == last)
                    // Then only events of other types: the cursor still moves past them.
                    try await host.store.withTransaction { c in
                        try await host.outbox.append(other, key: "v", on: c)
                        try await host.outbox.append(other, key: "w", on: c)
                    }
                    let later = try #require(try await pull(client, after: last).last?.seq)
                    try await reached(later)
                    return (last, later)
                }
            }
            #expect(applied.names == ["a", "b"])
            let (rows, cursor) = try await Store.withSingleConnection(db.url("alerts"), logger: logger) { c in
                (try await c.query("SELECT count(*) FROM applied_events", logger: self.logger).first(Int64.self),
                 try await c.query("SELECT position FROM event_cursors WHERE source = 'identity'", logger: self.logger).first(Int64.self))
            }
            #expect(rows == 2)
            #expect(cursor == later && later > last)
        }
    }

    @Test("10k events to a consumer killed and restarted at random: each applied once, in order per key", .timeLimit(.minutes(4)))
    func exchangeUnderKills() async throws {
        let router = try TestStack.startRouter()
        defer { router.stop() }
        let db = try await TestDatabase.fresh("exchange")
        let host = try await identity(router, db)
        let consumerEnv = db.environment.merging(["CAREMESH_LOG_LEVEL": "error"]) { $1 }
        let args = ["events-probe", "--source", "identity", "--schema", "dispatch", "--router", router.boundEndpoints.client]
        let caremesh = TestStack.binaries.appendingPathComponent("caremesh")
        let total = 10_000, keys = 40
        let consumer = ProcessSlot(try TestStack.spawn(caremesh, args, environment: consumerEnv))
        defer { if let p = consumer.replace(with: nil), p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        try await TestStack.withHosts([host]) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    var written = 0
                    while written < total {
                        let n = min(total - written, Int.random(in: 1...25))
                        let range = written..<(written + n)
                        try await host.store.withTransaction { c in
                            for i in range {
                                try await host.outbox.append(event("\(i)"), key: "key-\(i % keys)", on: c)
                            }
                        }
                        written += n
                    }
                }
                group.addTask {
                    for _ in 0..<8 {
                        try await Task.sleep(for: .milliseconds(Int.random(in: 300...1_200)))
                        consumer.killAndReplace(with: try TestStack.spawn(caremesh, args, environment: consumerEnv))
                    }
                }
                try await group.waitForAll()
            }
            // Let the last consumer catch up.
            let last = try await host.store.query("SELECT max(seq) FROM outbox").first!.decode(Int64.self)
            var caughtUp = false
            for _ in 0..<600 {
                let rows = try? await Store.withSingleConnection(db.url("dispatch"), logger: logger) { c in
                    try await c.query("SELECT coalesce(max(position), 0) FROM event_cursors WHERE source = 'identity'",
                                      logger: self.logger).collect()
                }
                if let position = try rows?.first?.decode(Int64.self), position >= last { caughtUp = true; break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(caughtUp)
        }
        #expect(consumer.kills >= 8)
        let (count, distinct, outOfOrder, globalOutOfOrder) = try await Store.withSingleConnection(db.url("dispatch"), logger: logger) { c in
            let rows = try await c.query("""
                SELECT count(*)::int, count(DISTINCT event_id)::int,
                       (SELECT count(*)::int FROM (SELECT seq, lag(seq) OVER (PARTITION BY key ORDER BY n) AS prev FROM probe_effects) x WHERE prev > seq),
                       (SELECT count(*)::int FROM (SELECT seq, lag(seq) OVER (ORDER BY n) AS prev FROM probe_effects) y WHERE prev > seq)
                FROM probe_effects
                """, logger: self.logger).collect()
            return try rows[0].decode((Int, Int, Int, Int).self)
        }
        #expect(count == total)
        #expect(distinct == total)
        #expect(outOfOrder == 0)
        #expect(globalOutOfOrder == 0)
    }
}

/// The consumer process of the moment, swapped from the killer task.
final class ProcessSlot: @unchecked Sendable {
    private let lock = NSLock()
    private var process: Process?
    private var killed = 0

    init(_ p: Process) { process = p }

    var kills: Int { lock.withLock { killed } }

    func replace(with p: Process?) -> Process? {
        lock.withLock { defer { process = p }; return process }
    }

    /// SIGKILL the current one (no chance to finish anything), then run `fresh`.
    func killAndReplace(with fresh: Process) {
        if let old = replace(with: nil) {
            kill(old.processIdentifier, SIGKILL)
            old.waitUntilExit()
            lock.withLock { killed += 1 }
        }
        _ = replace(with: fresh)
    }
}

/// What a consumer's handler did, in order (shared with its @Sendable closure).
final class AppliedLog: Sendable {
    private let state = Mutex<(names: [String], failures: Int)>(([], 0))
    var names: [String] { state.withLock { $0.names } }
    var failures: Int { state.withLock { $0.failures } }
    func append(_ name: String) { state.withLock { $0.names.append(name) } }
    /// True (and counted) while fewer than `limit` failures were made.
    func failOnce(limit: Int) -> Bool {
        state.withLock { s in
            guard s.failures < limit else { return false }
            s.failures += 1
            return true
        }
    }
}

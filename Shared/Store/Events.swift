import CareMeshContracts
import CareMeshRPC
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import SwiftProtobuf
import Synchronization
import ZMQ

public typealias Event = Caremesh_Events_V1_Event

/// A schema's outbox: where its events are written (in the caller's transaction) and read
/// from (`Events.Pull`, a long poll woken by `NOTIFY`).
///
/// Ordering: `append` takes a transaction-scoped advisory lock before it draws `seq`, so
/// emitting transactions hold seq order until they commit: seq order is commit order, and a
/// reader that saw N never later finds a committed event below N. The lock is held only from
/// the outbox insert to commit: append events last in a transaction (several at once through
/// `PendingEvents`, one statement).
public final class Outbox: Service, Sendable {
    public let schema: String
    public let store: Store
    let changes = ChangeSignal()
    public var channel: String { Self.channel(schema) }

    public init(schema: String, store: Store) {
        self.schema = schema
        self.store = store
    }

    /// Appends `message` as an event about `key`, on `connection`, which must be inside the
    /// transaction that makes the change. Returns the event's id.
    @discardableResult
    public func append(_ message: some SwiftProtobuf.Message, key: String, on connection: PostgresConnection) async throws -> UUID {
        try await Self.append(message, key: key, schema: schema, on: connection, logger: store.logger)
    }

    /// Appends `events` in their order, in one statement: a transaction that emits several
    /// collects them and appends them last, just before it commits.
    public func append(_ events: PendingEvents, on connection: PostgresConnection) async throws {
        try await Self.append(events, schema: schema, on: connection, logger: store.logger)
    }

    /// `append` for code that has a connection to the schema but no running service (the CLI).
    @discardableResult
    public static func append(_ message: some SwiftProtobuf.Message, key: String, schema: String, on connection: PostgresConnection,
                              logger: Logger) async throws -> UUID {
        var events = PendingEvents()
        let id = try events.add(message, key: key)
        try await append(events, schema: schema, on: connection, logger: logger)
        return id
    }

    /// The one place events are written: the ordering lock, the rows (their `seq` drawn in
    /// order, after the lock) and the NOTIFY (delivered at commit), in one round trip.
    static func append(_ events: PendingEvents, schema: String, on connection: PostgresConnection, logger: Logger) async throws {
        guard !events.isEmpty else { return }
        if let held = HeldEvents.current, held.hold(events, schema: schema, on: connection) { return }
        try await connection.run(Prepared<AppendEvents>(advisoryLockKey("caremesh.outbox.\(schema)"), events.ids, events.types,
                                                        events.keys, events.payloads, channel(schema)), logger: logger)
    }

    enum AppendEvents: PreparedSQL {
        static let sql = """
            WITH ordering AS (SELECT pg_advisory_xact_lock($1)),
            written AS (
                INSERT INTO outbox (event_id, type, key, payload)
                SELECT e.id, e.type, e.key, e.payload
                FROM ordering, unnest($2, $3, $4, $5) WITH ORDINALITY AS e(id, type, key, payload, n)
                ORDER BY e.n
                RETURNING 1)
            SELECT pg_notify($6, '') FROM (SELECT 1 FROM written LIMIT 1) AS any_written
            """
        static let types: [PostgresDataType] = [.int8, .uuidArray, .textArray, .textArray, .byteaArray, .text]
    }

    static func channel(_ schema: String) -> String { "caremesh_outbox_\(schema)" }

    /// `read`'s statement: `$1` after, `$2` limit, `$3` the types wanted (empty: all); with the
    /// outbox's last `seq`, which, read in the same snapshot, is how far a pull that found
    /// fewer than `$2` looked. (Every `seq` up to a committed one is settled: the ordering lock
    /// is held until an append commits.) Prepared: every consumer's pull runs it (planning it
    /// each time cost PostgreSQL more than running it, under `bench alerts`).
    enum ReadEvents: PreparedSQL {
        static let sql = """
            SELECT h.pruned_through, t.head, e.seq, e.event_id, e.type, e.key, e.payload, e.occurred_at
            FROM (SELECT coalesce(max(pruned_through), 0) AS pruned_through FROM outbox_horizon) h
            CROSS JOIN (SELECT coalesce(max(seq), 0) AS head FROM outbox) t
            LEFT JOIN LATERAL (
                SELECT seq, event_id, type, key, payload, occurred_at FROM outbox
                WHERE seq > $1 AND (cardinality($3::text[]) = 0 OR type = ANY($3::text[]))
                ORDER BY seq LIMIT $2) e ON true
            ORDER BY e.seq
            """
        static let types: [PostgresDataType] = [.int8, .int8, .textArray]
    }

    /// Events after `after`, at most `limit`, only of `types` if any are given; and the last
    /// `seq` looked at: the last event's if `limit` were found, else the outbox's last (which
    /// may be `after` or less, when nothing is newer).
    /// Fails `OUT_OF_RANGE` (field `after`) when the retention deleted events after `after`
    /// (see `PlatformRetention`): the caller missed them. The horizon and the events are read
    /// in one statement, so from one snapshot: a prune committing meanwhile cannot make events
    /// disappear unannounced.
    public func read(after: Int64, limit: Int, types: [String] = []) async throws -> (events: [Event], scannedThrough: Int64) {
        try await store.withConnection { c in
            let rows = try await c.run(Prepared<ReadEvents>(after, Int64(limit), types), logger: self.store.logger)
            var out: [Event] = []
            var head: Int64 = 0
            for row in rows {
                let (horizon, last, seq, id, type, key, payload, at) = try row.decode(
                    (Int64, Int64, Int64?, UUID?, String?, String?, ByteBuffer?, Date?).self)
                if after < horizon { throw Self.pruned(after: after, horizon: horizon) }
                head = last
                guard let seq, let id, let type, let key, let payload, let at else { continue }
                var e = Event()
                e.seq = seq
                e.id = id.uuidString.lowercased()
                e.type = type
                e.key = key
                e.payload = Data(payload.readableBytesView)
                e.occurredAtUs = Int64((at.timeIntervalSince1970 * 1_000_000).rounded())
                out.append(e)
            }
            return (out, out.count == limit ? out[limit - 1].seq : head)
        }
    }

    /// The `ErrorInfo.reason` of a pull from before the retention's horizon.
    public static let prunedReason = "EVENTS_PRUNED"

    /// `OUT_OF_RANGE`, naming `after`, for a pull from before the retention's horizon (given as
    /// the `horizon` metadata of its `ErrorInfo`, for a consumer that may skip to it).
    static func pruned(after: Int64, horizon: Int64) -> RPCError {
        let why = """
            events up to seq \(horizon) were deleted by the retention before this consumer read them; \
            re-sync it from the source, then move its cursor to \(horizon) or later
            """
        return RPCError(.outOfRange, "after: \(why)",
                        details: [RPCError.fieldDetail("after", why),
                                  RPCError.detail(reason: prunedReason, domain: "events", metadata: ["horizon": "\(horizon)"])])
    }

    /// Records how far a calling service has read (`after`: it applied everything up to it),
    /// which holds the retention back (see `PlatformRetention`). Written only when it moved or
    /// a minute passed, so idle long polls do not write each time. Its commit does not wait for
    /// the WAL flush (`synchronous_commit` off for this one statement): a position lost in a
    /// crash only holds the retention back until the next pull, and the pull that delivers the
    /// next events does not wait on a disk flush first.
    func recordConsumer(_ consumer: String, position: Int64) async throws {
        try await store.withConnection { c in
            _ = try await c.run(Prepared<RecordConsumer>(consumer, position), logger: self.store.logger)
        }
    }

    enum RecordConsumer: PreparedSQL {
        static let sql = """
            INSERT INTO event_consumers (consumer, position)
            SELECT $1, $2 FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed
            ON CONFLICT (consumer) DO UPDATE SET position = EXCLUDED.position, seen_at = now()
            WHERE event_consumers.position <> EXCLUDED.position OR event_consumers.seen_at < now() - interval '1 minute'
            """
        static let types: [PostgresDataType] = [.text, .int8]
    }

    /// `Events.Pull`: answers at once when something is newer than `after`; else waits (up to
    /// `wait_ms`, and never past the call's deadline) for a commit to announce one. A calling
    /// service's position is recorded for the retention.
    public func pull(_ request: Caremesh_Events_V1_PullEventsRequest, context: RPCContext) async throws -> Caremesh_Events_V1_PullEventsResponse {
        guard request.after >= 0 else { throw RPCError.invalidArgument(field: "after", "must be 0 or a seq from an earlier pull") }
        let limit = request.limit == 0 ? 100 : Int(request.limit)
        guard limit <= 1_000 else { throw RPCError.invalidArgument(field: "limit", "at most 1000") }
        guard request.consumer.count <= 40, request.consumer.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
        else { throw RPCError.invalidArgument(field: "consumer", "letters, digits, '-' and '_', at most 40") }
        if let caller = context.caller, caller.roles.contains("service"), !caller.subject.isEmpty {
            try await recordConsumer(request.consumer.isEmpty ? caller.subject : "\(caller.subject)/\(request.consumer)", position: request.after)
        }
        // Leave time for the answer to travel back before the caller's deadline.
        let waitEnd = min(monotonicNanos() + UInt64(request.waitMs) * 1_000_000, context.answerBy)
        var response = Caremesh_Events_V1_PullEventsResponse()
        var after = request.after
        while true {
            let seen = changes.generation
            (response.events, response.scannedThrough) = try await read(after: after, limit: limit, types: request.types)
            let now = monotonicNanos()
            if !response.events.isEmpty || now >= waitEnd || Task.isCancelled { return response }
            // Only events of other types came: wait on from there (the answer still says how
            // far this pull looked, so the consumer's cursor moves past them).
            after = max(after, response.scannedThrough)
            await changes.wait(after: seen, timeout: .nanoseconds(Int64(waitEnd - now)))
            // Cancelled (the worker drains): answer with what this pull has, at once.
            if Task.isCancelled { return response }
        }
    }

    /// Serves `Events.Pull`. Events name people and what happened to them, so only other
    /// services and admins may read them. A call with no caller at all comes through a router
    /// whose authentication was turned off (`CAREMESH_ROUTER_AUTH=disabled`, bus-only setups):
    /// nothing is authenticated there, and pulls are served.
    public func register(in handlers: inout RPCHandlers) {
        handlers.register(EventsMethods.pull) { request, context in
            if context.caller != nil { _ = try context.requireRole(Self.readers) }
            return try await self.pull(request, context: context)
        }
    }

    /// The roles that may pull events.
    public static let readers: Set<String> = ["service", "admin"]

    /// Listens for the outbox's NOTIFY on a connection of its own and wakes waiting pulls;
    /// reconnects after a failure (waking everyone, who then read again).
    public func run() async throws {
        let logger = store.logger
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await Store.withSingleConnection(self.store.url, timeout: .seconds(2), logger: logger) { c in
                        try await c.listen(on: self.channel) { notifications in
                            self.changes.fire()  // anything committed while not listening
                            for try await _ in notifications { self.changes.fire() }
                        }
                    }
                } catch {
                    if Task.isCancelled { break }
                    self.changes.fire()
                    try? await Task.sleep(for: .milliseconds(500))
                }
            }
        }
    }
}

/// Events appended while a transaction does several things, written together at its end.
///
/// The outbox's ordering lock is held from an append to the commit, so a transaction that
/// appends early and then goes on working makes every other emitting transaction of the schema
/// wait that long. An event consumer applies a batch of events in one transaction, each
/// handler appending its own events: held, they are appended once, last (measured: with each
/// handler appending as it went, alerts' `RaiseCareAlert` waited on the lock 4.3 ms on average
/// and up to 134 ms while messaging's call statuses were applied).
///
/// ```swift
/// let held = try await HeldEvents.holding(on: c) { for e in batch { try await handler(e, c) } }
/// try await moveCursor(on: c)
/// try await held.append(on: c, logger: logger)  // last, just before the commit
/// ```
public final class HeldEvents: Sendable {
    @TaskLocal static var current: HeldEvents?

    private let connection: ObjectIdentifier
    /// Per schema, in the order each first appended.
    private let held = Mutex<[(schema: String, events: PendingEvents)]>([])

    private init(_ connection: PostgresConnection) { self.connection = ObjectIdentifier(connection) }

    /// Runs `body`; what it (and whatever it calls, in this task) appends on `connection` is
    /// held, in order, instead of written. Appends on other connections are written as usual.
    public static func holding(on connection: PostgresConnection, _ body: () async throws -> Void) async throws -> HeldEvents {
        let held = HeldEvents(connection)
        try await $current.withValue(held) { try await body() }
        return held
    }

    /// Whether anything is held.
    public var isEmpty: Bool { held.withLock { $0.allSatisfy { $0.events.isEmpty } } }

    /// Appends what was held, one statement per schema, in order.
    public func append(on connection: PostgresConnection, logger: Logger) async throws {
        let all = held.withLock { h in defer { h = [] }; return h }
        for (schema, events) in all { try await Outbox.append(events, schema: schema, on: connection, logger: logger) }
    }

    /// Keeps `events` if they are appended on the held connection.
    fileprivate func hold(_ events: PendingEvents, schema: String, on c: PostgresConnection) -> Bool {
        guard ObjectIdentifier(c) == connection else { return false }
        held.withLock { h in
            if let i = h.firstIndex(where: { $0.schema == schema }) { h[i].events.append(contentsOf: events) } else { h.append((schema, events)) }
        }
        return true
    }
}

/// Events a transaction will emit, in order, to be appended together at its end.
public struct PendingEvents: Sendable {
    fileprivate var ids: [UUID] = []
    fileprivate var types: [String] = []
    fileprivate var keys: [String] = []
    fileprivate var payloads: [ByteBuffer] = []

    public init() {}

    public var isEmpty: Bool { ids.isEmpty }

    /// Adds `message` as an event about `key`; returns the event's id.
    @discardableResult
    public mutating func add(_ message: some SwiftProtobuf.Message, key: String) throws -> UUID {
        // Time-ordered: the outbox's and consumers' indexes on event ids grow at their right edge.
        let id = UUID.timeOrdered()
        let payload: [UInt8] = try message.serializedBytes()
        ids.append(id)
        types.append(type(of: message).protoMessageName)
        keys.append(key)
        payloads.append(ByteBuffer(bytes: payload))
        return id
    }

    /// Adds `other`'s events after these.
    public mutating func append(contentsOf other: PendingEvents) {
        ids += other.ids
        types += other.types
        keys += other.keys
        payloads += other.payloads
    }
}

/// A generation counter that tasks can wait on: `fire()` wakes every waiter.
public final class ChangeSignal: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var nextID: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    }
    private let state = Mutex(State())

    public init() {}

    public var generation: UInt64 { state.withLock { $0.generation } }

    public func fire() {
        let waiters = state.withLock { s in
            s.generation &+= 1
            defer { s.waiters.removeAll() }
            return Array(s.waiters.values)
        }
        for w in waiters { w.resume() }
    }

    /// Returns once the generation differs from `seen`, or after `timeout`, or on cancellation.
    public func wait(after seen: UInt64, timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.next(after: seen) }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    private func next(after seen: UInt64) async {
        let id = state.withLock { s in defer { s.nextID += 1 }; return s.nextID }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    // Checked under the lock: a cancel that ran before we registered is seen here.
                    if s.generation != seen || Task.isCancelled { return true }
                    s.waiters[id] = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}

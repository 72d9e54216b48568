import CareMeshContracts
import CareMeshRPC
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

/// Applies another service's events to this service's schema, exactly once and in order.
///
/// It long-polls `Events.Pull` on `source` through the router from its cursor, and applies
/// each pulled batch in one transaction that also records the events' ids (`applied_events`)
/// and moves the cursor (`event_cursors`): a crash before commit leaves neither effect nor
/// record, and the batch is pulled again; a duplicate delivery finds its id recorded and only
/// moves the cursor. Events are applied in `seq` order, so events with the same key keep their
/// order. One commit per batch, not per event, is what lets a consumer keep up with a busy
/// source (a commit waits for its WAL flush).
///
/// When a batch fails, its events are applied again one per transaction, so those before the
/// failing event are committed and only it holds the line: it is retried with backoff (1 s
/// doubling to 30 s), never skipped. An event is never lost, and nothing behind it overtakes
/// it. A handler's database effects happen exactly once; anything else it does may be repeated
/// (a failed batch, like a crash, runs its handlers again).
///
/// A consumer that fell behind the source's retention (see `PlatformRetention`) is refused
/// `OUT_OF_RANGE`: it logs an error and keeps asking, and never skips what it missed.
public struct EventConsumer: Service {
    public typealias Handler = @Sendable (Event, PostgresConnection) async throws -> Void

    public let source: String
    /// Names this consumer among the service's consumers of `source` (nil: the only one).
    public let name: String?
    /// The key of its cursor and of its records of applied events: `source`, or `source/name`.
    public let cursorKey: String
    public let store: Store
    public let client: RPCClient
    public let handler: Handler
    public var batch: UInt32 = 100
    public var waitMs: UInt32 = 5_000
    /// The event types (protobuf full names) the handler acts on; nil for all. Others only
    /// move the cursor: no handler call, no `applied_events` row.
    public let types: Set<String>?
    /// `types` as the source's pull is asked for them (empty: all).
    let wanted: [String]
    let logger: Logger
    /// Called once a transaction that applied events has committed: the place to wake a worker
    /// that acts on what the handler wrote (a wake-up before the commit finds nothing to do).
    let committed: @Sendable () -> Void

    /// `name` gives a second consumer of one source its own cursor (and its own place in the
    /// source's retention): e.g. one that waits for a provider and one that must always run.
    public init(source: String, name: String? = nil, types: Set<String>? = nil, store: Store, client: RPCClient, logger: Logger,
                committed: @escaping @Sendable () -> Void = {}, handler: @escaping Handler) {
        self.committed = committed
        self.source = source
        self.name = name
        self.cursorKey = name.map { "\(source)/\($0)" } ?? source
        self.types = types
        self.wanted = types.map { $0.sorted() } ?? []
        self.store = store
        self.client = client
        self.logger = logger
        self.handler = handler
    }

    /// Where the consumer keyed `source` (its `cursorKey`) is in its source's outbox.
    public static func cursor(source: String, store: Store) async throws -> Int64 {
        let rows = try await store.query("SELECT position FROM event_cursors WHERE source = \(source)")
        return try rows.first?.decode(Int64.self) ?? 0
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var failures = 0
            while !Task.isCancelled {
                do {
                    let after = try await Self.cursor(source: cursorKey, store: store)
                    var request = Caremesh_Events_V1_PullEventsRequest()
                    request.after = after
                    request.consumer = name ?? ""
                    request.limit = batch
                    request.waitMs = waitMs
                    request.types = wanted
                    let response = try await client.call(EventsMethods.pull, service: source, request: request,
                                                         options: CallOptions(timeout: .milliseconds(Int(waitMs) + 5_000)))
                    try await apply(response.events.filter { $0.seq > after }, through: response.scannedThrough, after: after)
                    failures = 0
                } catch {
                    if Task.isCancelled { break }
                    failures += 1
                    let wait = min(30_000, 1_000 << min(failures - 1, 5))
                    let metadata: Logger.Metadata = [
                        "source": "\(source)", "attempt": "\(failures)", "retry.ms": "\(wait)",
                        "error.kind": "\(RPCError.loggableKind(of: error))",
                    ]
                    let rpc = error as? RPCError
                    if rpc?.reason == Outbox.prunedReason {
                        // It cannot catch up by itself, and must not skip: someone has to act.
                        logger.error("event consumer is behind the source's retention: events it never read were deleted; re-sync and move its cursor (event_cursors)",
                                     metadata: metadata)
                    } else if let code = rpc?.code, code == .unauthenticated || code == .permissionDenied {
                        // Configuration, not a passing fault: say which setting.
                        logger.error("event consumer was refused by the router or the source (\(code.name)): set \(secretVariable) to the secret identity holds for this service",
                                     metadata: metadata)
                    } else {
                        logger.warning("event consumer failed; retrying", metadata: metadata)
                    }
                    try? await Task.sleep(for: .milliseconds(wait))
                }
            }
        }
    }

    /// The variable this service's own sign-in comes from (`<SERVICE>_SERVICE_SECRET`).
    var secretVariable: String {
        client.configuration.credentials.map { ServiceCredentials.variable(for: $0.service) } ?? "<SERVICE>_SERVICE_SECRET"
    }

    /// `events` (in `seq` order) in one transaction, the cursor moved to `through` if that is
    /// further (the source skipped events of other types up to it; see `types`); if that
    /// fails, one per transaction up to the failing one, whose error is thrown.
    func apply(_ events: [Event], through: Int64 = 0, after: Int64 = 0) async throws {
        if events.count > 1 {
            do {
                return try await applyTogether(events, through: through)
            } catch where !Task.isCancelled {
                logger.debug("event batch failed; applying its events one at a time", metadata: [
                    "source": "\(source)", "error.kind": "\(RPCError.loggableKind(of: error))"])
            }
        }
        // No event (only others' types came): the cursor alone, if it moves.
        if events.isEmpty {
            if through > after { try await applyTogether([], through: through) }
            return
        }
        // One event per transaction, the last moving the cursor to `through`.
        for (i, event) in events.enumerated() {
            try await applyTogether([event], through: i == events.count - 1 ? through : 0)
        }
    }

    /// One transaction: dedup records, the effects of the events not yet applied, the cursor
    /// moved to the last (or to `through`, if further).
    func applyTogether(_ pulled: [Event], through: Int64 = 0) async throws {
        let last = max(pulled.map(\.seq).max() ?? 0, through)
        let events = types.map { types in pulled.filter { types.contains($0.type) } } ?? pulled
        let ids = try events.map { event in
            guard let id = UUID(uuidString: event.id) else {
                throw RPCError(.internal, "event \(event.seq) from \(self.source) has no valid id")
            }
            return id
        }
        let seqs = events.map(\.seq)
        let source = self.cursorKey, handler = self.handler, logger = self.logger
        try await store.withTransaction { c in
            var fresh = Set<UUID>()
            if !ids.isEmpty {
                for try await id in try await c.query("""
                    INSERT INTO applied_events (source, event_id, seq)
                    SELECT \(source), id, seq FROM unnest(\(ids)::uuid[], \(seqs)::int8[]) AS u(id, seq)
                    ON CONFLICT DO NOTHING RETURNING event_id
                    """, logger: logger).decode(UUID.self) { fresh.insert(id) }
            }
            // `remove`: an id repeated within the batch is applied once. The events the
            // handlers emit are appended last, so the outbox's ordering lock is held only
            // for the commit, not while the rest of the batch is applied.
            let emitted = try await HeldEvents.holding(on: c) {
                for (event, id) in zip(events, ids) where fresh.remove(id) != nil {
                    try await handler(event, c)
                }
            }
            try await c.query("""
                INSERT INTO event_cursors (source, position) VALUES (\(source), \(last))
                ON CONFLICT (source) DO UPDATE SET position = EXCLUDED.position, updated_at = now()
                WHERE event_cursors.position < EXCLUDED.position
                """, logger: logger)
            try await emitted.append(on: c, logger: logger)
        }
        if !events.isEmpty { committed() }
    }
}

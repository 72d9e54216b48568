import CareMeshContracts
import CareMeshRPC
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

/// Applies another service's events to this service's schema, exactly once and in order.
///
/// It long-polls `Events.Pull` on `source` through the router from its cursor, and applies
/// each event in its own transaction that also records the event id (`applied_events`) and
/// moves the cursor (`event_cursors`): a crash before commit leaves neither effect nor
/// record, and the event is pulled again; a duplicate delivery finds its id recorded and only
/// moves the cursor. Events are applied one at a time in `seq` order, so events with the same
/// key keep their order. A failing handler is retried with backoff (1 s doubling to 30 s),
/// never skipped: an event is never lost, and nothing behind it overtakes it.
public struct EventConsumer: Service {
    public typealias Handler = @Sendable (Event, PostgresConnection) async throws -> Void

    public let source: String
    public let store: Store
    public let client: RPCClient
    public let handler: Handler
    public var batch: UInt32 = 100
    public var waitMs: UInt32 = 5_000
    let logger: Logger

    public init(source: String, store: Store, client: RPCClient, logger: Logger, handler: @escaping Handler) {
        self.source = source
        self.store = store
        self.client = client
        self.logger = logger
        self.handler = handler
    }

    /// Where this consumer is in `source`'s outbox.
    public static func cursor(source: String, store: Store) async throws -> Int64 {
        let rows = try await store.query("SELECT position FROM event_cursors WHERE source = \(source)")
        return try rows.first?.decode(Int64.self) ?? 0
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var failures = 0
            while !Task.isCancelled {
                do {
                    let after = try await Self.cursor(source: source, store: store)
                    var request = Caremesh_Events_V1_PullEventsRequest()
                    request.after = after
                    request.limit = batch
                    request.waitMs = waitMs
                    let response = try await client.call(EventsMethods.pull, service: source, request: request,
                                                         options: CallOptions(timeout: .milliseconds(Int(waitMs) + 5_000)))
                    for event in response.events where event.seq > after {
                        try await apply(event)
                    }
                    failures = 0
                } catch {
                    if Task.isCancelled { break }
                    failures += 1
                    let wait = min(30_000, 1_000 << min(failures - 1, 5))
                    logger.warning("event consumer failed; retrying", metadata: [
                        "source": "\(source)", "attempt": "\(failures)", "retry.ms": "\(wait)",
                        "error.kind": "\(RPCError.loggableKind(of: error))",
                    ])
                    try? await Task.sleep(for: .milliseconds(wait))
                }
            }
        }
    }

    /// One event, one transaction: dedup record, effect, cursor.
    func apply(_ event: Event) async throws {
        guard let id = UUID(uuidString: event.id) else {
            throw RPCError(.internal, "event \(event.seq) from \(source) has no valid id")
        }
        let source = self.source, handler = self.handler, logger = self.logger
        try await store.withTransaction { c in
            let fresh = try await c.query("""
                INSERT INTO applied_events (source, event_id, seq) VALUES (\(source), \(id), \(event.seq))
                ON CONFLICT DO NOTHING RETURNING 1
                """, logger: logger).hasRows()
            if fresh { try await handler(event, c) }
            try await c.query("""
                INSERT INTO event_cursors (source, position) VALUES (\(source), \(event.seq))
                ON CONFLICT (source) DO UPDATE SET position = EXCLUDED.position, updated_at = now()
                WHERE event_cursors.position < EXCLUDED.position
                """, logger: logger)
        }
    }
}

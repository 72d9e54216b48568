import CareMeshContracts
import CareMeshRPC
import Foundation
import Logging
import PostgresNIO

/// `Health/Backlog`: what a service has waiting, as counts and positions read from its schema
/// (the same from whichever instance answers). The router's HTTP edge turns the answers of
/// every service into `/metrics` (`caremesh_event_consumer_lag` and the rest), so an operator
/// sees a stuck consumer, a pile of due timers or a growing SMS queue before a person waits.
///
/// The platform part comes from every service's tables (`outbox`, `event_cursors`, `jobs`); a
/// service adds its own queues with `ServiceHost.Parts.queues`.
public enum Backlog {
    /// A service's own queues: items waiting, by queue name (counted on `connection`).
    public typealias Queues = @Sendable (_ connection: PostgresConnection, _ logger: Logger) async throws -> [String: UInt64]

    /// Serves `Health/Backlog` from `store` (`instanceID`: the answering worker's).
    static func register(in handlers: inout RPCHandlers, store: Store, queues: Queues?, instanceID: String) {
        handlers.register(HealthMethods.backlog) { _, _ in
            var response = try await store.withConnection { c in try await read(on: c, queues: queues, logger: store.logger) }
            response.instanceID = instanceID
            return response
        }
    }

    /// The backlog as of one snapshot of the platform tables, then the service's queues.
    static func read(on c: PostgresConnection, queues: Queues?, logger: Logger) async throws -> Caremesh_Health_V1_BacklogResponse {
        var response = Caremesh_Health_V1_BacklogResponse()
        let rows = try await c.run(try Prepared<Platform>(), logger: logger)
        for row in rows {
            let (source, position, head, due, oldest, failed) = try row.decode((String?, Int64?, Int64, Int64, Double, Int64).self)
            response.outboxHead = head
            response.jobsDue = UInt64(max(0, due))
            response.oldestJobDueSeconds = max(0, oldest)
            response.jobsFailed = UInt64(max(0, failed))
            if let source, let position { response.eventCursors[source] = position }
        }
        if let queues { response.queues = try await queues(c, logger) }
        return response
    }

    /// One row per event cursor (or one with NULLs without any), each carrying the outbox's
    /// head and the jobs' figures: one statement, one snapshot. Every part reads an index.
    enum Platform: PreparedSQL {
        static let sql = """
            WITH due AS (
                SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(run_at)), 0)::float8 AS oldest
                FROM jobs WHERE state = 'scheduled' AND run_at <= now())
            SELECT e.source, e.position, (SELECT coalesce(max(seq), 0) FROM outbox), due.n, due.oldest,
                   (SELECT count(*) FROM jobs WHERE state = 'failed')
            FROM due LEFT JOIN event_cursors e ON true
            """
        static let types: [PostgresDataType] = []
    }
}

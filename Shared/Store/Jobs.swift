import CareMeshRPC
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

/// A durable timer or background job, as its handler sees it.
public struct Job: Sendable {
    public var id: Int64
    public var kind: String
    public var payload: Data
    /// 1 on the first run.
    public var attempt: Int
}

/// Schedules jobs in the caller's transaction (so a timer exists exactly when the change
/// that needs it committed).
public enum Jobs {
    /// Schedules `kind` at `runAt` (now if nil). With a `uniqueKey`, a job of that kind and key
    /// already scheduled makes this a no-op (returns nil): re-arming a timer twice is safe.
    @discardableResult
    public static func schedule(_ kind: String, payload: Data = Data(), runAt: Date? = nil, uniqueKey: String? = nil,
                                maxAttempts: Int = 10, on connection: PostgresConnection, logger: Logger) async throws -> Int64? {
        let rows = try await connection.run(Prepared<ScheduleJob>(kind, ByteBuffer(bytes: payload), runAt, uniqueKey, maxAttempts),
                                            logger: logger)
        return try rows.first?.decode(Int64.self)
    }

    enum ScheduleJob: PreparedSQL {
        static let sql = """
            INSERT INTO jobs (kind, payload, run_at, unique_key, max_attempts)
            VALUES ($1, $2, coalesce($3, now()), $4, $5)
            ON CONFLICT (kind, unique_key) WHERE state = 'scheduled' AND unique_key IS NOT NULL DO NOTHING
            RETURNING id
            """
        static let types: [PostgresDataType] = [.text, .bytea, .timestamptz, .text, .int8]
    }

    /// From inside a run of the periodic job `kind`/`uniqueKey` (a retention sweep, say):
    /// schedules its next run, at once when `soon` (it has more to do), else in a day.
    public static func rearmDaily(_ kind: String, uniqueKey: String, soon: Bool, on connection: PostgresConnection,
                                  logger: Logger) async throws {
        try await cancel(kind, uniqueKey: uniqueKey, on: connection, logger: logger)
        try await schedule(kind, runAt: soon ? nil : Date().addingTimeInterval(86_400), uniqueKey: uniqueKey,
                           on: connection, logger: logger)
    }

    /// Cancels the scheduled job of `kind` and `uniqueKey` (e.g. a timer made moot); true if
    /// there was one.
    @discardableResult
    public static func cancel(_ kind: String, uniqueKey: String, on connection: PostgresConnection, logger: Logger) async throws -> Bool {
        try await connection.query("""
            UPDATE jobs SET state = 'cancelled', finished_at = now()
            WHERE kind = \(kind) AND unique_key = \(uniqueKey) AND state = 'scheduled' RETURNING id
            """, logger: logger).hasRows()
    }
}

/// Runs due jobs of one schema, as Oban and River do: each is claimed with
/// `FOR UPDATE SKIP LOCKED` in a transaction that runs the handler and records the outcome,
/// so across any number of instances a due job runs once, and a crash (the transaction
/// dies with the connection) leaves it scheduled for the next claim. A handler's database
/// work commits with the job's completion. A failure rolls that work back and reschedules the
/// job with exponential backoff (`backoff * 2^(attempt-1)`, capped at `maxBackoff`, with
/// jitter) until `max_attempts`, then marks it `failed`.
public struct JobRunner: Service {
    public typealias Handler = @Sendable (Job, PostgresConnection) async throws -> Void

    public let store: Store
    public let handlers: [String: Handler]
    public var pollInterval: Duration = .milliseconds(200)
    public var backoff: Duration = .seconds(1)
    public var maxBackoff: Duration = .seconds(300)
    let logger: Logger

    public init(store: Store, handlers: [String: Handler], logger: Logger) {
        self.store = store
        self.handlers = handlers
        self.logger = logger
    }

    public func run() async throws {
        // A service with no kinds of job has nothing to claim: no polling.
        guard !handlers.isEmpty else {
            try? await gracefulShutdown()
            return
        }
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                var ran = false
                do { ran = try await runOne() } catch {
                    if !Task.isCancelled {
                        logger.warning("job runner could not claim; retrying", metadata: ["error.kind": "\(RPCError.loggableKind(of: error))"])
                    }
                }
                if !ran { try? await Task.sleep(for: pollInterval) }
            }
        }
    }

    /// Claims and runs one due job; false if none was due.
    @discardableResult
    public func runOne() async throws -> Bool {
        let kinds = Array(handlers.keys)
        return try await store.withTransaction { c in
            let rows = try await c.query("""
                SELECT id, kind, payload, attempts FROM jobs
                WHERE state = 'scheduled' AND run_at <= now() AND kind = ANY(\(kinds))
                ORDER BY run_at, id
                FOR UPDATE SKIP LOCKED
                LIMIT 1
                """, logger: logger)
            var claimed: Job?
            for try await (id, kind, payload, attempts) in rows.decode((Int64, String, ByteBuffer, Int).self) {
                claimed = Job(id: id, kind: kind, payload: Data(payload.readableBytesView), attempt: attempts + 1)
            }
            guard let job = claimed, let handler = handlers[job.kind] else { return false }
            // The handler's work and the job's completion commit together; a savepoint lets
            // a failure roll back the handler's work while this transaction records it.
            try await c.query("SAVEPOINT job", logger: logger)
            do {
                try await handler(job, c)
            } catch {
                try await c.query("ROLLBACK TO SAVEPOINT job", logger: logger)
                try await recordFailure(job, error, on: c)
                return true
            }
            try await c.query("""
                UPDATE jobs SET state = 'done', attempts = attempts + 1, finished_at = now(), last_error = NULL
                WHERE id = \(job.id)
                """, logger: logger)
            return true
        }
    }

    private func recordFailure(_ job: Job, _ error: any Error, on c: PostgresConnection) async throws {
        let base = backoff.seconds
        let cap = maxBackoff.seconds
        let delay = min(cap, base * pow(2, Double(job.attempt - 1))) * Double.random(in: 0.8...1.2)
        // The error's kind only: its text may carry data (PHI).
        let what = RPCError.loggableKind(of: error)
        let state = try await c.query("""
            UPDATE jobs SET attempts = attempts + 1, last_error = \(what),
                state = CASE WHEN attempts + 1 >= max_attempts THEN 'failed' ELSE 'scheduled' END,
                finished_at = CASE WHEN attempts + 1 >= max_attempts THEN now() END,
                run_at = now() + make_interval(secs => \(delay))
            WHERE id = \(job.id) RETURNING state
            """, logger: logger).first(String.self)
        logger.warning(state == "failed" ? "job failed for good" : "job failed; will retry", metadata: [
            "job.id": "\(job.id)", "job.kind": "\(job.kind)", "attempt": "\(job.attempt)", "error.kind": "\(what)",
        ])
    }
}

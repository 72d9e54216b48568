import CareMeshRPC
import Foundation
import Logging
import PostgresNIO

/// Keeps the platform tables of a schema from growing without bound: the outbox, the ids of
/// events applied from others (`applied_events`) and finished jobs. A daily durable job
/// (once across any number of instances) deletes what is older than the retention
/// (`CAREMESH_EVENT_RETENTION_DAYS`, 14 by default; 0 keeps everything), at most `batch` rows
/// of each table per transaction (`CAREMESH_RETENTION_BATCH`, 10000), running again at once
/// while a batch was full.
///
/// The outbox deletes an event only when it is past the retention *and* every consumer seen
/// within the retention has read it (`event_consumers`, recorded by `Events.Pull` from each
/// calling service's position). A consumer silent for longer than the retention no longer
/// holds events back; when it returns, its pull from before the deleted range fails
/// `OUT_OF_RANGE` (`outbox_horizon`) instead of skipping what it missed, as Kafka answers a
/// consumer whose offset was deleted. Nothing is skipped silently.
///
/// An event's `applied_events` row guards against applying it twice if it is delivered again;
/// a consumer pulls only after its cursor, so past the retention the row can go too.
public struct PlatformRetention: Sendable {
    public static let job = "platform-retention"
    static let uniqueKey = "daily"

    public var retention: Duration
    public var batch: Int

    public init(retention: Duration = .seconds(14 * 86_400), batch: Int = 10_000) {
        self.retention = retention
        self.batch = batch
    }

    /// From `CAREMESH_EVENT_RETENTION_DAYS` and `CAREMESH_RETENTION_BATCH`; nil when the
    /// retention is 0 (keep everything).
    public init?(environment: [String: String]) throws(RPCError) {
        var r = PlatformRetention()
        if let text = environment["CAREMESH_EVENT_RETENTION_DAYS"] {
            guard let days = Int(text), (0...3_650).contains(days) else {
                throw RPCError.invalidArgument(field: "CAREMESH_EVENT_RETENTION_DAYS", "a number of days from 0 (keep everything) to 3650")
            }
            if days == 0 { return nil }
            r.retention = .seconds(days * 86_400)
        }
        if let text = environment["CAREMESH_RETENTION_BATCH"] {
            guard let n = Int(text), (1...1_000_000).contains(n) else {
                throw RPCError.invalidArgument(field: "CAREMESH_RETENTION_BATCH", "rows per transaction, from 1 to 1000000")
            }
            r.batch = n
        }
        self = r
    }

    /// What one run deleted.
    public struct Deleted: Sendable, Equatable {
        public var events = 0
        public var applied = 0
        public var jobs = 0

        public init(events: Int = 0, applied: Int = 0, jobs: Int = 0) {
            self.events = events
            self.applied = applied
            self.jobs = jobs
        }
    }

    /// Schedules the first run now, unless one is scheduled (at every start: the job re-arms
    /// itself, this only makes sure it exists).
    public static func arm(on c: PostgresConnection, logger: Logger) async throws {
        try await Jobs.schedule(job, uniqueKey: uniqueKey, on: c, logger: logger)
    }

    /// The job: deletes what is past the retention, then arms the next run (at once if a
    /// batch was full, else in a day).
    public func run(_ job: Job, _ c: PostgresConnection, logger: Logger) async throws {
        let deleted = try await prune(on: c, logger: logger)
        let more = max(deleted.events, deleted.applied, deleted.jobs) >= batch
        try await Jobs.rearmDaily(Self.job, uniqueKey: Self.uniqueKey, soon: more, on: c, logger: logger)
        if deleted != Deleted() {
            logger.info("platform retention", metadata: ["deleted.events": "\(deleted.events)", "deleted.applied": "\(deleted.applied)",
                                                         "deleted.jobs": "\(deleted.jobs)", "more": "\(more)"])
        }
    }

    /// Deletes up to `batch` rows of each table past the retention, in the caller's
    /// transaction. Outbox events go from the oldest seq up, and stop at the first event still
    /// within the retention or not yet read by a recent consumer, so what remains is always a
    /// suffix of the outbox and `outbox_horizon` says where it starts.
    public func prune(on c: PostgresConnection, logger: Logger) async throws -> Deleted {
        let rows = try await c.run(Prepared<Prune>(retention.seconds, Int64(batch)), logger: logger)
        var out = Deleted()
        for row in rows {
            let (events, applied, jobs) = try row.decode((Int64, Int64, Int64).self)
            out = Deleted(events: Int(events), applied: Int(applied), jobs: Int(jobs))
        }
        return out
    }

    /// `$1` the retention in seconds, `$2` the batch. Data-modifying CTEs all run, whether or
    /// not the final SELECT reads them.
    enum Prune: PreparedSQL {
        static let sql = """
            WITH cutoff AS (SELECT now() - make_interval(secs => $1) AS t),
            head AS (SELECT seq, occurred_at FROM outbox ORDER BY seq LIMIT $2),
            upto AS (
                SELECT least(
                    coalesce((SELECT min(seq) - 1 FROM head, cutoff WHERE occurred_at >= cutoff.t), (SELECT max(seq) FROM head)),
                    (SELECT min(position) FROM event_consumers, cutoff WHERE seen_at >= cutoff.t)) AS seq),
            events AS (
                DELETE FROM outbox WHERE seq IN (SELECT head.seq FROM head, upto WHERE head.seq <= upto.seq)
                RETURNING seq),
            horizon AS (
                INSERT INTO outbox_horizon (pruned_through) SELECT max(seq) FROM events HAVING count(*) > 0
                ON CONFLICT (only_row) DO UPDATE SET pruned_through = greatest(outbox_horizon.pruned_through, EXCLUDED.pruned_through)
                RETURNING 1),
            applied AS (
                DELETE FROM applied_events WHERE (source, event_id) IN (
                    SELECT source, event_id FROM applied_events, cutoff WHERE applied_at < cutoff.t ORDER BY applied_at LIMIT $2)
                RETURNING 1),
            finished AS (
                DELETE FROM jobs WHERE id IN (
                    SELECT id FROM jobs, cutoff WHERE state <> 'scheduled' AND finished_at < cutoff.t ORDER BY finished_at LIMIT $2)
                RETURNING 1)
            SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM applied), (SELECT count(*) FROM finished)
            """
        static let types: [PostgresDataType] = [.float8, .int8]
    }
}

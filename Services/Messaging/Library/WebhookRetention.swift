import CareMeshStore
import Foundation
import Logging
import PostgresNIO

/// Seed 004's retention policy for SMS logs. The webhook log holds phone numbers and message
/// text in its headers and bodies (PHI), and it and the idempotency records of applied
/// webhooks (`webhook_applied`) grow with every provider callback. Rows older than
/// `MESSAGING_WEBHOOK_LOG_RETENTION_DAYS` (90) are deleted by a daily durable job, which runs
/// once across any number of instances. The messages themselves (`sms_messages`, the record of
/// every SMS) and the consent ledger are kept.
///
/// A log row still waiting in the inbox (authentic, not yet applied, tries left) is never
/// deleted, however old. A run deletes at most `batch` rows of each table, in one transaction,
/// and runs again at once while a batch was full, so a large backlog goes in short
/// transactions. Once past the retention, a provider's repeat of a webhook is applied again:
/// statuses only move forward, so a stale repeat changes nothing.
struct WebhookRetention: Sendable {
    static let job = "webhook-log-retention"
    static let uniqueKey = "daily"

    let retention: Duration
    let batch: Int
    let logger: Logger

    /// Schedules the first run now, unless one is scheduled (at every start: the job re-arms
    /// itself, this only makes sure it exists).
    static func arm(on c: PostgresConnection, logger: Logger) async throws {
        try await Jobs.schedule(job, uniqueKey: uniqueKey, on: c, logger: logger)
    }

    /// One run: deletes what is past the retention, then arms the next run (at once if a batch
    /// was full, else in a day).
    func run(_ job: Job, _ c: PostgresConnection) async throws {
        try await Store.setActor(MessagingService.actor, roles: ["service"], on: c, logger: logger)
        let (logs, applied) = try await prune(on: c)
        let more = logs >= batch || applied >= batch
        try await Jobs.rearmDaily(Self.job, uniqueKey: Self.uniqueKey, soon: more, on: c, logger: logger)
        if logs + applied > 0 {
            logger.info("webhook log retention", metadata: ["deleted.logs": "\(logs)", "deleted.applied": "\(applied)", "more": "\(more)"])
        }
    }

    /// Deletes up to `batch` log rows and `batch` idempotency records past the retention, in
    /// the caller's transaction (with the service as actor: the log is under row-level
    /// security). Returns how many of each.
    func prune(on c: PostgresConnection) async throws -> (logs: Int, applied: Int) {
        let seconds = retention.seconds, limit = batch
        let rows = try await c.query("""
            WITH logs AS (
                DELETE FROM sms_webhook_logs WHERE id IN (
                    SELECT id FROM sms_webhook_logs
                    WHERE created_at < now() - make_interval(secs => \(seconds))
                      AND NOT (\(unescaped: Webhooks.waitingSQL))
                    ORDER BY created_at LIMIT \(limit))
                RETURNING 1),
            applied AS (
                DELETE FROM webhook_applied WHERE (provider, idempotency_key) IN (
                    SELECT provider, idempotency_key FROM webhook_applied
                    WHERE applied_at < now() - make_interval(secs => \(seconds)) LIMIT \(limit))
                RETURNING 1)
            SELECT (SELECT count(*) FROM logs), (SELECT count(*) FROM applied)
            """, logger: logger)
        var out = (logs: 0, applied: 0)
        for try await (logs, applied) in rows.decode((Int64, Int64).self) { out = (Int(logs), Int(applied)) }
        return out
    }
}

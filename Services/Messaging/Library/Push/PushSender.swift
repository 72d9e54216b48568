import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

/// Sends the queued pushes (`push_sends`, recorded by `NotificationRouter`), as `Emails` sends
/// emails: a round claims due sends with a lease, sends each to its device's provider
/// concurrently, and records every outcome in one transaction: sent; the device removed when
/// the provider says its token is gone; retried with backoff on the provider's trouble; failed
/// for good on a refusal, after `maxAttempts`, or once expired. Each notification's push
/// delivery then shows its sends together: sent if one device took it.
final class PushSender: Service, Sendable {
    let store: Store
    let configuration: MessagingConfiguration
    let providers: [String: any PushProvider]
    let logger: Logger
    let signal = ChangeSignal()

    static let maxAttempts = 5
    static let batch = 64

    init(store: Store, configuration: MessagingConfiguration, providers: [any PushProvider], logger: Logger) {
        self.store = store
        self.configuration = configuration
        self.providers = Dictionary(providers.map { ($0.platform.storedName ?? "", $0) }) { a, _ in a }
        self.logger = logger
    }

    func wake() { signal.fire() }

    func run() async throws {
        guard !providers.isEmpty else {
            logger.warning("no push provider configured (MESSAGING_FCM_*, MESSAGING_APNS_*): pushes wait, queued")
            try? await gracefulShutdown()
            return
        }
        await runRounds(signal: signal, pollInterval: configuration.pollInterval, logger: logger, what: "push") {
            try await self.sendDue()
        }
    }

    struct Due: Sendable {
        var id: UUID
        var notification: UUID
        var device: UUID?
        var platform: String?
        var token: String?
        var attempts: Int
        var expired: Bool
        var message: PushMessage
    }

    /// One round; true when there may be more due.
    func sendDue() async throws -> Bool {
        let platforms = Array(providers.keys)
        let due = try await store.withActor(MessagingService.actor, roles: ["service"]) { c in
            try await c.query("""
                UPDATE push_sends s SET lease_until = now() + make_interval(secs => \(self.configuration.lease.seconds)),
                    attempts = s.attempts + 1
                FROM (SELECT s.id, d.id AS device, d.platform, d.token, n.seq, n.kind, n.critical, n.title, n.body, n.data::text AS data
                      FROM push_sends s JOIN notifications n ON n.id = s.notification_id LEFT JOIN push_devices d ON d.id = s.device_id
                      WHERE s.status = 'queued' AND s.next_attempt_at <= now() AND (s.lease_until IS NULL OR s.lease_until < now())
                        AND (d.id IS NULL OR d.platform = ANY(\(platforms)::text[]))
                      ORDER BY s.next_attempt_at LIMIT \(Self.batch) FOR UPDATE OF s SKIP LOCKED) due
                WHERE s.id = due.id
                RETURNING s.id, s.notification_id, due.device, due.platform, due.token, s.attempts, s.expires_at < now(),
                          extract(epoch FROM s.expires_at)::float8, due.seq, due.kind, due.critical, due.title, due.body, due.data
                """, logger: self.logger).collect().map(Self.due)
        }
        guard !due.isEmpty else { return false }
        let timeout = configuration.sendTimeout
        let outcomes = await withTaskGroup(of: (Int, PushOutcome).self) { group in
            for (i, push) in due.enumerated() where !push.expired {
                guard let platform = push.platform, let token = push.token, let provider = providers[platform] else { continue }
                group.addTask { (i, await provider.send(push.message, to: token, timeout: timeout)) }
            }
            var out = [PushOutcome?](repeating: nil, count: due.count)
            for await (i, outcome) in group { out[i] = outcome }
            return out
        }
        try await store.withActor(MessagingService.actor, roles: ["service"]) { c in
            for (push, outcome) in zip(due, outcomes) { try await self.record(push, outcome, on: c) }
            try await Self.summarize(Array(Set(due.map(\.notification))), on: c, logger: self.logger)
        }
        return due.count == Self.batch
    }

    static func due(_ row: PostgresRow) throws -> Due {
        let (id, notification, device, platform, token, attempts, expired, expires, seq, kind, critical, title, body, data) =
            try row.decode((UUID, UUID, UUID?, String?, String?, Int32, Bool, Double, Int64, String, Bool, String, String, String).self)
        let message = PushMessage(id: id, notification: notification, seq: seq, kind: .init(storedName: kind), critical: critical,
                                  title: title, body: body,
                                  data: (try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: String]) ?? [:],
                                  expires: Date(timeIntervalSince1970: expires))
        return Due(id: id, notification: notification, device: device, platform: platform, token: token, attempts: Int(attempts),
                   expired: expired, message: message)
    }

    /// One send's outcome (nil: not sent, because its device is gone or it expired).
    func record(_ push: Due, _ outcome: PushOutcome?, on c: PostgresConnection) async throws {
        switch outcome {
        case .sent(let providerID)?:
            try await c.query("""
                UPDATE push_sends SET status = 'sent', provider_message_id = \(providerID), lease_until = NULL, last_error = ''
                WHERE id = \(push.id)
                """, logger: logger)
        case .retry(let why, _)? where push.attempts < Self.maxAttempts:
            let delay = configuration.retryDelay(push.attempts).seconds
            try await c.query("""
                UPDATE push_sends SET lease_until = NULL, last_error = left(\(why), 500), next_attempt_at = now() + make_interval(secs => \(delay))
                WHERE id = \(push.id)
                """, logger: logger)
        default:
            if case .invalidToken? = outcome {
                // Whatever else is queued for it fails with it (its sends lose their device).
                try await c.query("DELETE FROM push_devices WHERE id = \(push.device)", logger: logger)
                logger.info("push device removed: its provider no longer knows its token",
                            metadata: ["device.id": "\(push.device?.text ?? "")", "platform": "\(push.platform ?? "")"])
            }
            try await c.query("""
                UPDATE push_sends SET status = 'failed', lease_until = NULL, last_error = left(\(Self.failure(push, outcome)), 500)
                WHERE id = \(push.id)
                """, logger: logger)
        }
    }

    /// Why a send failed for good (nil outcome: it was not sent, its device gone or its time past).
    static func failure(_ push: Due, _ outcome: PushOutcome?) -> String {
        switch outcome {
        case .invalidToken(let reason)?: "the device's token is no longer valid (removed): \(reason)"
        case .refused(let reason)?, .retry(let reason, _)?, .sent(let reason)?: reason
        case nil: push.device == nil ? "the device was removed" : "expired before it could be sent"
        }
    }

    /// Each notification's push delivery, from its sends: sent when a device took it, queued
    /// while one may still, failed otherwise (with why).
    static func summarize(_ notifications: [UUID], on c: PostgresConnection, logger: Logger) async throws {
        try await c.query("""
            UPDATE notification_deliveries d SET status = a.status, attempts = a.attempts, last_error = a.error, updated_at = now()
            FROM (SELECT notification_id,
                         CASE WHEN bool_or(status = 'sent') THEN 'sent' WHEN bool_or(status = 'queued') THEN 'queued' ELSE 'failed' END AS status,
                         max(attempts) AS attempts, left(coalesce(string_agg(NULLIF(last_error, ''), '; '), ''), 500) AS error
                  FROM push_sends WHERE notification_id = ANY(\(notifications)::uuid[]) GROUP BY notification_id) a
            WHERE d.notification_id = a.notification_id AND d.channel = 'push'
            """, logger: logger)
    }
}

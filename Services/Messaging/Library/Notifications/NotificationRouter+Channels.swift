import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import PostgresNIO

/// A round's channels, each recorded in one statement for the whole round (the reply codes in
/// one, and again only for the codes that collided), so routing costs a few statements a round
/// instead of several per notification.
extension NotificationRouter {
    /// One notification on one channel: to a phone or an address (push: its person's devices),
    /// now or held until `held`.
    struct Delivery: Sendable {
        var n: Claimed
        var to: String
        var held: Date?
    }

    /// What a round sends where.
    struct Plan: Sendable {
        var texts: [Delivery] = []
        var pushes: [Delivery] = []
        var emails: [Delivery] = []
    }

    /// Records the SMS (through `record_sms_batch`: consent, segments), an offer's with its reply
    /// code, and their deliveries. True when one was queued to go now.
    func text(_ texts: [Delivery], on c: PostgresConnection) async throws -> Bool {
        guard !texts.isEmpty else { return false }
        let codes = try await replyCodes(texts.filter { NotificationChannels.takesReply($0.n.kind) }, on: c)
        let rendered = texts.map { t in
            let text = NotificationChannels.smsText(kind: t.n.kind, title: t.n.title, body: t.n.body, data: t.n.data, code: codes[t.n.id])
            return desk.plainText(SmsDesk.SendPlan(correlator: "notification:\(t.n.id.text)", to: t.to, patient: nil, type: "notification",
                                                   template: nil, language: nil, variables: [:], text: text, scheduledAt: t.held,
                                                   callbackData: nil), by: MessagingService.actor)
        }
        let recorded = try await SmsDesk.recordBatch(rendered, on: c, logger: logger)
        var statuses: [String] = [], errors: [String] = [], messages: [UUID] = []
        for r in recorded {
            switch r.outcome {
            case "created", "existing":
                statuses.append("queued")
                errors.append("")
            case "no_consent":
                statuses.append("failed")
                errors.append("no SMS consent for this number")
            default: throw RPCError(.aborted, "a notification's SMS raced another; routed again next round")
            }
            // The nil UUID for none: an array cannot hold NULL here.
            messages.append(r.message.flatMap { UUID(uuidString: $0.id) } ?? .zero)
        }
        try await c.query("""
            INSERT INTO notification_deliveries (notification_id, channel, status, attempts, sms_message_id, last_error)
            SELECT n, 'sms', s, 1, NULLIF(m, '00000000-0000-0000-0000-000000000000'::uuid), e
            FROM unnest(\(texts.map(\.n.id))::uuid[], \(statuses)::text[], \(messages)::uuid[], \(errors)::text[]) AS u(n, s, m, e)
            ON CONFLICT (notification_id, channel) DO NOTHING
            """, logger: logger)
        return zip(texts, recorded).contains { $0.held == nil && $1.outcome == "created" }
    }

    /// Queues each notification for every device of its person, from when it may go, and records
    /// the push delivery of those that had one. True when one was queued to go now.
    func push(_ pushes: [Delivery], now: Date, on c: PostgresConnection) async throws -> Bool {
        guard !pushes.isEmpty else { return false }
        let queued = try await c.query("""
            WITH sends AS (
                INSERT INTO push_sends (notification_id, device_id, next_attempt_at, expires_at)
                SELECT u.n, d.id, u.at, u.expires
                FROM unnest(\(pushes.map(\.n.id))::uuid[], \(pushes.map(\.n.person))::uuid[], \(pushes.map { $0.held ?? now })::timestamptz[],
                            \(pushes.map { ($0.held ?? now).addingTimeInterval(NotificationChannels.lifetime($0.n.kind).seconds) })::timestamptz[])
                     AS u(n, person, at, expires)
                JOIN push_devices d ON d.person_id = u.person
                ON CONFLICT (notification_id, device_id) DO NOTHING RETURNING notification_id)
            INSERT INTO notification_deliveries (notification_id, channel, status)
            SELECT DISTINCT notification_id, 'push', 'queued' FROM sends
            ON CONFLICT (notification_id, channel) DO NOTHING RETURNING notification_id
            """, logger: logger).collect().map { try $0.decode(UUID.self) }
        let going = Set(pushes.filter { $0.held == nil }.map(\.n.id))
        return queued.contains { going.contains($0) }
    }

    /// Queues the emails (kind 'notification', once per notification) and their deliveries.
    /// True when one was queued to go now.
    func email(_ emails: [Delivery], now: Date, on c: PostgresConnection) async throws -> Bool {
        guard !emails.isEmpty else { return false }
        let texts = emails.map { NotificationChannels.email(title: $0.n.title, body: $0.n.body) }
        let queued = try await c.query("""
            WITH made AS (
                INSERT INTO emails (kind, to_address, subject, body_text, client_correlator, requested_by, next_attempt_at, expires_at)
                SELECT 'notification', u.address, u.subject, u.body, 'notification:' || u.n::text, \(MessagingService.actor), u.at, u.expires
                FROM unnest(\(emails.map(\.n.id))::uuid[], \(emails.map(\.to))::text[], \(texts.map(\.subject))::text[],
                            \(texts.map(\.text))::text[], \(emails.map { $0.held ?? now })::timestamptz[],
                            \(emails.map { ($0.held ?? now).addingTimeInterval(NotificationChannels.lifetime($0.n.kind).seconds) })::timestamptz[])
                     AS u(n, address, subject, body, at, expires)
                ON CONFLICT (client_correlator) DO NOTHING RETURNING id, client_correlator)
            INSERT INTO notification_deliveries (notification_id, channel, status, email_id)
            SELECT substr(client_correlator, 14)::uuid, 'email', 'queued', id FROM made
            ON CONFLICT (notification_id, channel) DO NOTHING RETURNING notification_id
            """, logger: logger).collect().map { try $0.decode(UUID.self) }
        let going = Set(emails.filter { $0.held == nil }.map(\.n.id))
        return queued.contains { going.contains($0) }
    }

    /// A code for each offer texted, by notification: four digits none of its phone's live codes
    /// has (an expired one may be given again), drawn for the round at once and drawn again only
    /// for those that collided. Codes drawn for one phone in one statement differ.
    func replyCodes(_ offers: [Delivery], on c: PostgresConnection) async throws -> [UUID: String] {
        var pending = offers.compactMap { o in o.n.data["sos_id"].flatMap(UUID.init(uuidString:)).map { (o, $0) } }
        var out: [UUID: String] = [:]
        var generator = SystemRandomNumberGenerator()
        let expires = Date().addingTimeInterval(NotificationChannels.replyCodeLifetime.seconds)
        for _ in 0..<50 where !pending.isEmpty {
            var drawn: [String: Set<String>] = [:]
            let codes = pending.map { (o, _) in
                var code = NotificationChannels.newCode(using: &generator)
                while drawn[o.to, default: []].contains(code) { code = NotificationChannels.newCode(using: &generator) }
                drawn[o.to, default: []].insert(code)
                return code
            }
            for try await (notification, code) in try await c.query("""
                INSERT INTO sos_reply_codes AS r (phone_number, code, person_id, sos_id, notification_id, expires_at)
                SELECT p, k, person, sos, n, \(expires)
                FROM unnest(\(pending.map(\.0.to))::text[], \(codes)::text[], \(pending.map(\.0.n.person))::uuid[], \(pending.map(\.1))::uuid[],
                            \(pending.map(\.0.n.id))::uuid[]) AS u(p, k, person, sos, n)
                ON CONFLICT (phone_number, code) DO UPDATE
                    SET person_id = excluded.person_id, sos_id = excluded.sos_id, notification_id = excluded.notification_id,
                        expires_at = excluded.expires_at
                    WHERE r.expires_at < now()
                RETURNING notification_id, code
                """, logger: logger).decode((UUID, String).self) { out[notification] = code }
            pending.removeAll { out[$0.0.n.id] != nil }
        }
        guard pending.isEmpty else { throw RPCError(.resourceExhausted, "no free reply code for a phone") }
        return out
    }
}

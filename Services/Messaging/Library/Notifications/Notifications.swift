import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// What messaging tells people (issue 33): the notification record.
///
/// Other services' events become notifications in the event consumer's transaction
/// (`NotificationRules` decides who is told what). Each is recorded once per (event, person),
/// numbered per person without gaps in commit order (`seq`), and announced as
/// `NotificationCreated`, which the router's HTTP edge sends on the person's open streams. Each
/// person lists their own and marks them read (`Notifications+Calls`); PostgreSQL shows a
/// person only their own (forced row-level security, migration 0109).
final class Notifications: Sendable {
    let store: Store
    let outbox: Outbox
    let logger: Logger

    init(store: Store, outbox: Outbox, logger: Logger) {
        self.store = store
        self.outbox = outbox
        self.logger = logger
    }

    /// The notifications another service's `event` makes, recorded in the consumer's transaction.
    func apply(_ event: Event, _ c: PostgresConnection) async throws {
        guard let id = UUID(uuidString: event.id) else { return }
        try await notify(type: event.type, payload: Data(event.payload), event: id,
                         occurred: Date(timeIntervalSince1970: Double(event.occurredAtUs) / 1_000_000), on: c)
    }

    /// The notifications one of messaging's own events makes, in the transaction that emits it.
    func announce(_ message: some SwiftProtobuf.Message, event: UUID, on c: PostgresConnection) async throws {
        try await notify(type: type(of: message).protoMessageName, payload: try message.serializedData(), event: event, occurred: Date(), on: c)
    }

    private func notify(type: String, payload: Data, event: UUID, occurred: Date, on c: PostgresConnection) async throws {
        guard NotificationRules.types.contains(type) else { return }
        let drafts = try NotificationRules.drafts(type: type, payload: payload, occurred: occurred, now: Date())
        guard !drafts.isEmpty else { return }
        // Written as the service (row-level security), then the transaction is left as it was.
        try await Store.setActor(MessagingService.actor, roles: ["service"], on: c, logger: logger)
        _ = try await record(drafts, event: event, on: c)
        try await Store.setActor("", roles: [], on: c, logger: logger)
    }

    /// Records `drafts` (one per person) for `event` unless they already were, with their stream
    /// delivery, and announces each: one statement for the rows. People are numbered in id order,
    /// so two transactions notifying the same people lock their counters in the same order.
    func record(_ drafts: [NotificationRules.Draft], event: UUID, on c: PostgresConnection) async throws
        -> [Caremesh_Messaging_V1_Notification]
    {
        let ordered = drafts.sorted { $0.person.uuidString < $1.person.uuidString }
        let data = try ordered.map { String(decoding: try JSONSerialization.data(withJSONObject: $0.data, options: [.sortedKeys]), as: UTF8.self) }
        let kinds = ordered.map { $0.kind.storedName ?? "" }
        let rows = try await c.query("""
            WITH d AS (
                SELECT * FROM unnest(\(ordered.map(\.person))::uuid[], \(kinds)::text[],
                                     \(ordered.map(\.kind.isCritical))::bool[], \(ordered.map(\.title))::text[],
                                     \(ordered.map(\.body))::text[], \(data)::jsonb[]) AS d(person, kind, critical, title, body, data)
                WHERE NOT EXISTS (SELECT 1 FROM notifications x WHERE x.event_id = \(event) AND x.person_id = d.person)),
            counters AS (
                INSERT INTO notification_people AS p (person_id, last_seq) SELECT person, 1 FROM d ORDER BY person
                ON CONFLICT (person_id) DO UPDATE SET last_seq = p.last_seq + 1 RETURNING person_id, last_seq),
            made AS (
                INSERT INTO notifications (person_id, seq, kind, critical, title, body, data, event_id)
                SELECT d.person, n.last_seq, d.kind, d.critical, d.title, d.body, d.data, \(event)
                FROM d JOIN counters n ON n.person_id = d.person
                RETURNING *),
            streamed AS (
                INSERT INTO notification_deliveries (notification_id, channel, status) SELECT id, 'stream', 'sent' FROM made)
            SELECT \(unescaped: Self.columns("made")) FROM made ORDER BY person_id
            """, logger: logger)
        var made: [Caremesh_Messaging_V1_Notification] = []
        for try await row in rows { made.append(try Self.notification(row)) }
        var events = PendingEvents()
        for var n in made {
            n.deliveries = [.with { $0.channel = .stream; $0.status = .sent; $0.updatedAt = n.createdAt }]
            try events.add(Caremesh_Messaging_V1_NotificationCreated.with { $0.notification = n }, key: n.personID)
        }
        try await outbox.append(events, on: c)
        return made
    }

    // MARK: - Rows

    /// Over `table` (notifications, or a CTE of its rows).
    static func columns(_ table: String) -> String {
        """
        \(table).id, \(table).person_id, \(table).seq, \(table).kind, \(table).critical, \(table).title, \(table).body, \(table).data::text,
        extract(epoch FROM \(table).created_at)::float8, extract(epoch FROM \(table).read_at)::float8
        """
    }

    static func notification(_ row: PostgresRow) throws -> Caremesh_Messaging_V1_Notification {
        let (id, person, seq, kind, critical, title, body, data, created, read) =
            try row.decode((UUID, UUID, Int64, String, Bool, String, String, String, Double, Double?).self)
        var n = Caremesh_Messaging_V1_Notification()
        n.id = id.text
        n.personID = person.text
        n.seq = seq
        n.kind = .init(storedName: kind)
        n.critical = critical
        n.title = title
        n.body = body
        n.data = (try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: String]) ?? [:]
        n.createdAt = Google_Protobuf_Timestamp(epochSeconds: created)
        if let read { n.readAt = Google_Protobuf_Timestamp(epochSeconds: read) }
        return n
    }

    /// Each notification's deliveries, read in one statement. An SMS delivery's status is its
    /// message's, as the SMS path and the provider's receipts move it; an email delivery's its
    /// email's.
    func deliveries(_ c: PostgresConnection, of notifications: inout [Caremesh_Messaging_V1_Notification]) async throws {
        guard !notifications.isEmpty else { return }
        var byID: [String: [Caremesh_Messaging_V1_NotificationDelivery]] = [:]
        let rows = try await c.query("""
            SELECT d.notification_id, d.channel,
                   CASE WHEN e.id IS NOT NULL THEN e.status
                        WHEN m.id IS NULL THEN d.status WHEN m.status IN ('scheduled', 'pending') THEN 'queued'
                        WHEN m.status IN ('failed', 'cancelled') THEN 'failed' ELSE m.status END,
                   d.attempts + coalesce(m.retry_count, 0) + coalesce(e.attempts, 0),
                   extract(epoch FROM greatest(d.updated_at, m.updated_at, e.updated_at))::float8,
                   CASE WHEN e.id IS NOT NULL THEN coalesce(e.error_message, '')
                        WHEN m.id IS NULL THEN d.last_error ELSE coalesce(m.error_message, m.delivery_description, '') END
            FROM notification_deliveries d LEFT JOIN sms_messages m ON m.id = d.sms_message_id LEFT JOIN emails e ON e.id = d.email_id
            WHERE d.notification_id = ANY(\(notifications.compactMap { UUID(uuidString: $0.id) })::uuid[])
            ORDER BY d.notification_id, d.channel
            """, logger: logger)
        for try await (id, channel, status, attempts, updated, error) in rows.decode((UUID, String, String, Int32, Double, String).self) {
            byID[id.text, default: []].append(.with {
                $0.channel = .init(storedName: channel)
                $0.status = .init(storedName: status)
                $0.attempts = UInt32(attempts)
                $0.updatedAt = Google_Protobuf_Timestamp(epochSeconds: updated)
                $0.error = error
            })
        }
        for i in notifications.indices { notifications[i].deliveries = byID[notifications[i].id] ?? [] }
    }
}

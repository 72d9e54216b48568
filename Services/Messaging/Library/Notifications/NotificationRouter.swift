import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

/// Takes each recorded notification to the channels its person chose, once it is committed
/// (woken by the consumers' `committed`, else every poll interval).
///
/// A round claims due notifications (leased, so a crash or a failed round only delays them),
/// reads their people's contact points from identity (`GetContactPoints`, outside any
/// transaction), and then, in one transaction: `NotificationChannels` and the person's settings
/// decide; an SMS is recorded through the SMS path (consent, segments, failover: `record_sms`),
/// an SOS offer with a reply code (`sos_reply_codes`); a push is queued for each of the
/// person's devices (`push_sends`, sent by `PushSender`), an email for the address of a person
/// who chose email (`emails`, sent by `Emails`); each channel becomes a delivery, and
/// the notification is marked routed. Identity unreachable: the round fails and the claims are tried again after the lease.
final class NotificationRouter: Service, Sendable {
    let store: Store
    let directory: ContactDirectory
    let desk: SmsDesk
    let sender: SmsSender
    let pusher: PushSender
    let emails: Emails
    let configuration: MessagingConfiguration
    let logger: Logger
    let signal = ChangeSignal()

    static let batch = 64
    /// How long a claimed notification waits before another round may take it again.
    static let lease = Duration.seconds(10)

    init(store: Store, directory: ContactDirectory, desk: SmsDesk, sender: SmsSender, pusher: PushSender, emails: Emails,
         configuration: MessagingConfiguration, logger: Logger) {
        self.pusher = pusher
        self.emails = emails
        self.store = store
        self.directory = directory
        self.desk = desk
        self.sender = sender
        self.configuration = configuration
        self.logger = logger
    }

    func run() async throws {
        await runRounds(signal: signal, pollInterval: configuration.pollInterval, logger: logger, what: "notification routing") {
            try await self.routeDue()
        }
    }

    struct Claimed: Sendable {
        var id: UUID
        var person: UUID
        var kind: Caremesh_Messaging_V1_NotificationKind
        var title: String
        var body: String
        var data: [String: String]
    }

    /// One round; true when there may be more due.
    func routeDue() async throws -> Bool {
        let claimed = try await store.withActor(MessagingService.actor, roles: ["service"]) { c in
            try await c.query("""
                UPDATE notifications n SET route_at = now() + make_interval(secs => \(Self.lease.seconds)),
                    route_attempts = n.route_attempts + 1
                FROM (SELECT id FROM notifications WHERE route_at <= now() ORDER BY route_at LIMIT \(Self.batch)
                      FOR UPDATE SKIP LOCKED) due
                WHERE n.id = due.id
                RETURNING n.id, n.person_id, n.kind, n.title, n.body, n.data::text
                """, logger: self.logger).collect().map { row in
                let (id, person, kind, title, body, data) = try row.decode((UUID, UUID, String, String, String, String).self)
                return Claimed(id: id, person: person, kind: .init(storedName: kind), title: title, body: body,
                               data: (try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: String]) ?? [:])
            }
        }
        guard !claimed.isEmpty else { return false }
        let contacts = try await directory.contactPoints(of: claimed.map(\.person))
        let now = Date()
        let (texted, pushed, emailed) = try await store.withActor(MessagingService.actor, roles: ["service"]) { c in
            var texted = false, pushed = false, emailed = false
            let settings = try await Notifications.settings(of: claimed.map(\.person), on: c, logger: self.logger)
            for n in claimed {
                let person = settings[n.person] ?? .defaults
                // Each channel: now, held until their quiet hours end, or not at all.
                let sms = person.decide(n.kind, .sms, now: now), push = person.decide(n.kind, .push, now: now)
                let email = person.decide(n.kind, .email, now: now)
                if sms.goes, let phone = NotificationChannels.smsNumber(n.kind, contacts[n.person]) {
                    texted = try await self.text(n, to: phone, at: sms.heldUntil, on: c) || texted
                }
                if push.goes, NotificationChannels.wantsPush(n.kind, contacts[n.person]) {
                    let queued = try await self.push(n, at: push.heldUntil ?? now, on: c)
                    pushed = pushed || (queued && push.heldUntil == nil)
                }
                if email.goes, let address = NotificationChannels.emailAddress(n.kind, contacts[n.person]) {
                    let queued = try await self.email(n, to: address, at: email.heldUntil ?? now, on: c)
                    emailed = emailed || (queued && email.heldUntil == nil)
                }
            }
            try await c.query("UPDATE notifications SET route_at = NULL WHERE id = ANY(\(claimed.map(\.id)))", logger: self.logger)
            return (texted, pushed, emailed)
        }
        if texted { sender.wake() }
        if pushed { pusher.wake() }
        if emailed { emails.signal.fire() }
        return claimed.count == Self.batch
    }

    /// Records the SMS of `n` (with a reply code if it takes one; scheduled for `at` when held)
    /// and its delivery. True when an SMS was queued to go now.
    func text(_ n: Claimed, to phone: String, at: Date?, on c: PostgresConnection) async throws -> Bool {
        var code: String?
        if NotificationChannels.takesReply(n.kind), let sos = n.data["sos_id"].flatMap(UUID.init(uuidString:)) {
            code = try await replyCode(phone: phone, person: n.person, sos: sos, notification: n.id, on: c)
        }
        let text = NotificationChannels.smsText(kind: n.kind, title: n.title, body: n.body, data: n.data, code: code)
        let plan = SmsDesk.SendPlan(correlator: "notification:\(n.id.text)", to: phone, patient: nil, type: "notification", template: nil,
                                    language: nil, variables: [:], text: text, scheduledAt: at, callbackData: nil)
        let recorded = try await SmsDesk.recordOne(desk.plainText(plan, by: MessagingService.actor), on: c, logger: logger)
        let message = recorded.message.flatMap { UUID(uuidString: $0.id) }
        let (status, error): (String, String) = switch recorded.outcome {
        case "created", "existing": ("queued", "")
        case "no_consent": ("failed", "no SMS consent for this number")
        default: throw RPCError(.aborted, "the notification's SMS raced another; routed again next round")
        }
        try await c.query("""
            INSERT INTO notification_deliveries (notification_id, channel, status, attempts, sms_message_id, last_error)
            VALUES (\(n.id), 'sms', \(status), 1, \(message), \(error))
            ON CONFLICT (notification_id, channel) DO NOTHING
            """, logger: logger)
        return recorded.outcome == "created" && at == nil
    }

    /// Queues `n` for each of its person's push devices, from `at`, and records its push
    /// delivery. True when there was a device.
    func push(_ n: Claimed, at: Date, on c: PostgresConnection) async throws -> Bool {
        let expires = at.addingTimeInterval(NotificationChannels.lifetime(n.kind).seconds)
        return try await c.query("""
            WITH sends AS (
                INSERT INTO push_sends (notification_id, device_id, next_attempt_at, expires_at)
                SELECT \(n.id), id, \(at), \(expires) FROM push_devices WHERE person_id = \(n.person)
                ON CONFLICT (notification_id, device_id) DO NOTHING RETURNING 1)
            INSERT INTO notification_deliveries (notification_id, channel, status)
            SELECT \(n.id), 'push', 'queued' WHERE EXISTS (SELECT 1 FROM sends)
            ON CONFLICT (notification_id, channel) DO NOTHING RETURNING 1
            """, logger: logger).first(Int32.self) != nil
    }

    /// Queues `n`'s email to `address`, from `at`, and records its email delivery. True when queued.
    func email(_ n: Claimed, to address: String, at: Date, on c: PostgresConnection) async throws -> Bool {
        let (subject, text) = NotificationChannels.email(title: n.title, body: n.body)
        let expires = at.addingTimeInterval(NotificationChannels.lifetime(n.kind).seconds)
        return try await c.query("""
            WITH made AS (
                INSERT INTO emails (kind, to_address, subject, body_text, client_correlator, requested_by, next_attempt_at, expires_at)
                VALUES ('notification', \(address), \(subject), \(text), \("notification:\(n.id.text)"), \(MessagingService.actor), \(at),
                        \(expires))
                ON CONFLICT (client_correlator) DO NOTHING RETURNING id)
            INSERT INTO notification_deliveries (notification_id, channel, status, email_id)
            SELECT \(n.id), 'email', 'queued', id FROM made
            ON CONFLICT (notification_id, channel) DO NOTHING RETURNING 1
            """, logger: logger).first(Int32.self) != nil
    }

    /// A code for the offer of `sos` texted to `phone`: four digits none of the phone's live
    /// codes has (an expired one may be given again).
    func replyCode(phone: String, person: UUID, sos: UUID, notification: UUID, on c: PostgresConnection) async throws -> String {
        var generator = SystemRandomNumberGenerator()
        let expires = Date().addingTimeInterval(NotificationChannels.replyCodeLifetime.seconds)
        for _ in 0..<50 {
            let code = NotificationChannels.newCode(using: &generator)
            let taken = try await c.query("""
                INSERT INTO sos_reply_codes AS r (phone_number, code, person_id, sos_id, notification_id, expires_at)
                VALUES (\(phone), \(code), \(person), \(sos), \(notification), \(expires))
                ON CONFLICT (phone_number, code) DO UPDATE
                    SET person_id = excluded.person_id, sos_id = excluded.sos_id, notification_id = excluded.notification_id,
                        expires_at = excluded.expires_at
                    WHERE r.expires_at < now()
                RETURNING code
                """, logger: logger).first(String.self)
            if let taken { return taken }
        }
        throw RPCError(.resourceExhausted, "no free reply code for this phone")
    }
}

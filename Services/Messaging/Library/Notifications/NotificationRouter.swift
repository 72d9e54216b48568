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
/// decide; the round's SMS are recorded through the SMS path (consent, segments, failover:
/// `record_sms_batch`), an SOS offer's with a reply code (`sos_reply_codes`); a push is queued
/// for each of the person's devices (`push_sends`, sent by `PushSender`), an email for the
/// address of a person who chose email (`emails`, sent by `Emails`); each channel becomes a
/// delivery, and the notifications are marked routed: a few statements for the whole round
/// (`NotificationRouter+Channels`). Identity unreachable: the round fails and the claims are
/// tried again after the lease.
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
            let settings = try await Notifications.settings(of: claimed.map(\.person), on: c, logger: self.logger)
            // Each channel: now, held until their quiet hours end, or not at all.
            var plan = Plan()
            for n in claimed {
                let person = settings[n.person] ?? .defaults
                let sms = person.decide(n.kind, .sms, now: now), push = person.decide(n.kind, .push, now: now)
                let email = person.decide(n.kind, .email, now: now)
                if sms.goes, let phone = NotificationChannels.smsNumber(n.kind, contacts[n.person]) {
                    plan.texts.append(.init(n: n, to: phone, held: sms.heldUntil))
                }
                if push.goes, NotificationChannels.wantsPush(n.kind, contacts[n.person]) {
                    plan.pushes.append(.init(n: n, to: "", held: push.heldUntil))
                }
                if email.goes, let address = NotificationChannels.emailAddress(n.kind, contacts[n.person]) {
                    plan.emails.append(.init(n: n, to: address, held: email.heldUntil))
                }
            }
            // A few statements for the whole round, whatever its size.
            let texted = try await self.text(plan.texts, on: c)
            let pushed = try await self.push(plan.pushes, now: now, on: c)
            let emailed = try await self.email(plan.emails, now: now, on: c)
            try await c.query("UPDATE notifications SET route_at = NULL WHERE id = ANY(\(claimed.map(\.id)))", logger: self.logger)
            return (texted, pushed, emailed)
        }
        if texted { sender.wake() }
        if pushed { pusher.wake() }
        if emailed { emails.signal.fire() }
        return claimed.count == Self.batch
    }
}

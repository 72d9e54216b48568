import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

/// The messaging service: a worker of MDP service "messaging" that owns schema `messaging`:
/// SMS with consent, templates and delivery through the providers (`SmsSender`), voice calls
/// for alerts' care alerts (`VoiceCalls`), appointment reminders from dispatch's events
/// (`Reminders`), SOS chat (`SosChat`), patient–practitioner conversations (`Conversations`),
/// company announcements (`Announcements`), notifications on the channels people chose
/// (`Notifications`, `NotificationRouter`, `SosSmsAnswers`, `PushDevices`, `PushSender`), identity's account emails
/// (`Emails`), and the providers' webhooks.
public enum MessagingService {
    /// The MDP service name, and the name of its schema.
    public static let name = MessagingMethods.serviceName!

    /// Who the service is when it acts on its own (seeding templates, keyword replies,
    /// reminders, reading the webhook log): its subject in `created_by` columns and RLS.
    static let actor = "service:" + name
    /// The same, for tools outside the service (the bench reads the webhook inbox as it).
    public static var actorName: String { actor }

    /// The schema's own migrations (after the platform's).
    public static let migrations: [Migration] = MessagingMigrations.all

    /// Store, migrations, outbox, jobs, the SMS sender and the worker, configured from the
    /// environment (`MESSAGING_DATABASE_URL` or `DATABASE_URL`; `MessagingConfiguration`;
    /// `WorkerConfiguration` for the bus).
    public static func make(environment: [String: String] = ProcessInfo.processInfo.environment,
                            logger: Logger = Logger(label: "caremesh.messaging")) async throws -> ServiceHost {
        let configuration = try MessagingConfiguration(environment: environment)
        let client = try RPCClient.forService(name, environment: environment, logger: logger)
        let pushProviders = try configuration.pushProviders()
        let host = try await ServiceHost.make(service: name, migrations: migrations, environment: environment, logger: logger) { store, outbox in
            let sender = SmsSender(store: store, outbox: outbox, configuration: configuration, providers: configuration.smsProviders(), logger: logger)
            let desk = SmsDesk(store: store, configuration: configuration, sender: sender, logger: logger)
            let voice = VoiceCalls(store: store, outbox: outbox, configuration: configuration, logger: logger)
            let answers = SosSmsAnswers(store: store, client: client, sender: sender, configuration: configuration, logger: logger)
            let webhooks = Webhooks(store: store, outbox: outbox, configuration: configuration, sender: sender, voice: voice,
                                    answers: answers.signal, logger: logger)
            let reminders = Reminders(desk: desk, client: client, configuration: configuration, logger: logger)
            let notifications = Notifications(store: store, outbox: outbox, logger: logger)
            let directory = ContactDirectory(client: client)
            let emails = Emails(store: store, configuration: configuration, logger: logger)
            let pusher = PushSender(store: store, configuration: configuration, providers: pushProviders, logger: logger)
            let routing = NotificationRouter(store: store, directory: directory, desk: desk, sender: sender, pusher: pusher,
                                             emails: emails, configuration: configuration, logger: logger)
            let chat = SosChat(store: store, outbox: outbox, notifications: notifications, logger: logger)
            let conversations = Conversations(store: store, outbox: outbox, logger: logger)
            // Dispatch's events: appointments become reminders and open conversations, SOS make
            // their chats and tell the people concerned.
            let fromDispatch = EventConsumer(source: "dispatch", store: store, client: client, logger: logger,
                                             committed: { sender.wake(); routing.signal.fire() }) { event, c in
                try await conversations.apply(event, c)
                try await reminders.apply(event, c)
                try await chat.apply(event, c)
                try await notifications.apply(event, c)
            }
            // Identity's events that tell an account's holder something (a lock, their credentials).
            let fromIdentity = EventConsumer(source: "identity", types: NotificationRules.typesBySource["identity"], store: store, client: client,
                                             logger: logger, committed: { routing.signal.fire() }) { event, c in
                try await notifications.apply(event, c)
            }
            // Alerts' events that tell someone (a rule alert, a caregiver's care alert): a consumer
            // of its own, as the calls' consumer waits for a voice provider.
            let fromAlerts = EventConsumer(source: "alerts", name: "notifications", types: NotificationRules.typesBySource["alerts"], store: store,
                                           client: client, logger: logger, committed: { routing.signal.fire() }) { event, c in
                try await notifications.apply(event, c)
            }
            var background: [any Service] = [ClientLifetime(client), sender, voice, webhooks, fromDispatch, fromIdentity, fromAlerts, routing, answers,
                                             emails, pusher]
            // Care-alert calls need a voice provider: without one, alerts' requests stay in its
            // outbox until messaging runs with one (nothing is consumed, nothing is lost).
            if voice.provider != nil {
                // The calls are placed once the event's transaction committed them (at once, not
                // at the next poll).
                background.append(EventConsumer(source: "alerts", store: store, client: client, logger: logger,
                                                committed: { voice.signal.fire() }) { event, c in
                    try await voice.apply(event, c)
                })
            } else {
                logger.warning("no voice provider configured (MESSAGING_TWILIO_*): care-alert calls are not placed")
            }
            let retention = WebhookRetention(retention: configuration.webhookLogRetention, batch: configuration.retentionBatch,
                                             logger: logger)
            return ServiceHost.Parts(
                handlers: handlers(store: store, outbox: outbox, desk: desk, webhooks: webhooks, chat: chat,
                                   conversations: conversations, notifications: notifications, directory: directory, emails: emails,
                                   devices: PushDevices(store: store, logger: logger), logger: logger),
                jobs: [WebhookRetention.job: { job, c in try await retention.run(job, c) }],
                background: background,
                prepare: [{ c in
                    try await Templates.seed(on: c, logger: logger)
                    try await WebhookRetention.arm(on: c, logger: logger)
                }],
                queues: queues(on:logger:))
        }
        return host
    }

    /// What messaging has waiting (`Health/Backlog`): SMS due to go to a provider (or going),
    /// care-alert calls due to be placed, provider callbacks logged but not yet applied.
    static func queues(on c: PostgresConnection, logger: Logger) async throws -> [String: UInt64] {
        let rows = try await c.run(try Prepared<Waiting>(), logger: logger)
        guard let row = rows.first else { return [:] }
        let (sms, calls, webhooks) = try row.decode((Int64, Int64, Int64).self)
        return ["sms_due": UInt64(sms), "calls_due": UInt64(calls), "webhooks_waiting": UInt64(webhooks)]
    }

    /// The counts of `queues`, each on its partial index, with their owners' own conditions.
    enum Waiting: PreparedSQL {
        static let sql = """
            SELECT (SELECT count(*) FROM sms_messages WHERE \(SmsSender.dueSQL)),
                   (SELECT count(*) FROM voice_calls WHERE \(VoiceCalls.dueSQL)),
                   (SELECT count(*) FROM sms_webhook_logs WHERE \(Webhooks.waitingSQL))
            """
        static let types: [PostgresDataType] = []
    }

    static func handlers(store: Store, outbox: Outbox, desk: SmsDesk, webhooks: Webhooks, chat: SosChat,
                         conversations: Conversations, notifications: Notifications, directory: ContactDirectory, emails: Emails,
                         devices: PushDevices, logger: Logger)
        -> RPCHandlers
    {
        var h = RPCHandlers()
        h.register(MessagingMethods.sendSms) { r, ctx in try await desk.send(r, ctx) }
        h.register(MessagingMethods.getSms) { r, ctx in try await desk.get(r, ctx) }
        h.register(MessagingMethods.listSms) { r, ctx in try await desk.list(r, ctx) }
        h.register(MessagingMethods.cancelSms) { r, ctx in try await desk.cancel(r, ctx) }
        let consent = ConsentLedger(store: store, outbox: outbox, logger: logger)
        h.register(MessagingMethods.recordSmsConsent) { r, ctx in try await consent.record(r, ctx) }
        h.register(MessagingMethods.recordMySmsConsent) { r, ctx in try await consent.recordMine(r, ctx, directory: directory) }
        h.register(MessagingMethods.sendEmail) { r, ctx in try await emails.send(r, ctx) }
        h.register(MessagingMethods.getSmsConsent) { r, ctx in try await consent.get(r, ctx) }
        let templates = Templates(store: store, logger: logger)
        h.register(MessagingMethods.listSmsTemplates) { r, ctx in try await templates.list(r, ctx) }
        h.register(MessagingMethods.putSmsTemplate) { r, ctx in try await templates.put(r, ctx) }
        let inbox = WebhookInbox(webhooks)
        h.register(MessagingMethods.handleWebhook) { r, ctx in try await inbox.handle(r, ctx) }
        h.register(MessagingMethods.listWebhookLogs) { r, ctx in try await webhooks.list(r, ctx) }
        h.register(MessagingMethods.sendChatMessage) { r, ctx in try await chat.send(r, ctx) }
        h.register(MessagingMethods.listChatMessages) { r, ctx in try await chat.list(r, ctx) }
        h.register(MessagingMethods.markChatRead) { r, ctx in try await chat.markRead(r, ctx) }
        h.register(MessagingMethods.listChats) { r, ctx in try await chat.chats(r, ctx) }
        h.register(MessagingMethods.listConversations) { r, ctx in try await conversations.list(r, ctx) }
        h.register(MessagingMethods.postConversationMessage) { r, ctx in try await conversations.post(r, ctx) }
        h.register(MessagingMethods.listConversationMessages) { r, ctx in try await conversations.messages(r, ctx) }
        h.register(MessagingMethods.listConversationAudit) { r, ctx in try await conversations.auditTrail(r, ctx) }
        let announcements = Announcements(store: store, outbox: outbox, logger: logger)
        h.register(MessagingMethods.publishAnnouncement) { r, ctx in try await announcements.publish(r, ctx) }
        h.register(MessagingMethods.retireAnnouncement) { r, ctx in try await announcements.retire(r, ctx) }
        h.register(MessagingMethods.listAnnouncements) { r, ctx in try await announcements.list(r, ctx) }
        h.register(MessagingMethods.listMyNotifications) { r, ctx in try await notifications.listMine(r, ctx) }
        h.register(MessagingMethods.markNotificationsRead) { r, ctx in try await notifications.markRead(r, ctx) }
        h.register(MessagingMethods.getMyNotificationSettings) { _, ctx in try await notifications.getSettings(ctx) }
        h.register(MessagingMethods.putMyNotificationSettings) { r, ctx in try await notifications.putSettings(r, ctx) }
        h.register(MessagingMethods.registerMyPushDevice) { r, ctx in try await devices.register(r, ctx) }
        h.register(MessagingMethods.listMyPushDevices) { _, ctx in try await devices.list(ctx) }
        h.register(MessagingMethods.removeMyPushDevice) { r, ctx in try await devices.remove(r, ctx) }
        h.register(MessagingMethods.createNotificationStreamTicket) { r, ctx in try await notifications.createTicket(r, ctx) }
        h.register(MessagingMethods.openNotificationStream) { r, ctx in try await notifications.openStream(r, ctx) }
        h.register(MessagingMethods.redeemNotificationStreamTicket) { r, ctx in try await notifications.redeemTicket(r, ctx) }
        h.register(MessagingMethods.replayNotifications) { r, ctx in try await notifications.replay(r, ctx) }
        return h
    }
}

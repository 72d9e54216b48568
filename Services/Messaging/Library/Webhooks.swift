import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import SwiftProtobuf

/// Applies logged webhooks.
///
/// `log` writes a flush of arriving webhooks. When nothing logged earlier is still waiting,
/// it applies them in the same transaction: each is applied once (`webhook_applied`: a repeat
/// is marked a duplicate), and its effects, its events and its log row (inserted already
/// processed, with its outcome) are committed together: one transaction per flush, the row
/// written once. Otherwise, or if applying fails, the rows are logged unprocessed and the
/// processor (`run`) applies them in order of arrival, a batch per transaction. A batch that
/// fails there is retried one row at a time, so one bad row cannot hold the others back; a
/// failed row is tried again after a backoff, and one that failed 5 times keeps its error and
/// is left for an admin. Either way webhooks are applied in the order they were logged (an
/// opt-out and the opt-in after it stay in that order).
public final class Webhooks: Service, Sendable {
    let store: Store
    let outbox: Outbox
    let reader: WebhookReader
    let sender: SmsSender
    let voice: VoiceCalls
    let configuration: MessagingConfiguration
    let logger: Logger
    let signal = ChangeSignal()

    /// Rows applied per transaction, and the tries a row gets: the n-th failure waits
    /// `retryBase · 2^(n-1)` before the next (0.5, 1, 2, 4 s).
    static let batchSize = 200
    public static let maxAttempts = 5
    /// SQL: a logged callback still waiting to be applied (or tried again); the processor's
    /// claim, the retention (which spares these) and `Health/Backlog` share it.
    static let waitingSQL = "NOT processed AND response_status = 200 AND attempts < \(maxAttempts)"
    static let retryBase = Duration.milliseconds(500)

    /// Wakes the worker of SOS answers texted back (`SosSmsAnswers`).
    let answers: ChangeSignal

    init(store: Store, outbox: Outbox, configuration: MessagingConfiguration, sender: SmsSender, voice: VoiceCalls,
         answers: ChangeSignal = ChangeSignal(), logger: Logger) {
        self.store = store
        self.answers = answers
        self.outbox = outbox
        self.voice = voice
        self.configuration = configuration
        self.reader = WebhookReader(twilioAuthToken: configuration.twilio?.authToken, orangeWebhookKey: configuration.orange?.webhookKey)
        self.sender = sender
        self.logger = logger
    }

    /// After a commit that queued replies or answers (`Outcome.wakeSender`): the sender and the
    /// answers' worker look now.
    func wakeWorkers() {
        sender.wake()
        answers.fire()
    }

    static let twiml = Data(#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#.utf8)

    /// What the provider is answered when its webhook arrives (and the log keeps).
    struct Answer {
        var status: Int
        var body = Data()
        var contentType = "text/plain"
        var error: String?
    }

    /// What applying a logged webhook came to (its log row's outcome).
    struct Outcome {
        var duplicate = false
        var error: String?
        var related: UUID?
        /// A reply or an SOS answer was queued: the sender and the answers' worker should look now.
        var wakeSender = false
    }

    // MARK: - Logging

    /// Logs one flush of arriving webhooks (`WebhookInbox`), as the service (the log's
    /// row-level security): applied in the same transaction when nothing earlier waits, else
    /// unprocessed for the processor. Whether each was logged.
    func log(_ rows: [LogRow]) async throws -> [Bool] {
        if rows.contains(where: { $0.read != nil }) {
            do {
                let applied = try await store.withActor(MessagingService.actor, roles: ["service"]) { c -> Bool? in
                    // Anything logged earlier and still waiting goes first: these wait behind it.
                    guard try await !self.inboxWaits(on: c) else { return nil }
                    var rows = rows
                    var events = PendingEvents()
                    let applicable = rows.indices.filter { rows[$0].read != nil }
                    let outcomes = try await self.apply(applicable.map { (rows[$0].id, rows[$0].provider, rows[$0].read) },
                                                        events: &events, on: c)
                    for (i, o) in zip(applicable, outcomes) { rows[i].applied(o) }
                    try await self.insert(rows, on: c)
                    try await self.outbox.append(events, on: c)
                    return outcomes.contains { $0.wakeSender }
                }
                if let wake = applied {
                    if wake { wakeWorkers() }
                    return rows.map { _ in true }
                }
            } catch {
                logger.warning("webhooks not applied on arrival; queued for the processor",
                               metadata: ["error.kind": "\(RPCError.loggableKind(of: error))", "count": "\(rows.count)"])
            }
        }
        let written = try await queue(rows)
        if zip(rows, written).contains(where: { $0.read != nil && $1 }) { signal.fire() }
        return written
    }

    /// Whether a logged webhook waits to be applied (or tried again).
    private func inboxWaits(on c: PostgresConnection) async throws -> Bool {
        try await c.run(Prepared<InboxWaits>(), logger: logger).first?.decode(Bool.self) ?? false
    }

    /// Logs rows unprocessed, for the processor: one statement, one commit. If that fails, each
    /// row alone, so one row the database refuses fails only its own request. Whether each was
    /// written.
    private func queue(_ rows: [LogRow]) async throws -> [Bool] {
        func write(_ rows: [LogRow]) async throws {
            _ = try await store.withActor(MessagingService.actor, roles: ["service"]) { c in try await self.insert(rows, on: c) }
        }
        do {
            try await write(rows)
            return rows.map { _ in true }
        } catch where rows.count > 1 {
            var written: [Bool] = []
            for row in rows {
                do {
                    try await write([row])
                    written.append(true)
                } catch {
                    logger.error("webhook not logged", metadata: ["error.kind": "\(RPCError.loggableKind(of: error))"])
                    written.append(false)
                }
            }
            return written
        }
    }

    private func insert(_ rows: [LogRow], on c: PostgresConnection) async throws {
        try await c.run(Prepared<InsertLogs>(rows.map(\.id), rows.map(\.kind), rows.map(\.provider), rows.map(\.type), rows.map(\.url),
                                             rows.map(\.headers), rows.map(\.body), rows.map(\.raw), rows.map(\.ip), rows.map(\.key),
                                             rows.map(\.error), rows.map(\.status), rows.map(\.response), rows.map(\.processed),
                                             rows.map(\.duplicate), rows.map { $0.related ?? .zero }), logger: logger)
    }

    // MARK: - Processing

    public func run() async throws {
        await runRounds(signal: signal, pollInterval: configuration.pollInterval, logger: logger, what: "webhook") {
            try await self.processOnce() >= Self.batchSize
        }
    }

    /// A logged webhook waiting to be applied.
    struct Waiting: Sendable {
        var id: UUID
        var request: Caremesh_Messaging_V1_WebhookRequest
        var attempts: Int32
    }

    /// One round: claims waiting rows in order of arrival and applies them in one transaction
    /// (or, if that fails, each in its own). Returns how many it claimed.
    @discardableResult
    func processOnce() async throws -> Int {
        let wake: Bool
        let claimed: [Waiting]
        do {
            (claimed, wake) = try await store.withActor(MessagingService.actor, roles: ["service"]) { c in
                let batch = try await self.claim(limit: Self.batchSize, on: c)
                return (batch, try await self.apply(batch, on: c))
            }
        } catch {
            // One of them (or the database) failed: each alone, so the others still go through.
            logger.warning("webhook batch failed; applying one by one", metadata: ["error.kind": "\(RPCError.loggableKind(of: error))"])
            (claimed, wake) = try await processOneByOne()
        }
        if wake { wakeWorkers() }
        return claimed.count
    }

    private func processOneByOne() async throws -> ([Waiting], Bool) {
        var all: [Waiting] = []
        var wake = false
        while all.count < Self.batchSize {
            let (row, woke) = try await store.withActor(MessagingService.actor, roles: ["service"]) { c -> (Waiting?, Bool) in
                guard let row = try await self.claim(limit: 1, on: c).first else { return (nil, false) }
                return (row, try await self.applyOrRecordFailure(row, on: c))
            }
            guard let row else { break }
            all.append(row)
            wake = wake || woke
        }
        return (all, wake)
    }

    /// Applies `row` under a savepoint; if that fails, records the failure on its log row.
    private func applyOrRecordFailure(_ row: Waiting, on c: PostgresConnection) async throws -> Bool {
        try await c.query("SAVEPOINT webhook", logger: logger)
        do {
            let wake = try await apply([row], on: c)
            try await c.query("RELEASE SAVEPOINT webhook", logger: logger)
            return wake
        } catch {
            try await c.query("ROLLBACK TO SAVEPOINT webhook", logger: logger)
            let kind = RPCError.loggableKind(of: error)
            logger.warning("webhook not applied", metadata: ["webhook.log_id": "\(row.id)", "error.kind": "\(kind)",
                                                             "attempts": "\(row.attempts + 1)"])
            try await c.query("""
                UPDATE sms_webhook_logs SET attempts = attempts + 1, processing_error = \("not applied: \(kind)"),
                    retry_at = now() + \(Self.retryBase.seconds) * interval '1 second' * 2 ^ attempts
                WHERE id = \(row.id)
                """, logger: logger)
            return false
        }
    }

    private func claim(limit: Int, on c: PostgresConnection) async throws -> [Waiting] {
        let rows = try await c.query("""
            SELECT id, kind, provider, request_url, request_headers::text, raw_body, attempts FROM sms_webhook_logs
            WHERE \(unescaped: Self.waitingSQL) AND (retry_at IS NULL OR retry_at <= now())
            ORDER BY received_seq LIMIT \(limit) FOR UPDATE SKIP LOCKED
            """, logger: logger)
        var out: [Waiting] = []
        for try await (id, kind, provider, url, headers, raw, attempts) in rows.decode((UUID, String, String, String, String, ByteBuffer, Int32).self) {
            var r = Caremesh_Messaging_V1_WebhookRequest()
            r.kind = kind
            r.provider = provider
            r.url = url
            let fields = (try? JSONSerialization.jsonObject(with: Data(headers.utf8))) as? [String: String] ?? [:]
            r.headers = fields.map { name, value in .with { $0.name = name; $0.value = value } }
            r.body = Data(buffer: raw)
            out.append(Waiting(id: id, request: r, attempts: attempts))
        }
        return out
    }

    /// Applies claimed rows in order and records each outcome on its log row. Returns whether
    /// a reply was queued (the sender should look now).
    private func apply(_ batch: [Waiting], on c: PostgresConnection) async throws -> Bool {
        guard !batch.isEmpty else { return false }
        // Authenticated when they arrived; read again from the log (the same pure reader).
        var events = PendingEvents()
        let outcomes = try await apply(batch.map { ($0.id, $0.request.provider, try? reader.read($0.request)) }, events: &events, on: c)
        try await c.query("""
            UPDATE sms_webhook_logs l SET processed = true, duplicate = u.duplicate, processing_error = nullif(u.error, ''),
                related_sms_message_id = nullif(u.related, \(UUID.zero)), attempts = l.attempts + 1
            FROM unnest(\(batch.map(\.id)), \(outcomes.map(\.duplicate)), \(outcomes.map { $0.error ?? "" }),
                        \(outcomes.map { $0.related ?? .zero })) AS u(id, duplicate, error, related)
            WHERE l.id = u.id
            """, logger: logger)
        try await outbox.append(events, on: c)
        return outcomes.contains { $0.wakeSender }
    }

    /// Applies webhooks (their log ids, providers and reads) in order, in the caller's
    /// transaction: what each came to, and the events to publish with them.
    private func apply(_ batch: [(id: UUID, provider: String, read: WebhookReader.Read?)], events: inout PendingEvents,
                       on c: PostgresConnection) async throws -> [Outcome] {
        // Which are news: one statement claims every key (in order of arrival, so of two
        // repeats in the batch the first is applied).
        let readable = batch.filter { $0.read != nil }
        var fresh = Set<UUID>()
        if !readable.isEmpty {
            for row in try await c.run(Prepared<ClaimKeys>(readable.map(\.provider), readable.map { $0.read!.idempotencyKey },
                                                           readable.map(\.id)), logger: logger) {
                fresh.insert(try row.decode(UUID.self))
            }
        }
        // The messages repeated status callbacks name (by our id), to relate their log rows.
        var repeatedIDs: [UUID] = []
        for row in batch where !fresh.contains(row.id) {
            if case .smsStatus(let id?, _, _, _, _)? = row.read?.event { repeatedIDs.append(id) }
        }
        var known = Set<UUID>()
        if !repeatedIDs.isEmpty {
            for row in try await c.run(Prepared<KnownMessages>(repeatedIDs), logger: logger) { known.insert(try row.decode(UUID.self)) }
        }
        // The messages the new status callbacks name, locked, for one fold of them all.
        var statuses = try await loadMessages(batch.compactMap { row in
            guard fresh.contains(row.id), case .smsStatus(let id, let providerID, _, _, _)? = row.read?.event else { return nil }
            return (id, row.provider, providerID)
        }, on: c)
        var outcomes: [Outcome] = []
        for row in batch {
            guard let read = row.read else {
                outcomes.append(Outcome(error: "no longer readable"))
                continue
            }
            let provider = row.provider
            if fresh.contains(row.id) {
                let o: Outcome
                switch read.event {
                case .smsStatus(let id, let providerID, let status, let raw, let errorCode):
                    let result = statuses.apply(id: id, providerID: providerID, provider: provider, status: status, raw: raw, errorCode: errorCode)
                    o = try Self.outcome(result, raw: raw, statuses: statuses, provider: provider, events: &events)
                case .inbound(let providerID, let from, _, let body):
                    o = try await applyInbound(providerID: providerID, from: from, body: body, provider: provider, events: &events, on: c)
                case .callStatus(let id, let providerID, let status, let raw, let duration):
                    o = try await voice.applyStatus(id: id, providerCallID: providerID, status: status, raw: raw, duration: duration,
                                                    events: &events, on: c)
                case .callKey(let id, let providerID, let digits):
                    // Another key accepts nothing: the call goes on to its end.
                    o = digits != VoiceCalls.acceptKey ? Outcome()
                        : try await voice.applyStatus(id: id, providerCallID: providerID, status: .accepted, raw: "key \(digits)",
                                                      duration: nil, events: &events, on: c)
                }
                outcomes.append(o)
            } else {
                var o = Outcome(duplicate: true)
                if case .smsStatus(let id?, _, _, _, _) = read.event, known.contains(id) { o.related = id }
                outcomes.append(o)
            }
        }
        try await writeChanges(statuses, on: c)
        return outcomes
    }

    // MARK: - Status callbacks, a batch at a time

    /// Loads and locks (in id order, so concurrent processors cannot deadlock) the messages
    /// that callbacks name, by our id or by the provider's. Two index lookups joined by
    /// `UNION ALL`: an `OR` of the two conditions scanned the whole table (9.5 ms per batch at
    /// 18k messages, and growing with it).
    private func loadMessages(_ refs: [(id: UUID?, provider: String, providerID: String?)], on c: PostgresConnection) async throws
        -> SmsStatusBatch
    {
        guard !refs.isEmpty else { return SmsStatusBatch([]) }
        let ids = refs.compactMap(\.id)
        let byProvider = refs.filter { $0.id == nil && $0.providerID != nil }
        let rows = try await c.run(Prepared<LoadMessages>(ids, byProvider.map(\.provider), byProvider.map { $0.providerID! }), logger: logger)
        var messages: [SmsStatusBatch.Message] = []
        for row in rows {
            let (id, status, correlator, patient, callbackData, provider, providerID) =
                try row.decode((UUID, String, String, UUID?, String?, String?, String?).self)
            guard let status = SmsStatus(rawValue: status) else { continue }
            messages.append(.init(id: id, status: status, correlator: correlator, patient: patient, callbackData: callbackData,
                                  provider: provider, providerMessageID: providerID))
        }
        return SmsStatusBatch(messages)
    }

    /// A callback's log outcome, and its event when it moved its message.
    static func outcome(_ result: SmsStatusBatch.Result, raw: String, statuses: SmsStatusBatch, provider: String,
                        events: inout PendingEvents) throws -> Outcome {
        switch result {
        case .unknownMessage:
            return Outcome(error: "no such message")
        case .unknownStatus(let id):
            return Outcome(error: "status \(raw) is not one CareMesh knows", related: id)
        case .stale(let id):
            // Stale or repeated news: logged, not applied.
            return Outcome(related: id)
        case .moved(let id, let from, let to):
            let m = statuses.messages[id]!
            try events.add(SmsEvents.statusChanged(id: id, correlator: m.correlator, status: to, previous: from, patient: m.patient,
                                                   callbackData: m.callbackData, provider: provider), key: id.text)
            return Outcome(related: id)
        }
    }

    /// Writes the batch's changes: one statement for all the messages that moved.
    private func writeChanges(_ statuses: SmsStatusBatch, on c: PostgresConnection) async throws {
        let changes = statuses.changed.map { ($0, statuses.changes[$0]!) }
        guard !changes.isEmpty else { return }
        try await c.run(Prepared<WriteChanges>(changes.map(\.0), changes.map(\.1.status.rawValue), changes.map(\.1.raw),
                                               changes.map { $0.1.errorCode.map { "error \($0)" } ?? "" }, changes.map(\.1.provider),
                                               changes.map { $0.1.providerMessageID ?? "" }, changes.map(\.1.sent), changes.map(\.1.delivered),
                                               changes.map(\.1.failed), changes.map(\.1.cancelled),
                                               changes.map { c in c.1.errorCode.map { "\(c.1.provider) error \($0)" } ?? "" }),
                        logger: logger)
    }

}

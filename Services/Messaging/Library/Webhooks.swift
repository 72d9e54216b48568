import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import SwiftProtobuf

/// What one webhook says, once read and authenticated.
enum WebhookEvent: Sendable, Equatable {
    /// A status callback or delivery receipt for one of our messages: our id when the callback
    /// carries it, else the provider's id.
    case smsStatus(messageID: UUID?, providerMessageID: String?, status: SmsStatus?, raw: String, errorCode: String?)
    /// A text from a person to one of our numbers.
    case inbound(providerMessageID: String, from: String, to: String, body: String)
    /// A voice call's status: our call id when the callback carries it, and the provider's.
    case callStatus(callID: UUID?, providerCallID: String, status: VoiceCallStatus?, raw: String, duration: Int?)
    /// A key a person pressed at a call's accept prompt (Twilio's `<Gather>` action).
    case callKey(callID: UUID?, providerCallID: String, digits: String)
}

/// Reads a webhook request: its provider's authentication, its kind of event and the key that
/// makes applying it idempotent. Pure: no I/O, tested table by table.
struct WebhookReader: Sendable {
    let twilioAuthToken: String?
    let orangeWebhookKey: String?

    enum Failure: Error, Equatable {
        /// No route for this kind and provider (404).
        case unknownRoute
        /// The signature or key is missing or wrong (403).
        case unauthenticated
        /// Authenticated, but not a request we can read (400).
        case unreadable(String)
    }

    struct Read: Equatable {
        var type: String
        var event: WebhookEvent
        var idempotencyKey: String
        /// The body's fields, when it was a form (the log keeps them as JSON).
        var form: Form?
        /// What the provider is answered with, when not the default (TwiML that goes on with a call).
        var reply: Data?
    }

    /// A form body's fields, in order.
    struct Form: Equatable {
        var fields: [(name: String, value: String)]

        static func == (a: Form, b: Form) -> Bool { a.fields.elementsEqual(b.fields) { $0 == $1 } }

        /// As a JSON object (of a repeated name, the last value).
        var json: String {
            var object: [String: String] = [:]
            for (name, value) in fields { object[name] = value }
            return JSONText.object(object)
        }
    }

    /// A header's value by its name, in any case (an ASCII comparison: header names are ASCII).
    static func header(_ name: String, in headers: [Caremesh_Messaging_V1_HttpHeader]) -> String? {
        func lower(_ b: UInt8) -> UInt8 { b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") ? b | 0x20 : b }
        return headers.first { h in
            h.name.utf8.count == name.utf8.count && zip(h.name.utf8, name.utf8).allSatisfy { lower($0) == lower($1) }
        }?.value
    }

    /// A query parameter of `url`, percent-decoded (as `URLComponents.queryItems` gives it; the
    /// first of a repeated name), read without building the whole URL.
    static func query(_ name: String, in url: String) -> String? {
        let beforeFragment = url.utf8.prefix { $0 != UInt8(ascii: "#") }
        guard let start = beforeFragment.firstIndex(of: UInt8(ascii: "?")) else { return nil }
        // A malformed escape is kept as it is.
        func decoded(_ bytes: Substring.UTF8View.SubSequence) -> String {
            let raw = String(decoding: bytes, as: UTF8.self)
            return bytes.contains(UInt8(ascii: "%")) ? raw.removingPercentEncoding ?? raw : raw
        }
        for item in beforeFragment[beforeFragment.index(after: start)...].split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            let parts = item.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            guard decoded(parts[0]) == name else { continue }
            return parts.count > 1 ? decoded(parts[1]) : ""
        }
        return nil
    }

    func read(_ r: Caremesh_Messaging_V1_WebhookRequest) throws(Failure) -> Read {
        switch (r.kind, r.provider) {
        case ("sms", "twilio"): return try twilioSms(r)
        case ("sms", "orange"): return try orangeSms(r)
        case ("voice", "twilio"): return try twilioVoice(r)
        default: throw .unknownRoute
        }
    }

    /// Twilio's signed form body: its pairs, once the signature over the URL and them holds.
    func twilioForm(_ r: Caremesh_Messaging_V1_WebhookRequest) throws(Failure) -> [(name: String, value: String)] {
        guard let token = twilioAuthToken, let signature = Self.header("X-Twilio-Signature", in: r.headers),
              let text = String(data: r.body, encoding: .utf8), let form = FormEncoding.decode(text),
              TwilioSignature.isValid(signature, authToken: token, url: r.url, params: form) else { throw .unauthenticated }
        return form
    }

    func twilioVoice(_ r: Caremesh_Messaging_V1_WebhookRequest) throws(Failure) -> Read {
        let form = try twilioForm(r)
        func field(_ name: String) -> String? { form.last { $0.name == name }?.value }
        guard let sid = field("CallSid"), let status = field("CallStatus") else { throw .unreadable("not a call status callback") }
        let answeredBy = field("AnsweredBy")
        let ours = Self.query("c", in: r.url).flatMap(UUID.init(uuidString:))
        if let digits = field("Digits") {
            // The call's <Gather> posts the key here; Twilio says what the TwiML answer says next.
            return Read(type: "call_key", event: .callKey(callID: ours, providerCallID: sid, digits: digits),
                        idempotencyKey: "call:\(sid):key:\(digits)", form: Form(fields: form),
                        reply: TwilioVoiceProvider.keyReply(accepted: digits == VoiceCalls.acceptKey))
        }
        let mapped = TwilioCallStatus.status(status, answeredBy: answeredBy).flatMap(VoiceCallStatus.init)
        return Read(type: "call_status",
                    event: .callStatus(callID: ours, providerCallID: sid, status: mapped, raw: status,
                                       duration: field("CallDuration").flatMap(Int.init)),
                    idempotencyKey: "call:\(sid):\(status):\(answeredBy ?? "")", form: Form(fields: form))
    }

    func twilioSms(_ r: Caremesh_Messaging_V1_WebhookRequest) throws(Failure) -> Read {
        let form = try twilioForm(r)
        func field(_ name: String) -> String? { form.last { $0.name == name }?.value }
        let sid = field("MessageSid") ?? field("SmsSid")
        if let status = field("MessageStatus") ?? field("SmsStatus"), let sid, field("Body") == nil {
            let ours = Self.query("m", in: r.url).flatMap(UUID.init(uuidString:))
            return Read(type: "delivery_status",
                        event: .smsStatus(messageID: ours, providerMessageID: sid, status: SmsStatus(twilio: status), raw: status,
                                          errorCode: field("ErrorCode")),
                        idempotencyKey: "status:\(sid):\(status.lowercased())", form: Form(fields: form))
        }
        if let sid, let from = field("From"), let to = field("To"), let body = field("Body") {
            return Read(type: "inbound_message", event: .inbound(providerMessageID: sid, from: from, to: to, body: body),
                        idempotencyKey: "inbound:\(sid)", form: Form(fields: form))
        }
        throw .unreadable("neither a status callback nor an inbound message")
    }

    func orangeSms(_ r: Caremesh_Messaging_V1_WebhookRequest) throws(Failure) -> Read {
        // Orange signs nothing: the notifyURL we gave carries a secret key.
        guard let expected = orangeWebhookKey,
              let key = Self.query("key", in: r.url),
              TwilioSignature.constantTimeEqual(key, expected) else { throw .unauthenticated }
        if let receipt = try? JSONDecoder().decode(OrangeSms.DeliveryReceipt.self, from: r.body) {
            let n = receipt.deliveryInfoNotification
            guard let data = n.callbackData, let id = UUID(uuidString: data) else { throw .unreadable("the receipt names no message") }
            return Read(type: "delivery_status",
                        event: .smsStatus(messageID: id, providerMessageID: nil, status: receipt.status, raw: n.deliveryInfo.deliveryStatus,
                                          errorCode: nil),
                        idempotencyKey: "status:\(id.text):\(n.deliveryInfo.deliveryStatus)")
        }
        if let inbound = try? JSONDecoder().decode(OrangeInbound.self, from: r.body) {
            let m = inbound.inboundSMSMessageNotification.inboundSMSMessage
            return Read(type: "inbound_message",
                        event: .inbound(providerMessageID: m.messageId, from: OrangeSms.e164(m.senderAddress),
                                        to: OrangeSms.e164(m.destinationAddress), body: m.message),
                        idempotencyKey: "inbound:\(m.messageId)")
        }
        throw .unreadable("neither a delivery receipt nor an inbound message")
    }

    /// Orange's inbound SMS notification.
    struct OrangeInbound: Decodable {
        struct Message: Decodable {
            var destinationAddress: String
            var senderAddress: String
            var message: String
            var messageId: String
        }
        struct Notification: Decodable { var inboundSMSMessage: Message }
        var inboundSMSMessageNotification: Notification
    }
}

/// Provider webhooks, handed whole by the router's HTTP edge, arrive here.
///
/// The log is the inbox. `handle` reads the request (authentication, kind, idempotency key;
/// pure), writes its log row (headers, body, source address, the answer) and answers once that
/// row is committed: an acknowledged webhook is never lost. Rows from concurrent requests are
/// written together (`GroupCommit`: one flush at a time, in order of arrival), by
/// `Webhooks.log`, which usually applies them in the same transaction.
final class WebhookInbox: Sendable {
    let webhooks: Webhooks
    let rows: GroupCommit<Webhooks.LogRow, Bool>

    init(_ webhooks: Webhooks) {
        self.webhooks = webhooks
        rows = GroupCommit(maxBatch: 256) { rows in try await webhooks.log(rows) }
    }

    func handle(_ r: Caremesh_Messaging_V1_WebhookRequest, _ context: RPCContext) async throws -> Caremesh_Messaging_V1_WebhookResponse {
        var answer = Webhooks.Answer(status: 200)
        var read: WebhookReader.Read?
        do {
            read = try webhooks.reader.read(r)
            if r.provider == "twilio" {
                answer.body = read?.reply ?? Webhooks.twiml
                answer.contentType = "text/xml"
            }
        } catch {
            switch error {
            case .unknownRoute: answer = .init(status: 404, error: "no webhook route for this kind and provider")
            case .unauthenticated: answer = .init(status: 403, error: "signature missing or invalid")
            case .unreadable(let why): answer = .init(status: 400, error: why)
            }
            webhooks.logger.notice("webhook refused", metadata: ["webhook.provider": "\(r.provider)", "webhook.kind": "\(r.kind)",
                                                                 "http.status": "\(answer.status)"])
        }
        // Not logged, not answered: the provider tries again.
        guard try await rows.submit(Webhooks.LogRow(r, read: read, answer)) else {
            throw RPCError(.internal, "the webhook could not be logged")
        }
        var response = Caremesh_Messaging_V1_WebhookResponse()
        response.status = UInt32(answer.status)
        response.contentType = answer.contentType
        response.body = answer.body
        return response
    }
}

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

    /// One webhook's log row as it arrived, with the answer it gets and, once applied, its
    /// outcome.
    struct LogRow: Sendable {
        /// Time-ordered: the log only grows, and its key's index stays hot at its right edge.
        var id = UUID.timeOrdered()
        var kind, provider, type, url, headers, body: String
        var raw: ByteBuffer
        var ip: String
        var key: String
        var error: String
        var status: Int32
        var response: String
        /// What the request says, if it is authentic and readable (else it is only logged).
        var read: WebhookReader.Read?
        var processed = false
        var duplicate = false
        var related: UUID?

        /// `s` without NULs (PostgreSQL's text cannot hold one).
        static func text(_ s: String) -> String { s.utf8.contains(0) ? s.replacingOccurrences(of: "\0", with: "\u{FFFD}") : s }

        init(_ r: Caremesh_Messaging_V1_WebhookRequest, read: WebhookReader.Read?, _ o: Answer) {
            var headers: [String: String] = [:]
            for h in r.headers { headers[h.name.lowercased()] = h.value }
            func name(_ s: String) -> String { s.isEmpty ? "unknown" : String(s.prefix(20)).lowercased().filter(\.isLetter) }
            kind = name(r.kind)
            provider = name(r.provider)
            type = read?.type ?? "unknown"
            url = Self.text(r.url)
            self.headers = JSONText.object(headers)
            body = read?.form?.json ?? Webhooks.bodyAsJSON(r.body)
            raw = ByteBuffer(bytes: r.body)
            ip = Self.text(String(r.sourceAddress.prefix(64)))
            key = read?.idempotencyKey ?? ""
            error = o.error ?? ""
            status = Int32(o.status)
            response = String(decoding: o.body, as: UTF8.self)
            self.read = read
        }

        /// Records what applying it came to.
        mutating func applied(_ o: Outcome) {
            processed = true
            duplicate = o.duplicate
            error = o.error ?? ""
            related = o.related
        }
    }

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

    // The statements of a flush, prepared: a flush runs each once, hundreds of times a second,
    // and parsing and planning them each time cost PostgreSQL more than running them.

    enum InboxWaits: PreparedSQL {
        static let sql = """
            SELECT EXISTS (SELECT 1 FROM sms_webhook_logs WHERE \(Webhooks.waitingSQL))
            """
        static let types: [PostgresDataType] = []
    }

    enum InsertLogs: PreparedSQL {
        static let sql = """
            INSERT INTO sms_webhook_logs (id, kind, provider, webhook_type, request_url, request_headers, request_body, raw_body,
                                          request_ip, idempotency_key, processing_error, response_status, response_body,
                                          processed, duplicate, related_sms_message_id, attempts)
            SELECT id, kind, provider, type, url, headers::jsonb, body::jsonb, raw, nullif(ip, ''), nullif(key, ''),
                   nullif(error, ''), status, response, processed, duplicate,
                   nullif(related, '00000000-0000-0000-0000-000000000000'::uuid), processed::int
            FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                WITH ORDINALITY AS r(id, kind, provider, type, url, headers, body, raw, ip, key, error, status, response,
                                     processed, duplicate, related, n)
            ORDER BY n
            """
        static let types: [PostgresDataType] = [.uuidArray, .textArray, .textArray, .textArray, .textArray, .textArray, .textArray,
                                                .byteaArray, .textArray, .textArray, .textArray, .int4Array, .textArray, .boolArray,
                                                .boolArray, .uuidArray]
    }

    enum ClaimKeys: PreparedSQL {
        static let sql = """
            INSERT INTO webhook_applied (provider, idempotency_key, log_id)
            SELECT provider, key, id FROM unnest($1::text[], $2::text[], $3::uuid[]) WITH ORDINALITY AS r(provider, key, id, n)
            ORDER BY n
            ON CONFLICT DO NOTHING RETURNING log_id
            """
        static let types: [PostgresDataType] = [.textArray, .textArray, .uuidArray]
    }

    enum KnownMessages: PreparedSQL {
        static let sql = "SELECT id FROM sms_messages WHERE id = ANY($1)"
        static let types: [PostgresDataType] = [.uuidArray]
    }

    /// See `loadMessages`.
    enum LoadMessages: PreparedSQL {
        static let sql = """
            SELECT id, status, client_correlator, patient_id, callback_data, provider, provider_message_id FROM sms_messages
            WHERE id IN (SELECT unnest($1::uuid[])
                         UNION ALL
                         SELECT m.id FROM unnest($2::text[], $3::text[]) AS r(provider, provider_id)
                         JOIN sms_messages m ON m.provider = r.provider AND m.provider_message_id = r.provider_id)
            ORDER BY id FOR UPDATE
            """
        static let types: [PostgresDataType] = [.uuidArray, .textArray, .textArray]
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

    /// The log, newest first, for admins: what came and what became of it (headers and
    /// bodies stay in the database). Read under row-level security as the acting admin.
    func list(_ r: Caremesh_Messaging_V1_ListWebhookLogsRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_ListWebhookLogsResponse
    {
        let caller = try context.requireRole(SmsDesk.admins)
        var v = FieldViolations()
        let message = v.optionalUUID(r.relatedSmsMessageID, "related_sms_message_id")
        let page = Page(size: r.pageSize, token: r.pageToken, into: &v)
        try v.throwIfAny()
        return try await store.withActor(caller.subject, roles: caller.roles) { c in
            let rows = try await c.query("""
                SELECT id, kind, provider, webhook_type, processed, coalesce(processing_error, ''), related_sms_message_id, response_status,
                       extract(epoch FROM created_at)::float8, \(unescaped: Page.micros("created_at"))
                FROM sms_webhook_logs
                WHERE (\(message)::uuid IS NULL OR related_sms_message_id = \(message)) AND \(after: page, time: "created_at", id: "id")
                ORDER BY created_at DESC, id DESC LIMIT \(page.limit)
                """, logger: self.logger)
            let (logs, token) = try await page.collect(rows.decode((UUID, String, String, String, Bool, String, UUID?, Int32, Double, Int64).self)) {
                var l = Caremesh_Messaging_V1_WebhookLog()
                l.id = $0.0.text
                l.kind = $0.1
                l.provider = $0.2
                l.webhookType = $0.3
                l.processed = $0.4
                l.processingError = $0.5
                l.relatedSmsMessageID = $0.6?.text ?? ""
                l.responseStatus = UInt32($0.7)
                l.createdAt = Google_Protobuf_Timestamp(epochSeconds: $0.8)
                return (l, $0.9, $0.0)
            }
            var response = Caremesh_Messaging_V1_ListWebhookLogsResponse()
            response.logs = logs
            response.nextPageToken = token
            return response
        }
    }

    /// The body as JSON: itself if it is JSON, a form body as an object of its fields, else a
    /// note that it was neither.
    static func bodyAsJSON(_ body: Data) -> String {
        // Only an object or array can be JSON here (a form body never starts with either).
        let first = body.first { !" \t\r\n".utf8.contains($0) }
        if first == UInt8(ascii: "{") || first == UInt8(ascii: "["), (try? JSONSerialization.jsonObject(with: body)) != nil,
           let text = String(data: body, encoding: .utf8) {
            // jsonb refuses \u0000 (the raw body keeps it).
            return text.utf8.contains(0) || text.contains("\\u0000") ? #"{"unreadable":true}"# : text
        }
        if let text = String(data: body, encoding: .utf8), let form = FormEncoding.decode(text) {
            return WebhookReader.Form(fields: form).json
        }
        return #"{"unreadable":true}"#
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

    enum WriteChanges: PreparedSQL {
        static let sql = """
            UPDATE sms_messages m SET status = u.status, delivery_status = u.raw,
                delivery_description = coalesce(nullif(u.code, '') , m.delivery_description),
                provider = coalesce(m.provider, u.provider), provider_message_id = coalesce(m.provider_message_id, nullif(u.provider_id, '')),
                sent_at = CASE WHEN u.sent THEN coalesce(m.sent_at, now()) ELSE m.sent_at END,
                delivered_at = CASE WHEN u.delivered THEN now() ELSE m.delivered_at END,
                failed_at = CASE WHEN u.failed THEN now() ELSE m.failed_at END,
                cancelled_at = CASE WHEN u.cancelled THEN now() ELSE m.cancelled_at END,
                error_message = CASE WHEN u.failed THEN coalesce(nullif(u.error, ''), 'undelivered') ELSE m.error_message END
            FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::bool[], $9::bool[],
                        $10::bool[], $11::text[])
                AS u(id, status, raw, code, provider, provider_id, sent, delivered, failed, cancelled, error)
            WHERE m.id = u.id
            """
        static let types: [PostgresDataType] = [.uuidArray, .textArray, .textArray, .textArray, .textArray, .textArray, .boolArray,
                                                .boolArray, .boolArray, .boolArray, .textArray]
    }

    /// STOP and its kin opt the number out and queue the confirmation (exempt from consent);
    /// START opts back in and confirms; HELP answers. Other texts are logged only.
    func applyInbound(providerID: String, from: String, body: String, provider: String, events: inout PendingEvents,
                      on c: PostgresConnection) async throws -> Outcome {
        guard FieldViolations.isE164(from) else { return Outcome() }
        if let answer = SosSmsAnswer.parse(body) {
            // An answer to an SOS offer: applied through dispatch by `SosSmsAnswers`, after this commits.
            let fresh = try await SosSmsAnswers.record(answer, from: from, inbound: "\(provider):\(providerID)", on: c, logger: logger)
            return Outcome(wakeSender: fresh)
        }
        guard let (keyword, language) = SmsKeyword.detect(body) else { return Outcome() }
        let type: String
        switch keyword {
        case .optOut, .optIn:
            _ = try await ConsentLedger.append(phone: from, patient: nil, optedIn: keyword == .optIn, method: .smsReply,
                                               evidence: "\(provider) \(providerID)", by: MessagingService.actor, events: &events, on: c,
                                               logger: logger)
            type = keyword == .optOut ? "opt_out_confirmation" : "opt_in_confirmation"
        case .help:
            type = "help"
        }
        let reply = keyword.reply(language: language)
        let segments = SmsSegments(reply)
        let id = try await c.query("""
            INSERT INTO sms_messages (phone_number, message_content, message_type, language_code, encoding, segments, client_correlator,
                                      sender_address, status, created_by)
            VALUES (\(from), \(reply), \(type), \(language), \(segments.encoding.rawValue), \(Int32(segments.segments)),
                    \("reply:\(provider):\(providerID)"), \(configuration.defaultSender), 'pending', 'service:messaging')
            ON CONFLICT (client_correlator) DO NOTHING RETURNING id
            """, logger: logger).first(UUID.self)
        return Outcome(related: id, wakeSender: id != nil)
    }
}

/// The events SMS changes publish.
enum SmsEvents {
    static func statusChanged(id: UUID, correlator: String, status: SmsStatus, previous: SmsStatus, patient: UUID?, callbackData: String?,
                              provider: String?) -> Caremesh_Messaging_V1_SmsStatusChanged {
        var e = Caremesh_Messaging_V1_SmsStatusChanged()
        e.messageID = id.text
        e.clientCorrelator = correlator
        e.status = SmsDesk.statuses.key(for: status) ?? .unspecified
        e.previousStatus = SmsDesk.statuses.key(for: previous) ?? .unspecified
        e.patientID = patient?.text ?? ""
        e.callbackData = callbackData ?? ""
        e.provider = provider ?? ""
        e.occurredAt = Google_Protobuf_Timestamp(date: Date())
        return e
    }
}

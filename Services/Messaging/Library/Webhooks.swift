import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
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
    }

    static func header(_ name: String, in headers: [Caremesh_Messaging_V1_HttpHeader]) -> String? {
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
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
        let ours = URLComponents(string: r.url)?.queryItems?.first { $0.name == "c" }?.value.flatMap(UUID.init(uuidString:))
        let mapped = TwilioCallStatus.status(status, answeredBy: answeredBy).flatMap(VoiceCallStatus.init)
        return Read(type: "call_status",
                    event: .callStatus(callID: ours, providerCallID: sid, status: mapped, raw: status,
                                       duration: field("CallDuration").flatMap(Int.init)),
                    idempotencyKey: "call:\(sid):\(status):\(answeredBy ?? "")")
    }

    func twilioSms(_ r: Caremesh_Messaging_V1_WebhookRequest) throws(Failure) -> Read {
        let form = try twilioForm(r)
        func field(_ name: String) -> String? { form.last { $0.name == name }?.value }
        let sid = field("MessageSid") ?? field("SmsSid")
        if let status = field("MessageStatus") ?? field("SmsStatus"), let sid, field("Body") == nil {
            let ours = URLComponents(string: r.url)?.queryItems?.first { $0.name == "m" }?.value.flatMap(UUID.init(uuidString:))
            return Read(type: "delivery_status",
                        event: .smsStatus(messageID: ours, providerMessageID: sid, status: SmsStatus(twilio: status), raw: status,
                                          errorCode: field("ErrorCode")),
                        idempotencyKey: "status:\(sid):\(status.lowercased())")
        }
        if let sid, let from = field("From"), let to = field("To"), let body = field("Body") {
            return Read(type: "inbound_message", event: .inbound(providerMessageID: sid, from: from, to: to, body: body),
                        idempotencyKey: "inbound:\(sid)")
        }
        throw .unreadable("neither a status callback nor an inbound message")
    }

    func orangeSms(_ r: Caremesh_Messaging_V1_WebhookRequest) throws(Failure) -> Read {
        // Orange signs nothing: the notifyURL we gave carries a secret key.
        guard let expected = orangeWebhookKey,
              let key = URLComponents(string: r.url)?.queryItems?.first(where: { $0.name == "key" })?.value,
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

/// Provider webhooks, handed whole by the router's HTTP edge: each is logged (headers, body,
/// source address, outcome) under row-level security, authenticated, and applied once, its
/// effect, its log entry and its events in one transaction, before the provider is answered.
final class Webhooks: Sendable {
    let store: Store
    let outbox: Outbox
    let reader: WebhookReader
    let sender: SmsSender
    let voice: VoiceCalls
    let defaultSender: String
    let logger: Logger

    init(store: Store, outbox: Outbox, configuration: MessagingConfiguration, sender: SmsSender, voice: VoiceCalls, logger: Logger) {
        self.store = store
        self.outbox = outbox
        self.voice = voice
        self.defaultSender = configuration.defaultSender
        self.reader = WebhookReader(twilioAuthToken: configuration.twilio?.authToken, orangeWebhookKey: configuration.orange?.webhookKey)
        self.sender = sender
        self.logger = logger
    }

    static let twiml = Data(#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#.utf8)

    struct Outcome {
        var status: Int
        var body: Data = Data()
        var contentType = "text/plain"
        var processed = false
        var duplicate = false
        var error: String?
        var related: UUID?
        var wakeSender = false
    }

    func handle(_ r: Caremesh_Messaging_V1_WebhookRequest, _ context: RPCContext) async throws -> Caremesh_Messaging_V1_WebhookResponse {
        let read: WebhookReader.Read?
        let outcome: Outcome
        do {
            read = try reader.read(r)
            outcome = Outcome(status: 200)
        } catch {
            read = nil
            switch error {
            case .unknownRoute: outcome = Outcome(status: 404, error: "no webhook route for this kind and provider")
            case .unauthenticated: outcome = Outcome(status: 403, error: "signature missing or invalid")
            case .unreadable(let why): outcome = Outcome(status: 400, error: why)
            }
            logger.notice("webhook refused", metadata: ["webhook.provider": "\(r.provider)", "webhook.kind": "\(r.kind)",
                                                        "http.status": "\(outcome.status)"])
        }
        let final = try await store.withActor(MessagingService.actor, roles: ["service"]) { c in
            var result = outcome
            let logID = UUID()
            if let read {
                var events = PendingEvents()
                let applied = try await c.query("""
                    INSERT INTO webhook_applied (provider, idempotency_key, log_id) VALUES (\(r.provider), \(read.idempotencyKey), \(logID))
                    ON CONFLICT DO NOTHING RETURNING 1
                    """, logger: self.logger).hasRows()
                if applied {
                    result = try await self.apply(read.event, provider: r.provider, events: &events, on: c)
                } else {
                    result.duplicate = true
                    result.processed = true
                    if case .smsStatus(let id?, _, _, _, _) = read.event {
                        result.related = try await c.query("SELECT id FROM sms_messages WHERE id = \(id)", logger: self.logger).first(UUID.self)
                    }
                }
                if r.provider == "twilio" {
                    result.body = Self.twiml
                    result.contentType = "text/xml"
                }
                try await self.outbox.append(events, on: c)
            }
            try await self.log(r, id: logID, type: read?.type ?? "unknown", key: read?.idempotencyKey, result, on: c)
            return result
        }
        if final.wakeSender { sender.wake() }
        var response = Caremesh_Messaging_V1_WebhookResponse()
        response.status = UInt32(final.status)
        response.contentType = final.contentType
        response.body = final.body
        return response
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

    func log(_ r: Caremesh_Messaging_V1_WebhookRequest, id: UUID, type: String, key: String?, _ o: Outcome,
             on c: PostgresConnection) async throws {
        var headers: [String: String] = [:]
        for h in r.headers { headers[h.name.lowercased()] = h.value }
        let headersJSON = String(decoding: try JSONSerialization.data(withJSONObject: headers, options: [.sortedKeys]), as: UTF8.self)
        let bodyJSON = Self.bodyAsJSON(r.body)
        try await c.query("""
            INSERT INTO sms_webhook_logs (id, kind, provider, webhook_type, request_url, request_headers, request_body, raw_body, request_ip,
                idempotency_key, processed, duplicate, processing_error, related_sms_message_id, response_status, response_body)
            VALUES (\(id), \(r.kind.isEmpty ? "unknown" : String(r.kind.prefix(20)).lowercased().filter(\.isLetter)),
                    \(r.provider.isEmpty ? "unknown" : String(r.provider.prefix(20)).lowercased().filter(\.isLetter)), \(type),
                    \(r.url), \(headersJSON)::jsonb, \(bodyJSON)::jsonb, \(ByteBuffer(bytes: r.body)),
                    \(r.sourceAddress.isEmpty ? nil : String(r.sourceAddress.prefix(64))), \(key), \(o.processed), \(o.duplicate), \(o.error),
                    \(o.related), \(o.status), \(String(decoding: o.body, as: UTF8.self)))
            """, logger: logger)
    }

    /// The body as JSON: itself if it is JSON, a form body as an object of its fields, else a
    /// note that it was neither.
    static func bodyAsJSON(_ body: Data) -> String {
        if (try? JSONSerialization.jsonObject(with: body)) != nil, let text = String(data: body, encoding: .utf8) { return text }
        if let text = String(data: body, encoding: .utf8), let form = FormEncoding.decode(text) {
            var object: [String: String] = [:]
            for (name, value) in form { object[name] = value }
            if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) {
                return String(decoding: data, as: UTF8.self)
            }
        }
        return #"{"unreadable":true}"#
    }

    func apply(_ event: WebhookEvent, provider: String, events: inout PendingEvents,
               on c: PostgresConnection) async throws -> Outcome {
        switch event {
        case .smsStatus(let id, let providerID, let status, let raw, let errorCode):
            return try await applyStatus(id: id, providerID: providerID, provider: provider, status: status, raw: raw,
                                         errorCode: errorCode, events: &events, on: c)
        case .inbound(let providerID, let from, _, let body):
            return try await applyInbound(providerID: providerID, from: from, body: body, provider: provider, events: &events, on: c)
        case .callStatus(let id, let providerID, let status, let raw, let duration):
            return try await voice.applyStatus(id: id, providerCallID: providerID, status: status, raw: raw, duration: duration,
                                               events: &events, on: c)
        }
    }

    /// Moves the message forward only: a late `sent` after `delivered` is logged, not applied.
    func applyStatus(id: UUID?, providerID: String?, provider: String, status: SmsStatus?, raw: String, errorCode: String?,
                     events: inout PendingEvents, on c: PostgresConnection) async throws -> Outcome {
        let rows = try await c.query("""
            SELECT id, status, client_correlator, patient_id, callback_data FROM sms_messages
            WHERE (\(id)::uuid IS NOT NULL AND id = \(id)) OR (\(id)::uuid IS NULL AND provider = \(provider) AND provider_message_id = \(providerID))
            FOR UPDATE
            """, logger: logger)
        var found: (UUID, String, String, UUID?, String?)?
        for try await row in rows.decode((UUID, String, String, UUID?, String?).self) { found = row }
        guard let (messageID, current, correlator, patient, callbackData) = found else {
            return Outcome(status: 200, processed: false, error: "no such message")
        }
        guard let status, let from = SmsStatus(rawValue: current) else {
            return Outcome(status: 200, processed: true, error: "status \(raw) is not one CareMesh knows", related: messageID)
        }
        guard from.canMove(to: status) else {
            // Stale or repeated news: only the provider's own wording is kept up to date.
            return Outcome(status: 200, processed: true, related: messageID)
        }
        try await c.query("""
            UPDATE sms_messages SET status = \(status.rawValue), delivery_status = \(raw),
                delivery_description = coalesce(\(errorCode.map { "error \($0)" }), delivery_description),
                provider = coalesce(provider, \(provider)), provider_message_id = coalesce(provider_message_id, \(providerID)),
                sent_at = CASE WHEN \(status.rawValue) IN ('sent', 'delivered') THEN coalesce(sent_at, now()) ELSE sent_at END,
                delivered_at = CASE WHEN \(status.rawValue) = 'delivered' THEN now() ELSE delivered_at END,
                failed_at = CASE WHEN \(status.rawValue) = 'failed' THEN now() ELSE failed_at END,
                cancelled_at = CASE WHEN \(status.rawValue) = 'cancelled' THEN now() ELSE cancelled_at END,
                error_message = CASE WHEN \(status.rawValue) = 'failed' THEN coalesce(\(errorCode.map { "\(provider) error \($0)" }), 'undelivered')
                                     ELSE error_message END
            WHERE id = \(messageID)
            """, logger: logger)
        try events.add(SmsEvents.statusChanged(id: messageID, correlator: correlator, status: status, previous: from, patient: patient,
                                               callbackData: callbackData, provider: provider), key: messageID.text)
        return Outcome(status: 200, processed: true, related: messageID)
    }

    /// STOP and its kin opt the number out and queue the confirmation (exempt from consent);
    /// START opts back in and confirms; HELP answers. Other texts are logged only.
    func applyInbound(providerID: String, from: String, body: String, provider: String, events: inout PendingEvents,
                      on c: PostgresConnection) async throws -> Outcome {
        guard FieldViolations.isE164(from), let (keyword, language) = SmsKeyword.detect(body) else {
            return Outcome(status: 200, processed: true)
        }
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
                    \("reply:\(provider):\(providerID)"), \(defaultSender), 'pending', 'service:messaging')
            ON CONFLICT (client_correlator) DO NOTHING RETURNING id
            """, logger: logger).first(UUID.self)
        var outcome = Outcome(status: 200, processed: true, related: id)
        outcome.wakeSender = id != nil
        return outcome
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

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

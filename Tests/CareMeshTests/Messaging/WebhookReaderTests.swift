import CareMeshContracts
import Foundation
@testable import MessagingService
import Testing

/// How a webhook is read before anything is written: its authentication, its event, and the
/// key that makes applying it idempotent, for each provider and kind.
@Suite struct WebhookReaderTests {
    let reader = WebhookReader(twilioAuthToken: "token", orangeWebhookKey: "orange-key-0123456789")
    static let message = UUID()

    func twilio(_ kind: String, url: String, _ form: [(name: String, value: String)], token: String = "token")
        -> Caremesh_Messaging_V1_WebhookRequest
    {
        var r = Caremesh_Messaging_V1_WebhookRequest()
        r.kind = kind
        r.provider = "twilio"
        r.url = url
        r.body = Data(FormEncoding.encode(form).utf8)
        r.headers = [.with { $0.name = "x-twilio-signature"; $0.value = TwilioSignature.compute(authToken: token, url: url, params: form) }]
        return r
    }

    func orange(url: String, _ json: String) -> Caremesh_Messaging_V1_WebhookRequest {
        var r = Caremesh_Messaging_V1_WebhookRequest()
        r.kind = "sms"
        r.provider = "orange"
        r.url = url
        r.body = Data(json.utf8)
        return r
    }

    @Test("A query parameter is read as URLComponents reads it; a header by its name in any case")
    func queryAndHeaderLookups() {
        let urls = [
            "https://edge.example.org/webhooks/sms/twilio?m=5f0c2a1e-0000-4000-8000-000000000001",
            "http://127.0.0.1:8080/webhooks/sms/orange?x=1&key=a%2Bb%3Dc&key=second#key=frag",
            "http://h/p?key=&m", "http://h/p?=v&key", "http://h/p", "http://h/p?", "http://h/p?k%65y=1&key=caf%C3%A9",
            "http://h/p?key=50%", "http://h/p?m=a+b&c=%E2%82%AC", "http://h/p#?key=1",
        ]
        for url in urls {
            for name in ["m", "key", "c", "x"] {
                let expected = URLComponents(string: url)?.queryItems?.first { $0.name == name }.map { $0.value ?? "" }
                #expect(WebhookReader.query(name, in: url) == expected, "\(name) in \(url)")
            }
        }
        let headers: [Caremesh_Messaging_V1_HttpHeader] = [.with { $0.name = "X-Twilio-Signature"; $0.value = "sig" },
                                                           .with { $0.name = "content-type"; $0.value = "form" }]
        #expect(WebhookReader.header("x-twilio-signature", in: headers) == "sig")
        #expect(WebhookReader.header("Content-Type", in: headers) == "form")
        #expect(WebhookReader.header("x-twilio-signatur", in: headers) == nil)
        #expect(WebhookReader.header("X-Twilio-Signaturf", in: headers) == nil)
    }

    @Test("Twilio SMS: a status callback names our message from its URL; an inbound text is keyed by its id")
    func twilioSms() throws {
        let url = "https://edge.example.org/webhooks/sms/twilio?m=\(Self.message.uuidString.lowercased())"
        let status = try reader.read(twilio("sms", url: url, [("MessageSid", "SM1"), ("MessageStatus", "delivered")]))
        // The fields read are what the log stores as the body's JSON.
        let signed = twilio("sms", url: url, [("MessageSid", "SM1"), ("MessageStatus", "delivered"), ("To", "+1 \"é\"")])
        let read = try reader.read(signed)
        #expect(read.form?.fields.map(\.name) == ["MessageSid", "MessageStatus", "To"])
        #expect(read.form?.json == Webhooks.bodyAsJSON(signed.body))
        #expect(read.form?.json == #"{"MessageSid":"SM1","MessageStatus":"delivered","To":"+1 \"é\""}"#)
        #expect(status.type == "delivery_status")
        #expect(status.idempotencyKey == "status:SM1:delivered")
        #expect(status.event == .smsStatus(messageID: Self.message, providerMessageID: "SM1", status: .delivered, raw: "delivered", errorCode: nil))
        let inbound = try reader.read(twilio("sms", url: "https://edge.example.org/webhooks/sms/twilio",
                                             [("MessageSid", "SM2"), ("From", "+33612345678"), ("To", "+15005550006"), ("Body", "STOP")]))
        #expect(inbound.type == "inbound_message")
        #expect(inbound.idempotencyKey == "inbound:SM2")
        #expect(inbound.event == .inbound(providerMessageID: "SM2", from: "+33612345678", to: "+15005550006", body: "STOP"))
    }

    @Test("Twilio: a wrong key, a changed URL or a missing signature is unauthenticated; an unknown route is refused first")
    func twilioRefusals() {
        let url = "https://edge.example.org/webhooks/sms/twilio"
        let form: [(name: String, value: String)] = [("MessageSid", "SM1"), ("MessageStatus", "sent")]
        #expect(throws: WebhookReader.Failure.unauthenticated) { try reader.read(twilio("sms", url: url, form, token: "other")) }
        var moved = twilio("sms", url: url, form)
        moved.url += "?m=\(Self.message)"
        #expect(throws: WebhookReader.Failure.unauthenticated) { try reader.read(moved) }
        var unsigned = twilio("sms", url: url, form)
        unsigned.headers = []
        #expect(throws: WebhookReader.Failure.unauthenticated) { try reader.read(unsigned) }
        #expect(throws: WebhookReader.Failure.unknownRoute) { try reader.read(twilio("fax", url: url, form)) }
        let unconfigured = WebhookReader(twilioAuthToken: nil, orangeWebhookKey: nil)
        #expect(throws: WebhookReader.Failure.unauthenticated) { try unconfigured.read(twilio("sms", url: url, form)) }
        #expect(throws: WebhookReader.Failure.unreadable("neither a status callback nor an inbound message")) {
            try reader.read(twilio("sms", url: url, [("AccountSid", "AC1")]))
        }
    }

    @Test("Twilio voice: answered by a machine is MACHINE; the key holds status and who answered")
    func twilioVoice() throws {
        let call = UUID()
        let url = "https://edge.example.org/webhooks/voice/twilio?c=\(call.uuidString.lowercased())"
        let machine = try reader.read(twilio("voice", url: url, [("CallSid", "CA1"), ("CallStatus", "in-progress"), ("AnsweredBy", "machine_start")]))
        #expect(machine.type == "call_status")
        #expect(machine.idempotencyKey == "call:CA1:in-progress:machine_start")
        #expect(machine.event == .callStatus(callID: call, providerCallID: "CA1", status: .machine, raw: "in-progress", duration: nil))
        let done = try reader.read(twilio("voice", url: url, [("CallSid", "CA1"), ("CallStatus", "completed"), ("CallDuration", "42")]))
        #expect(done.event == .callStatus(callID: call, providerCallID: "CA1", status: .completed, raw: "completed", duration: 42))
        #expect(done.reply == nil)
    }

    @Test("Twilio voice: a key gathered at the accept prompt is its own event, answered with TwiML that goes on with the call")
    func twilioVoiceKey() throws {
        let call = UUID()
        let url = "https://edge.example.org/webhooks/voice/twilio?c=\(call.uuidString.lowercased())"
        let form = [("CallSid", "CA1"), ("CallStatus", "in-progress"), ("Digits", "1"), ("msg", "Gather End")]
        let one = try reader.read(twilio("voice", url: url, form))
        #expect(one.type == "call_key" && one.idempotencyKey == "call:CA1:key:1")
        #expect(one.event == .callKey(callID: call, providerCallID: "CA1", digits: "1"))
        #expect(one.reply.map { String(decoding: $0, as: UTF8.self) }?.contains("<Say>Thank you. Your answer is recorded.</Say>") == true)
        let two = try reader.read(twilio("voice", url: url, [("CallSid", "CA1"), ("CallStatus", "in-progress"), ("Digits", "2")]))
        #expect(two.event == .callKey(callID: call, providerCallID: "CA1", digits: "2"))
        #expect(two.reply.map { String(decoding: $0, as: UTF8.self) }?.contains("does not accept") == true)
        // The key is signed like any callback: a forged one is refused.
        var forged = twilio("voice", url: url, form)
        forged.body = Data(FormEncoding.encode(form.map { ($0.0, $0.1 == "1" ? "1" : $0.1) } + [("Extra", "x")]).utf8)
        #expect(throws: WebhookReader.Failure.unauthenticated) { try reader.read(forged) }
    }

    @Test("Orange: the notifyURL's key authenticates; receipts name our message by callbackData; inbound texts by their id")
    func orangeRequests() throws {
        let url = "https://edge.example.org/webhooks/sms/orange?key=orange-key-0123456789"
        let receipt = try reader.read(orange(url: url, """
            {"deliveryInfoNotification":{"callbackData":"\(Self.message.uuidString)","deliveryInfo":{"address":"tel:+33612345678","deliveryStatus":"DeliveryImpossible"}}}
            """))
        #expect(receipt.idempotencyKey == "status:\(Self.message.uuidString.lowercased()):DeliveryImpossible")
        #expect(receipt.event == .smsStatus(messageID: Self.message, providerMessageID: nil, status: .failed, raw: "DeliveryImpossible", errorCode: nil))
        let inbound = try reader.read(orange(url: url, """
            {"inboundSMSMessageNotification":{"inboundSMSMessage":{"destinationAddress":"tel:+33700000000","senderAddress":"tel:+33612345678","message":"ARRET","messageId":"ob-9"}}}
            """))
        #expect(inbound.idempotencyKey == "inbound:ob-9")
        #expect(inbound.event == .inbound(providerMessageID: "ob-9", from: "+33612345678", to: "+33700000000", body: "ARRET"))
        #expect(throws: WebhookReader.Failure.unreadable("the receipt names no message")) {
            try reader.read(orange(url: url, #"{"deliveryInfoNotification":{"deliveryInfo":{"address":"tel:+33612345678","deliveryStatus":"DeliveredToTerminal"}}}"#))
        }
        #expect(throws: WebhookReader.Failure.unauthenticated) {
            try reader.read(orange(url: "https://edge.example.org/webhooks/sms/orange?key=guess", "{}"))
        }
    }
}

import Foundation
import MessagingService
import Testing

/// Orange's SMS API shapes, read and written as Orange documents them.
@Suite struct OrangeSmsTests {
    @Test("the token answer, expires_in as a string or a number; garbage refused")
    func token() throws {
        let orange = try JSONDecoder().decode(OrangeSms.Token.self, from: Data(#"{"token_type": "Bearer", "access_token": "i6m2iIcY0SodWSe...L3ojAXXrH", "expires_in": "3600"}"#.utf8))
        #expect(orange.expiresIn == 3_600 && orange.tokenType == "Bearer" && orange.accessToken.hasPrefix("i6m2"))
        #expect(try JSONDecoder().decode(OrangeSms.Token.self, from: Data(#"{"token_type": "Bearer", "access_token": "x", "expires_in": 7776000}"#.utf8)).expiresIn == 7_776_000)
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(OrangeSms.Token.self, from: Data(#"{"token_type": "Bearer", "access_token": "x", "expires_in": "soon"}"#.utf8))
        }
    }

    @Test("a send request: tel: addresses, the correlator, the receipt request; the path encodes the sender")
    func send() throws {
        let r = OrangeSms.SendRequest(to: "+2250700000001", from: "+2250700000000", text: "Rappel : vaccin demain", clientCorrelator: "cm-42",
                                      notifyURL: "https://edge.example.org/webhooks/sms/orange", callbackData: "msg-42")
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(r)) as? [String: Any]
        let body = try #require(json?["outboundSMSMessageRequest"] as? [String: Any])
        #expect(body["address"] as? String == "tel:+2250700000001")
        #expect(body["senderAddress"] as? String == "tel:+2250700000000")
        #expect((body["outboundSMSTextMessage"] as? [String: Any])?["message"] as? String == "Rappel : vaccin demain")
        #expect(body["clientCorrelator"] as? String == "cm-42")
        #expect((body["receiptRequest"] as? [String: Any])?["notifyURL"] as? String == "https://edge.example.org/webhooks/sms/orange")
        #expect(OrangeSms.sendPath(sender: "+2250700000000") == "/smsmessaging/v1/outbound/tel%3A%2B2250700000000/requests")
        #expect(OrangeSms.e164("tel:+2250700000001") == "+2250700000001")
    }

    @Test("a delivery receipt as Orange posts it, and its status")
    func receipt() throws {
        let posted = #"{"deliveryInfoNotification": {"callbackData": "msg-42", "deliveryInfo": {"address": "tel:+2250700000001", "deliveryStatus": "DeliveredToTerminal"}}}"#
        let r = try JSONDecoder().decode(OrangeSms.DeliveryReceipt.self, from: Data(posted.utf8))
        #expect(r.deliveryInfoNotification.callbackData == "msg-42" && r.status == .delivered)
        #expect(r == OrangeSms.DeliveryReceipt(address: "+2250700000001", status: "DeliveredToTerminal", callbackData: "msg-42"))
        #expect(OrangeSms.DeliveryReceipt(address: "+1", status: "DeliveryImpossible", callbackData: nil).status == .failed)
        #expect(OrangeSms.DeliveryReceipt(address: "+1", status: "SomethingNew", callbackData: nil).status == nil)
    }
}

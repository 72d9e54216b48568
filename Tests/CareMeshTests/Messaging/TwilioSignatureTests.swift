import Crypto
import Foundation
import MessagingService
import Testing

/// Twilio's signature, against the example of Twilio's own documentation.
@Suite struct TwilioSignatureTests {
    static let url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    static let params: [(name: String, value: String)] = [
        ("CallSid", "CA1234567890ABCDE"), ("Caller", "+14158675310"), ("Digits", "1234"), ("From", "+14158675310"), ("To", "+18005551212"),
    ]

    @Test("the documented example: form parameters sorted by name after the URL")
    func documentedExample() {
        #expect(TwilioSignature.compute(authToken: "12345", url: Self.url, params: Self.params) == "GvWf1cFY/Q7PnoempGyD5oXAezc=")
        #expect(TwilioSignature.isValid("GvWf1cFY/Q7PnoempGyD5oXAezc=", authToken: "12345", url: Self.url, params: Self.params.reversed()))
        // Another token, a changed value, another URL, a truncated signature: refused.
        #expect(!TwilioSignature.isValid("GvWf1cFY/Q7PnoempGyD5oXAezc=", authToken: "12346", url: Self.url, params: Self.params))
        var tampered = Self.params
        tampered[2].value = "1235"
        #expect(!TwilioSignature.isValid("GvWf1cFY/Q7PnoempGyD5oXAezc=", authToken: "12345", url: Self.url, params: tampered))
        #expect(!TwilioSignature.isValid("GvWf1cFY/Q7PnoempGyD5oXAezc=", authToken: "12345", url: Self.url + "&x=1", params: Self.params))
        #expect(!TwilioSignature.isValid("GvWf1cFY/Q7PnoempGyD5oXAez", authToken: "12345", url: Self.url, params: Self.params))
    }

    @Test("a JSON body is bound by the URL's bodySHA256")
    func jsonBody() {
        let body = Data(#"{"CallSid":"CA1234567890ABCDE","Caller":"+12349013030"}"#.utf8)
        let digest = SHA256.hash(data: body).map { String(format: "%02x", $0) }.joined()
        let url = "https://example.com/myapp?bodySHA256=\(digest)"
        let signature = TwilioSignature.compute(authToken: "12345", url: url)
        #expect(TwilioSignature.isValid(signature, authToken: "12345", url: url, jsonBody: body))
        #expect(!TwilioSignature.isValid(signature, authToken: "12345", url: url, jsonBody: Data(#"{"CallSid":"CA0"}"#.utf8)))
        #expect(!TwilioSignature.isValid(signature, authToken: "12345", url: "https://example.com/myapp", jsonBody: body))
    }
}

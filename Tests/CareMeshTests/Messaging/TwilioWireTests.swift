import CareMeshContracts
import Foundation
import MessagingService
import Testing

/// Twilio's form encoding and call statuses.
@Suite struct TwilioWireTests {
    @Test("form bodies round-trip: order, repeated names, spaces, '+', '&', '=' and non-ASCII")
    func form() throws {
        let pairs: [(name: String, value: String)] = [
            ("To", "+33612345678"), ("Body", "Rendez-vous à 9h & bring a=b"), ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "answered"), ("Empty", ""),
        ]
        let body = FormEncoding.encode(pairs)
        #expect(body.hasPrefix("To=%2B33612345678&Body=Rendez-vous+%C3%A0+9h+%26+bring+a%3Db&"))
        let back = try #require(FormEncoding.decode(body))
        #expect(back.map(\.name) == pairs.map(\.name))
        #expect(back.map(\.value) == pairs.map(\.value))
        // As Twilio posts a status callback.
        let posted = try #require(FormEncoding.decode("CallSid=CA123&CallStatus=in-progress&AnsweredBy=human&From=%2B15005550006"))
        #expect(posted.first { $0.name == "From" }?.value == "+15005550006")
        #expect(FormEncoding.decode("Body=%ZZ") == nil)
        // A truncated escape, or escapes that are not UTF-8, are malformed; '+' is a space.
        #expect(FormEncoding.decode("Body=%4") == nil)
        #expect(FormEncoding.decode("Body=%") == nil)
        #expect(FormEncoding.decode("Body=%E9t%E9") == nil)
        #expect(FormEncoding.decode("A+b=c%2Bd&&x")?.map { "\($0.name)|\($0.value)" } == ["A b|c+d", "x|"])
    }

    @Test("the webhook log's JSON text: sorted keys, every escape JSON needs, no NUL")
    func jsonText() throws {
        let fields = ["b": "quote \" backslash \\ slash /", "a": "line\nfeed\ttab\r\u{1}\u{1F}", "é": "été 🚑", "z": "nul\0"]
        let text = JSONText.object(fields)
        #expect(text.hasPrefix(#"{"a":"line\nfeed\ttab\r\u0001\u001f","b":"#))
        #expect(!text.contains("\0"))
        let back = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: String])
        var expected = fields
        expected["z"] = "nul\u{FFFD}"
        #expect(back == expected)
        #expect(JSONText.object([:]) == "{}")
    }

    /// (CallStatus, AnsweredBy, ours)
    static let statuses: [(String, String?, Caremesh_Messaging_V1_CallStatus?)] = [
        ("queued", nil, .queued), ("initiated", nil, .queued), ("ringing", nil, .ringing),
        ("in-progress", nil, .inProgress), ("in-progress", "human", .inProgress),
        ("in-progress", "machine_start", .machine), ("in-progress", "machine_end_beep", .machine),
        ("in-progress", "fax", .machine), ("in-progress", "unknown", .machine),
        ("completed", "human", .completed), ("completed", nil, .completed), ("completed", "machine_end_silence", .machine),
        ("busy", nil, .busy), ("no-answer", nil, .noAnswer), ("failed", nil, .failed), ("canceled", nil, .canceled),
        ("teleported", nil, nil),
    ]

    @Test("only a confirmed person is an answer", arguments: 0..<statuses.count)
    func callStatus(_ i: Int) {
        let (status, answeredBy, expected) = Self.statuses[i]
        #expect(TwilioCallStatus.status(status, answeredBy: answeredBy) == expected, "\(status) \(answeredBy ?? "-")")
    }
}

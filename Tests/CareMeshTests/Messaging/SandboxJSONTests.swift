import Foundation
@testable import ProviderSandbox
import Testing

/// The sandbox writes its providers' JSON answers by hand (`JSONText`): what it writes must
/// read back as the same values, in the order given, whatever the strings hold.
@Suite struct SandboxJSONTests {
    @Test func writesValidJSONInTheGivenOrder() throws {
        let awkward = "quote \" backslash \\ newline \n tab \t return \r bell \u{07} nul \u{0} é 😀 </script>"
        let value: JSONText = ["sid": .string(awkward), "status": "queued", "code": 21211,
                               "negative": .int(-7), "nested": ["inner": "x", "empty": [:]]]
        let data = value.data
        let text = try #require(String(data: data, encoding: .utf8))
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(object["sid"] as? String == awkward)
        #expect(object["status"] as? String == "queued")
        #expect(object["code"] as? Int == 21211)
        #expect(object["negative"] as? Int == -7)
        let nested = try #require(object["nested"] as? [String: Any])
        #expect(nested["inner"] as? String == "x")
        #expect((nested["empty"] as? [String: Any])?.isEmpty == true)
        // Keys in the order written, as the providers send them.
        let order = ["\"sid\"", "\"status\"", "\"code\"", "\"negative\"", "\"nested\""].map { text.range(of: $0)!.lowerBound }
        #expect(order == order.sorted())
        // Control characters never appear raw.
        #expect(!data.contains { $0 < 0x20 })
        #expect(text.contains(#"\u0007"#) && text.contains(#"\u0000"#) && text.contains(#"\n"#))
    }
}

import Foundation
@testable import ProviderSandbox
import Testing

/// What the sandbox writes by hand for speed: its providers' JSON answers (`ProviderJSON`) must
/// read back as the same values, in the order given, whatever the strings hold; its ids must
/// have Twilio's shape and never repeat.
@Suite struct SandboxWireTests {
    @Test func writesValidJSONInTheGivenOrder() throws {
        let awkward = "quote \" backslash \\ newline \n tab \t return \r bell \u{07} nul \u{0} é 😀 </script>"
        let value: ProviderJSON = ["sid": .string(awkward), "status": "queued", "code": 21211,
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

    @Test func idsHaveTwiliosShapeAndDoNotRepeat() {
        let ids = (0..<2_000).map { _ in ProviderSandbox.newID("SM") }
        #expect(Set(ids).count == ids.count)
        #expect(ids.allSatisfy { $0.count == 34 && $0.hasPrefix("SM") && $0.dropFirst(2).allSatisfy { "0123456789abcdef".contains($0) } })
        // Every hex digit turns up in every position (the words are written whole, not truncated).
        for position in 2..<34 {
            let seen = Set(ids.map { $0[$0.index($0.startIndex, offsetBy: position)] })
            #expect(seen.count == 16, "position \(position): \(seen.sorted())")
        }
    }
}

import CareMeshContracts
import CareMeshRPC
import Foundation
import SwiftProtobuf
import Testing

/// The hand-written request header encoder agrees with SwiftProtobuf.
@Suite struct RequestHeaderWireTests {
    /// Header `i` of a varied set; `plain`: ASCII only and no caller, as clients send them.
    static func randomHeader(_ i: Int, _ g: inout SystemRandomNumberGenerator, plain: Bool = false) -> RequestHeader {
        var h = RequestHeader()
        if i % 7 != 0 { h.method = "/caremesh.dispatch.v1.Dispatch/Method\(i)" }
        h.requestID = i % 5 == 0 ? UInt64.max - UInt64(i) : UInt64.random(in: 0...1 << 40, using: &g)
        h.timeoutMs = i % 3 == 0 ? 0 : UInt32.random(in: 0...UInt32.max, using: &g)
        if i % 2 == 0 { h.metadata["traceparent"] = "00-\(String(repeating: "a", count: 32))-\(String(repeating: "b", count: 16))-01" }
        if i % 4 != 1 { h.metadata["authorization"] = i % 8 == 0 ? "" : "Bearer tok.\(i).sig" }
        if i % 6 == 0 { h.metadata["idempotency-key"] = plain ? "key-\(i)" : "clé-\(i)-✓" }
        if i % 9 == 0 { h.metadata[""] = "empty key" }
        if i % 4 == 0 && !plain {
            h.caller.subject = "user-\(i)"
            h.caller.roles = Array(["admin", "volunteer", "ea"].prefix(i % 3 + 1))
            if i % 8 == 0 { h.caller.sessionID = "s\(i)" }
        }
        return h
    }

    @Test("encode: SwiftProtobuf reads back the same header")
    func encodeAgrees() throws {
        var g = SystemRandomNumberGenerator()
        for i in 0..<2_000 {
            var h = Self.randomHeader(i, &g)
            h.clearCaller()  // clients never send one
            let bytes = RequestHeaderWire.encode(method: h.method, requestID: h.requestID, timeoutMs: h.timeoutMs, metadata: h.metadata)
            #expect(try RequestHeader(serializedBytes: bytes) == h)
        }
    }
}

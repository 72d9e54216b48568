import CareMeshContracts
import CareMeshRPC
@testable import CareMeshRouter
import Foundation
import SwiftProtobuf
import Testing

/// The router's fast header reader agrees with SwiftProtobuf on every input, and takes the
/// fast path on the headers clients really send.
@Suite struct HeaderFactsTests {
    /// What SwiftProtobuf makes of `frame` (the reference).
    static func reference(_ frame: Data) -> HeaderFacts? {
        guard let view = try? RequestHeaderView(serializedBytes: frame, options: HeaderFacts.viewOptions) else { return nil }
        return HeaderFacts(method: view.method, requestID: view.requestID, timeoutMs: view.timeoutMs,
                           authorization: view.metadata["authorization"], hasCaller: view.hasCaller)
    }

    @Test("random client headers: scanned without SwiftProtobuf, with the same facts")
    func randomHeaders() throws {
        var g = SystemRandomNumberGenerator()
        for i in 0..<2_000 {
            let h = RequestHeaderWireTests.randomHeader(i, &g, plain: true)
            let frame = h.wireBytes()
            let fast = try #require(HeaderFacts.scan(frame), "header \(i)")
            #expect(fast == Self.reference(frame))
        }
    }

    @Test("edge cases: repeated fields, unknown fields, a caller claim, non-ASCII, cut-off and invalid bytes")
    func edgeCases() {
        func entry(_ key: String, _ value: String) -> [UInt8] {
            let body = [0x0A, UInt8(key.utf8.count)] + Array(key.utf8) + [0x12, UInt8(value.utf8.count)] + Array(value.utf8)
            return [0x22, UInt8(body.count)] + body
        }
        let method = [0x0A, 0x03] + Array("/m1".utf8)
        let cases: [(String, [UInt8], fast: Bool)] = [
            ("empty", [], true),
            ("repeated scalars: the last wins", [0x10, 0x01, 0x18, 0x05, 0x10, 0x02, 0x18, 0x07], true),
            ("repeated method", method + [0x0A, 0x02] + Array("/z".utf8), true),
            ("repeated metadata key: the last wins", entry("authorization", "Bearer a") + entry("authorization", "Bearer b"), true),
            ("map entry without a value", [0x22, 0x0F, 0x0A, 0x0D] + Array("authorization".utf8), true),
            ("unknown varint, fixed64, bytes, fixed32", method + [0x30, 0x96, 0x01, 0x39] + [UInt8](repeating: 1, count: 8)
                + [0x42, 0x02, 0x41, 0x42, 0x4D, 1, 2, 3, 4], true),
            ("unknown field inside a map entry", [0x22, 0x15, 0x18, 0x01, 0x0A, 0x0D] + Array("authorization".utf8) + [0x12, 0x02, 0x41, 0x42], true),
            ("a caller claim", method + [0x2A, 0x00], false),
            ("a group", method + [0x33, 0x34], false),
            ("method as a varint", [0x08, 0x01], false),
            ("non-ASCII method", [0x0A, 0x02, 0xC3, 0xA9], false),
            ("invalid UTF-8 method", [0x0A, 0x01, 0xFF], false),
            ("non-ASCII token", entry("authorization", "Bearer é"), false),
            ("cut-off length", method + [0x0A, 0x05, 0x41], false),
            ("cut-off varint", [0x10, 0xFF], false),
            ("11-byte varint", [0x10] + [UInt8](repeating: 0xFF, count: 10) + [0x01], false),
            ("timeout past UInt32", [0x18, 0x80, 0x80, 0x80, 0x80, 0x10], false),
            ("cut-off fixed64", [0x39, 1, 2, 3], false),
            ("field number 0", [0x00, 0x01], false),
            ("wire type 7", [0x0F], false),
        ]
        for (name, bytes, fast) in cases {
            let frame = Data(bytes)
            let scanned = HeaderFacts.scan(frame)
            #expect((scanned != nil) == fast, "\(name): fast path")
            if let scanned { #expect(scanned == Self.reference(frame), "\(name)") }
            #expect(HeaderFacts.decode(frame) == Self.reference(frame), "\(name): same verdict as SwiftProtobuf")
        }
    }

    @Test("random bytes: the same verdict as SwiftProtobuf")
    func randomBytes() {
        var g = SystemRandomNumberGenerator()
        var base = RequestHeader()
        base.method = "/a/b"
        base.requestID = 9
        base.metadata = ["authorization": "Bearer x", "traceparent": "t"]
        let valid = Array(base.wireBytes())
        for _ in 0..<5_000 {
            var bytes = valid
            for _ in 0..<Int.random(in: 1...3, using: &g) {
                bytes[Int.random(in: 0..<bytes.count, using: &g)] = UInt8.random(in: 0...255, using: &g)
            }
            if Bool.random(using: &g) { bytes.removeLast(Int.random(in: 0..<bytes.count, using: &g)) }
            let frame = Data(bytes)
            #expect(HeaderFacts.decode(frame) == Self.reference(frame), "\(bytes)")
        }
    }
}

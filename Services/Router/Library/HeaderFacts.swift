import CareMeshRPC
import Foundation
import SwiftProtobuf

/// What the router reads of a request's `RequestHeader`: its method, id, timeout, bearer
/// metadata and whether it claims a caller. The header itself is forwarded as it came.
///
/// `scan` reads the protobuf wire bytes directly (no message, no metadata map built: the
/// router needs one metadata value of the several a header carries). It reads only the plain
/// shape real clients send: the known fields with their wire types, unknown fields of the
/// varint, fixed and length-delimited types, ASCII strings. For anything else (a group, a
/// wrong wire type, a caller claim, non-ASCII or cut-off bytes) it gives up and `decode` falls
/// back to SwiftProtobuf, whose verdict (including refusal) stands. Both give the same facts.
struct HeaderFacts: Equatable {
    var method = ""
    var requestID: UInt64 = 0
    var timeoutMs: UInt32 = 0
    var authorization: String?
    var hasCaller = false

    /// The facts of `frame`, nil if it is not a valid RequestHeader.
    static func decode(_ frame: Data) -> HeaderFacts? {
        if let fast = scan(frame) { return fast }
        guard let view = try? RequestHeaderView(serializedBytes: frame, options: viewOptions) else { return nil }
        return HeaderFacts(method: view.method, requestID: view.requestID, timeoutMs: view.timeoutMs,
                           authorization: view.metadata["authorization"], hasCaller: view.hasCaller)
    }

    static let viewOptions: BinaryDecodingOptions = {
        var o = BinaryDecodingOptions()
        o.discardUnknownFields = true
        return o
    }()

    /// The fast path; nil when the bytes are not the plain shape (see the type's note).
    static func scan(_ frame: Data) -> HeaderFacts? {
        frame.withUnsafeBytes { raw -> HeaderFacts? in
            var reader = ProtoWireReader(raw)
            var facts = HeaderFacts()
            while !reader.atEnd {
                guard let (field, wireType) = reader.tag() else { return nil }
                switch (field, wireType) {
                case (1, 2):
                    guard let bytes = reader.lengthDelimited(), let s = ascii(bytes) else { return nil }
                    facts.method = s
                case (2, 0):
                    guard let v = reader.varint() else { return nil }
                    facts.requestID = v
                case (3, 0):
                    guard let v = reader.varint(), v <= UInt64(UInt32.max) else { return nil }
                    facts.timeoutMs = UInt32(v)
                case (4, 2):
                    guard let entry = reader.lengthDelimited(), let (k, v) = mapEntry(entry) else { return nil }
                    if k.elementsEqual("authorization".utf8) {
                        guard let s = ascii(v) else { return nil }
                        facts.authorization = s
                    }
                case (1...5, _):
                    return nil  // a known field with another wire type, or a caller claim
                default:
                    guard reader.skip(wireType: wireType) else { return nil }
                }
            }
            return facts
        }
    }

    /// A map<string, string> entry's key and value (each "" when absent; the last wins).
    private static func mapEntry(_ bytes: UnsafeRawBufferPointer) -> (UnsafeRawBufferPointer, UnsafeRawBufferPointer)? {
        var reader = ProtoWireReader(bytes)
        var key = UnsafeRawBufferPointer(start: nil, count: 0), value = key
        while !reader.atEnd {
            guard let (field, wireType) = reader.tag() else { return nil }
            switch (field, wireType) {
            case (1, 2):
                guard let b = reader.lengthDelimited(), isASCII(b) else { return nil }
                key = b
            case (2, 2):
                guard let b = reader.lengthDelimited(), isASCII(b) else { return nil }
                value = b
            case (1...2, _):
                return nil
            default:
                guard reader.skip(wireType: wireType) else { return nil }
            }
        }
        return (key, value)
    }

    private static func isASCII(_ bytes: UnsafeRawBufferPointer) -> Bool { bytes.allSatisfy { $0 < 0x80 } }

    private static func ascii(_ bytes: UnsafeRawBufferPointer) -> String? {
        guard isASCII(bytes) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}

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
            var reader = WireReader(raw)
            var facts = HeaderFacts()
            while !reader.atEnd {
                guard let key = reader.varint(), key <= UInt64(UInt32.max), key >> 3 != 0 else { return nil }
                let field = key >> 3, wireType = key & 7
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
        var reader = WireReader(bytes)
        var key = UnsafeRawBufferPointer(start: nil, count: 0), value = key
        while !reader.atEnd {
            guard let tag = reader.varint(), tag <= UInt64(UInt32.max), tag >> 3 != 0 else { return nil }
            switch (tag >> 3, tag & 7) {
            case (1, 2):
                guard let b = reader.lengthDelimited(), isASCII(b) else { return nil }
                key = b
            case (2, 2):
                guard let b = reader.lengthDelimited(), isASCII(b) else { return nil }
                value = b
            case (1...2, _):
                return nil
            default:
                guard reader.skip(wireType: tag & 7) else { return nil }
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

/// Reads protobuf wire primitives from a buffer; every read fails (nil/false) rather than
/// running past the end.
private struct WireReader {
    let bytes: UnsafeRawBufferPointer
    var at = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var atEnd: Bool { at >= bytes.count }

    mutating func varint() -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while at < bytes.count, shift < 64 {
            let b = bytes[at]
            at += 1
            value |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return shift == 63 && b > 1 ? nil : value }
            shift += 7
        }
        return nil
    }

    mutating func lengthDelimited() -> UnsafeRawBufferPointer? {
        guard let n = varint(), n <= UInt64(bytes.count - at) else { return nil }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[at..<at + Int(n)])
        at += Int(n)
        return slice
    }

    /// Skips a field of an unknown number: varint, 64-bit, length-delimited or 32-bit.
    mutating func skip(wireType: UInt64) -> Bool {
        switch wireType {
        case 0: return varint() != nil
        case 1: guard bytes.count - at >= 8 else { return false }; at += 8; return true
        case 2: return lengthDelimited() != nil
        case 5: guard bytes.count - at >= 4 else { return false }; at += 4; return true
        default: return false  // groups (3, 4) and invalid types: SwiftProtobuf decides
        }
    }
}

import CareMeshContracts
import Foundation
import SwiftProtobuf

/// The request header a client sends, written without SwiftProtobuf's generic machinery: its
/// visitor and map coding were 12% of the client's thread under `bench rpc`, this is 3%.
/// It writes what SwiftProtobuf would (field order aside, which protobuf leaves free); a test
/// reads it back with SwiftProtobuf. (The worker reads headers with SwiftProtobuf: a
/// hand-written reader measured no faster there, the metadata dictionary being most of it.)
public enum RequestHeaderWire {
    /// The encoded header.
    public static func encode(method: String, requestID: UInt64, timeoutMs: UInt32, metadata: [String: String]) -> Data {
        var size = 2 * 11 + method.utf8.count + 6
        for (k, v) in metadata { size += k.utf8.count + v.utf8.count + 12 }
        var out = [UInt8]()
        out.reserveCapacity(size)
        if !method.isEmpty { ProtoWire.appendBytes(field: 1, method.utf8, to: &out) }
        if requestID != 0 { ProtoWire.appendVarint(field: 2, requestID, to: &out) }
        if timeoutMs != 0 { ProtoWire.appendVarint(field: 3, UInt64(timeoutMs), to: &out) }
        for (k, v) in metadata {
            let kn = k.utf8.count, vn = v.utf8.count
            let entry = 2 + ProtoWire.varintSize(UInt64(kn)) + kn + ProtoWire.varintSize(UInt64(vn)) + vn
            out.append(0x22)
            ProtoWire.appendVarint(UInt64(entry), to: &out)
            ProtoWire.appendBytes(field: 1, k.utf8, to: &out)
            ProtoWire.appendBytes(field: 2, v.utf8, to: &out)
        }
        return Data(out)
    }
}

/// Protobuf wire primitives for the hand-written coding of the hot path.
package enum ProtoWire {
    package static func varintSize(_ v: UInt64) -> Int {
        var n = 1, v = v
        while v >= 0x80 { v >>= 7; n += 1 }
        return n
    }

    package static func appendVarint(_ v: UInt64, to out: inout [UInt8]) {
        var v = v
        while v >= 0x80 { out.append(UInt8(truncatingIfNeeded: v) | 0x80); v >>= 7 }
        out.append(UInt8(v))
    }

    package static func appendVarint(field: UInt64, _ v: UInt64, to out: inout [UInt8]) {
        appendVarint(field << 3, to: &out)
        appendVarint(v, to: &out)
    }

    package static func appendBytes(field: UInt64, _ bytes: String.UTF8View, to out: inout [UInt8]) {
        appendVarint(field << 3 | 2, to: &out)
        appendVarint(UInt64(bytes.count), to: &out)
        out.append(contentsOf: bytes)
    }
}

/// Reads protobuf wire primitives from a buffer; every read fails (nil/false) rather than
/// running past the end or accepting what protobuf refuses.
package struct ProtoWireReader {
    let bytes: UnsafeRawBufferPointer
    var at = 0

    package init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    package var atEnd: Bool { at >= bytes.count }

    /// A field's number (never 0) and wire type.
    package mutating func tag() -> (UInt64, UInt64)? {
        guard let key = varint(), key <= UInt64(UInt32.max), key >> 3 != 0 else { return nil }
        return (key >> 3, key & 7)
    }

    package mutating func varint() -> UInt64? {
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

    package mutating func lengthDelimited() -> UnsafeRawBufferPointer? {
        guard let n = varint(), n <= UInt64(bytes.count - at) else { return nil }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[at..<at + Int(n)])
        at += Int(n)
        return slice
    }

    /// Skips a field of an unknown number: varint, 64-bit, length-delimited or 32-bit.
    package mutating func skip(wireType: UInt64) -> Bool {
        switch wireType {
        case 0: return varint() != nil
        case 1: guard bytes.count - at >= 8 else { return false }; at += 8; return true
        case 2: return lengthDelimited() != nil
        case 5: guard bytes.count - at >= 4 else { return false }; at += 4; return true
        default: return false  // groups (3, 4) and invalid types: SwiftProtobuf decides
        }
    }
}

import Foundation

/// base64url without padding (RFC 4648 §5), as JWS uses.
///
/// Written out rather than built on Foundation's base64 plus `replacingOccurrences`: that
/// path went through NSString and was 12 % of identity's CPU on a refresh (token signing).
public enum Base64URL {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// Alphabet byte → its 6-bit value, 0xFF for anything else.
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()

    public static func encode<D: DataProtocol>(_ data: D) -> String {
        let bytes = Array(data)
        let count = (bytes.count * 4 + 2) / 3
        return String(unsafeUninitializedCapacity: count) { out in
            var o = 0, i = 0
            while i + 3 <= bytes.count {
                let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
                out[o] = alphabet[Int(n >> 18 & 63)]
                out[o + 1] = alphabet[Int(n >> 12 & 63)]
                out[o + 2] = alphabet[Int(n >> 6 & 63)]
                out[o + 3] = alphabet[Int(n & 63)]
                i += 3
                o += 4
            }
            let rest = bytes.count - i
            if rest > 0 {
                let n = UInt32(bytes[i]) << 16 | (rest == 2 ? UInt32(bytes[i + 1]) << 8 : 0)
                out[o] = alphabet[Int(n >> 18 & 63)]
                out[o + 1] = alphabet[Int(n >> 12 & 63)]
                o += 2
                if rest == 2 {
                    out[o] = alphabet[Int(n >> 6 & 63)]
                    o += 1
                }
            }
            return o
        }
    }

    /// The bytes of unpadded base64url `text`, or nil if it holds anything else (padding,
    /// whitespace, the `+`/`/` alphabet, an impossible length, or non-zero unused trailing
    /// bits, so each byte string has exactly one encoding).
    public static func decode<C: Collection>(_ text: C) -> Data? where C.Element == UInt8 {
        let count = text.count
        if count % 4 == 1 { return nil }
        var out = [UInt8]()
        out.reserveCapacity(count * 3 / 4)
        var accumulator: UInt32 = 0, bits = 0
        for c in text {
            let v = values[Int(c)]
            if v == 0xFF { return nil }
            accumulator = accumulator << 6 | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
                accumulator &= (1 << UInt32(bits)) - 1
            }
        }
        if accumulator != 0 { return nil }
        return Data(out)
    }

    public static func decode(_ text: String) -> Data? { decode(Array(text.utf8)) }
}

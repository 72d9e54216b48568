import Foundation

/// base64url without padding (RFC 4648 §5), as JWS uses.
public enum Base64URL {
    public static func encode<D: DataProtocol>(_ data: D) -> String {
        var s = Data(data).base64EncodedString()
        s = s.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        while s.last == "=" { s.removeLast() }
        return s
    }

    public static func decode<C: Collection>(_ text: C) -> Data? where C.Element == UInt8 {
        var bytes = [UInt8]()
        bytes.reserveCapacity(text.count + 3)
        for c in text {
            switch c {
            case UInt8(ascii: "-"): bytes.append(UInt8(ascii: "+"))
            case UInt8(ascii: "_"): bytes.append(UInt8(ascii: "/"))
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"): bytes.append(c)
            default: return nil
            }
        }
        if bytes.count % 4 == 1 { return nil }
        while bytes.count % 4 != 0 { bytes.append(UInt8(ascii: "=")) }
        return Data(base64Encoded: Data(bytes))
    }

    public static func decode(_ text: String) -> Data? { decode(Array(text.utf8)) }
}

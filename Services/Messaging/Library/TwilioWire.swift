import CareMeshContracts
import Foundation

/// `application/x-www-form-urlencoded`, as Twilio sends webhooks and takes API requests: pairs
/// in order, a repeated name kept, space as "+", everything but unreserved characters
/// percent-encoded.
public enum FormEncoding {
    public static func encode(_ pairs: [(name: String, value: String)]) -> String {
        pairs.map { escape($0.name) + "=" + escape($0.value) }.joined(separator: "&")
    }

    /// `application/x-www-form-urlencoded`: unreserved bytes as they are, a space as `+`,
    /// every other UTF-8 byte as `%XX`.
    static func escape(_ s: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(b)
            case UInt8(ascii: " "):
                out.append(UInt8(ascii: "+"))
            default:
                out += [UInt8(ascii: "%"), hex[Int(b >> 4)], hex[Int(b & 0xF)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The pairs of a body; nil when a percent escape is malformed or the bytes it makes are
    /// not UTF-8.
    public static func decode(_ body: String) -> [(name: String, value: String)]? {
        var out: [(name: String, value: String)] = []
        for part in body.utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            let kv = part.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = unescape(kv[0]), let value = kv.count > 1 ? unescape(kv[1]) : "" else { return nil }
            out.append((name, value))
        }
        return out
    }

    static func unescape(_ s: Substring.UTF8View) -> String? {
        func digit(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(s.count)
        var i = s.startIndex
        while i < s.endIndex {
            let b = s[i]
            if b == UInt8(ascii: "%") {
                let h = s.index(after: i)
                guard h < s.endIndex, s.index(after: h) < s.endIndex, let hi = digit(s[h]), let lo = digit(s[s.index(after: h)]) else { return nil }
                bytes.append(hi << 4 | lo)
                i = s.index(h, offsetBy: 2)
            } else {
                bytes.append(b == UInt8(ascii: "+") ? UInt8(ascii: " ") : b)
                i = s.index(after: i)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}

/// JSON text for a flat object of strings, keys sorted (what the webhook log stores for headers
/// and form bodies), without Foundation's generic serializer. A NUL becomes U+FFFD: PostgreSQL's
/// text and jsonb cannot hold one.
public enum JSONText {
    public static func object(_ fields: [String: String]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(fields.reduce(2) { $0 + $1.key.utf8.count + $1.value.utf8.count + 6 })
        out.append(UInt8(ascii: "{"))
        for (i, key) in fields.keys.sorted().enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            string(key, into: &out)
            out.append(UInt8(ascii: ":"))
            string(fields[key]!, into: &out)
        }
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }

    /// `s` as a JSON string, byte by byte (a String's UTF-8 is valid: bytes of 0x80 and above
    /// are copied as they are); NUL becomes U+FFFD (jsonb refuses \u0000), or `\u0000` when
    /// `escapingNUL` (JSON that is not stored: the provider sandbox's answers).
    private static let hex = Array("0123456789abcdef".utf8)

    public static func string(_ s: String, into out: inout [UInt8], escapingNUL: Bool = false) {
        out.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case UInt8(ascii: "\n"): out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case UInt8(ascii: "\r"): out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case UInt8(ascii: "\t"): out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0 where !escapingNUL: out += [0xEF, 0xBF, 0xBD]
            case 0..<0x20: out += Array(#"\u00"#.utf8) + [hex[Int(b >> 4)], hex[Int(b & 0xF)]]
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

/// Twilio's voice call statuses, read as CareMesh's `CallStatus`.
public enum TwilioCallStatus {
    /// `CallStatus` and, with answering-machine detection on, `AnsweredBy`. Only a confirmed
    /// person is an answer: a machine, a fax, or an answer Twilio could not classify
    /// ("unknown") is MACHINE, so a care alert keeps escalating (the coordinator can still
    /// acknowledge it in the app). nil for a status Twilio may add later.
    public static func status(_ callStatus: String, answeredBy: String?) -> Caremesh_Messaging_V1_CallStatus? {
        let person = answeredBy.map { $0 == "human" } ?? true
        switch callStatus {
        case "queued", "initiated": return .queued
        case "ringing": return .ringing
        case "in-progress", "answered": return person ? .inProgress : .machine
        case "completed": return person ? .completed : .machine
        case "busy": return .busy
        case "no-answer": return .noAnswer
        case "failed": return .failed
        case "canceled": return .canceled
        default: return nil
        }
    }
}

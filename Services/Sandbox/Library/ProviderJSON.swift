import Foundation
import MessagingService

/// A provider's JSON answer, written in the order its fields are given (as Twilio and Orange
/// write theirs) without Foundation's `JSONSerialization`, whose dynamic casts and sorted keys
/// (compared as `NSString`s) were a fifth of the sandbox's CPU under `bench messaging`.
/// Strings are written by messaging's `JSONText.string`.
///
/// ```swift
/// let body: ProviderJSON = ["sid": .string(id), "num_segments": "1", "error": ["code": 21211]]
/// body.data  // {"sid":"SM…","num_segments":"1","error":{"code":21211}}
/// ```
enum ProviderJSON: Sendable, ExpressibleByStringInterpolation, ExpressibleByIntegerLiteral, ExpressibleByDictionaryLiteral {
    case string(String)
    case int(Int)
    case object([(String, ProviderJSON)])
    case array([ProviderJSON])

    init(stringLiteral value: String) { self = .string(value) }
    init(stringInterpolation: DefaultStringInterpolation) { self = .string(String(stringInterpolation: stringInterpolation)) }
    init(integerLiteral value: Int) { self = .int(value) }
    init(dictionaryLiteral elements: (String, ProviderJSON)...) { self = .object(elements) }

    /// The UTF-8 JSON text.
    var data: Data {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(into: &out)
        return Data(out)
    }

    private func write(into out: inout [UInt8]) {
        switch self {
        case .string(let s): JSONText.string(s, into: &out, escapingNUL: true)
        case .int(let n): out.append(contentsOf: String(n).utf8)
        case .object(let fields):
            out.append(UInt8(ascii: "{"))
            for (i, (key, value)) in fields.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONText.string(key, into: &out, escapingNUL: true)
                out.append(UInt8(ascii: ":"))
                value.write(into: &out)
            }
            out.append(UInt8(ascii: "}"))
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                item.write(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        }
    }
}

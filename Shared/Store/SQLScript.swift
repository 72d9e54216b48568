/// Splits a SQL file into statements, because the extended query protocol that postgres-nio
/// speaks takes one statement at a time. Semicolons inside quotes ('…', "…"), dollar-quoted
/// bodies ($$…$$, $tag$…$tag$) and comments (-- …, /* … */, nested) do not split.
public enum SQLScript {
    public static func statements(_ sql: String) -> [String] {
        let s = Array(sql.utf8)
        var out: [String] = []
        var start = 0
        var i = 0
        func flush(_ end: Int) {
            let text = String(decoding: s[start..<end], as: UTF8.self)
            if !isBlank(text) { out.append(text.trimmingWhitespace()) }
        }
        while i < s.count {
            let c = s[i]
            switch c {
            case UInt8(ascii: "'"), UInt8(ascii: "\""):
                i += 1
                while i < s.count {
                    if s[i] == c {
                        if i + 1 < s.count && s[i + 1] == c { i += 2; continue }  // doubled quote
                        break
                    }
                    i += 1
                }
                i += 1
            case UInt8(ascii: "-") where i + 1 < s.count && s[i + 1] == UInt8(ascii: "-"):
                while i < s.count && s[i] != UInt8(ascii: "\n") { i += 1 }
            case UInt8(ascii: "/") where i + 1 < s.count && s[i + 1] == UInt8(ascii: "*"):
                var depth = 1
                i += 2
                while i < s.count && depth > 0 {
                    if s[i] == UInt8(ascii: "/") && i + 1 < s.count && s[i + 1] == UInt8(ascii: "*") { depth += 1; i += 2 }
                    else if s[i] == UInt8(ascii: "*") && i + 1 < s.count && s[i + 1] == UInt8(ascii: "/") { depth -= 1; i += 2 }
                    else { i += 1 }
                }
            case UInt8(ascii: "$"):
                // $tag$ where tag is empty or an identifier not starting with a digit
                var j = i + 1
                while j < s.count && (isIdentifier(s[j])) { j += 1 }
                if j < s.count && s[j] == UInt8(ascii: "$") && !(j > i + 1 && isDigit(s[i + 1])) {
                    let tag = Array(s[i...j])
                    i = j + 1
                    while i < s.count {
                        if s[i] == UInt8(ascii: "$") && i + tag.count <= s.count && Array(s[i..<(i + tag.count)]) == tag {
                            i += tag.count
                            break
                        }
                        i += 1
                    }
                } else {
                    i += 1
                }
            case UInt8(ascii: ";"):
                flush(i)
                i += 1
                start = i
            default:
                i += 1
            }
        }
        flush(min(i, s.count))
        return out
    }

    private static func isDigit(_ c: UInt8) -> Bool { c >= 48 && c <= 57 }
    private static func isIdentifier(_ c: UInt8) -> Bool {
        isDigit(c) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 95 || c >= 128
    }

    /// Only whitespace and comments.
    private static func isBlank(_ text: String) -> Bool {
        var rest = Substring(text)
        while true {
            rest = rest.drop(while: { $0.isWhitespace })
            if rest.hasPrefix("--") { rest = rest.drop(while: { $0 != "\n" }); continue }
            if rest.hasPrefix("/*"), let end = rest.range(of: "*/") { rest = rest[end.upperBound...]; continue }
            return rest.isEmpty
        }
    }
}

extension String {
    func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let last = scalars.lastIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        return String(scalars[first...last])
    }
}

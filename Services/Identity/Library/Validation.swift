import CareMeshContracts
import CareMeshRPC
import Foundation

/// The checks identity applies to what callers send, each naming the field it guards.
enum Validate {
    /// A normalised email (trimmed; the domain lowercased), or nil if it is not one.
    static func email(_ raw: String) -> String? {
        let s = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (3...254).contains(s.utf8.count), let at = s.lastIndex(of: "@") else { return nil }
        let local = s[..<at], domain = s[s.index(after: at)...]
        guard !local.isEmpty, local.utf8.count <= 64, !domain.isEmpty, domain.contains("."),
              !domain.hasPrefix("."), !domain.hasSuffix("."), !domain.contains(".."),
              !s.contains(where: { $0.isWhitespace || $0 == "<" || $0 == ">" || $0 == "," || $0 == ";" }),
              !local.contains("@"),
              domain.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." })
        else { return nil }
        return "\(local)@\(domain.lowercased())"
    }

    /// NIST SP 800-63B: length is what matters (at least 12 here, at most 128), no composition
    /// rules; refuse the few passwords every list starts with and the email itself.
    static func password(_ p: String, email: String, into v: inout FieldViolations, field: String = "password") {
        let count = p.count
        if count < 12 { return v.add(field, "must be at least 12 characters") }
        if count > 128 { return v.add(field, "must be at most 128 characters") }
        let lower = p.lowercased()
        if Set(lower).count < 4 || common.contains(where: { lower.contains($0) }) || lower == email.lowercased()
            || (!email.isEmpty && lower.contains(email.lowercased().split(separator: "@").first.map(String.init) ?? "\u{0}")) {
            v.add(field, "is too easy to guess")
        }
    }

    private static let common = ["password", "123456", "qwerty", "azerty", "letmein", "iloveyou", "admin", "welcome",
                                 "abc123", "111111", "caremesh"]

    static func name(_ s: String, into v: inout FieldViolations, field: String, max: Int = 200) {
        let t = s.trimmingCharacters(in: .whitespacesAndNewlines)
        if t.isEmpty { v.add(field, "is required") } else if t.count > max { v.add(field, "must be at most \(max) characters") }
        else if t.contains(where: { $0.isNewline || ($0.asciiValue.map { $0 < 0x20 } ?? false) }) {
            v.add(field, "must not contain control characters")
        }
    }

    /// A BCP 47 tag as CareMesh stores it: `[a-z]{2,3}` and an optional `-` with 2 to 8
    /// letters or digits (the tables' CHECK says the same).
    static func languageTag(_ s: String, into v: inout FieldViolations, field: String) {
        v.check(s.range(of: "^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$", options: .regularExpression) != nil, field,
                "must be a BCP 47 language tag such as en, fr or pt-BR")
    }

    static func httpsURL(_ s: String, into v: inout FieldViolations, field: String, required: Bool) {
        if s.isEmpty {
            if required { v.add(field, "is required") }
            return
        }
        guard s.count <= 500, let url = URL(string: s), url.scheme == "https", let host = url.host, !host.isEmpty else {
            return v.add(field, "must be an https URL of at most 500 characters")
        }
    }

    /// A UUID in canonical form, or nil.
    static func uuid(_ s: String) -> UUID? { UUID(uuidString: s) }

    /// YYYY-MM-DD as a date at midnight UTC, or nil.
    static func date(_ s: String) -> Date? {
        guard s.count == 10 else { return nil }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd"
        guard let d = f.date(from: s), f.string(from: d) == s else { return nil }
        return d
    }
}

/// Roles as the database and tokens spell them, and as the API's enum does.
enum Roles {
    static let names = Caremesh_Identity_V1_Role.storedNames
    static func name(_ role: Caremesh_Identity_V1_Role) -> String? { role.storedName }
    static func role(_ name: String) -> Caremesh_Identity_V1_Role { .init(storedName: name) }
    /// What a person may ask for when registering (a professional is registered as a user until
    /// the licence is verified); other roles are given by an admin.
    static let selfService: Set<Caremesh_Identity_V1_Role> = [.user, .volunteer, .professional]
    static let admin: Set<String> = ["admin"]
}


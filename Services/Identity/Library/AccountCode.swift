import Crypto
import Foundation

/// An emailed single-use code (password reset, email verification): 8 random digits, kept only
/// as HMAC-SHA256 under identity's key over its purpose, its account and itself. Pure.
enum AccountCode {
    enum Purpose: String, Sendable {
        case passwordReset = "password_reset"
        case emailVerification = "email_verification"
    }

    /// How long a code works.
    static let lifetime: Duration = .seconds(15 * 60)
    /// Wrong tries after which a code stops working.
    static let maxWrongTries = 5
    /// A new code is not emailed sooner than this after the last (a flood of requests sends one).
    static let resendAfter: Duration = .seconds(60)

    static func new<G: RandomNumberGenerator>(using generator: inout G) -> String {
        String(format: "%08d", Int.random(in: 0...99_999_999, using: &generator))
    }

    /// Eight digits, spaces and dashes ignored (a code read off an email and typed), or nil.
    static func normalized(_ text: String) -> String? {
        let digits = text.filter { $0 != " " && $0 != "-" }
        guard digits.count == 8, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return digits
    }

    static func digest(_ code: String, purpose: Purpose, user: UUID, key: SymmetricKey) -> Data {
        Data(HMAC<SHA256>.authenticationCode(for: Data("\(purpose.rawValue):\(user.uuidString.lowercased()):\(code)".utf8), using: key))
    }
}

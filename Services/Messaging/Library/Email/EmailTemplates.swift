import CareMeshContracts

/// What an email of each kind says (messaging's own text; the caller gives only values). Pure.
enum EmailTemplates {
    struct Rendered: Sendable, Equatable {
        var kind: String
        var subject: String
        var text: String
    }

    static let kinds: [Caremesh_Messaging_V1_EmailKind: String] = [
        .passwordReset: "password_reset", .emailVerification: "email_verification", .accountLocked: "account_locked",
    ]

    /// The variables each kind needs.
    static let needs: [Caremesh_Messaging_V1_EmailKind: [String]] = [
        .passwordReset: ["code", "minutes"], .emailVerification: ["code", "minutes"], .accountLocked: ["minutes"],
    ]

    /// The email, or the names of the variables missing (nil kind: unknown).
    static func render(_ kind: Caremesh_Messaging_V1_EmailKind, _ values: [String: String]) -> Result<Rendered, Missing>? {
        guard let name = kinds[kind], let needed = needs[kind] else { return nil }
        let missing = needed.filter { (values[$0] ?? "").isEmpty }
        guard missing.isEmpty else { return .failure(Missing(names: missing)) }
        let v = { (key: String) in values[key] ?? "" }
        let (subject, text): (String, String)
        switch kind {
        case .passwordReset:
            subject = "Your CareMesh password reset code"
            text = """
                Someone asked to reset the password of your CareMesh account.

                Your code: \(v("code"))

                It works once, for \(v("minutes")) minutes. If you did not ask, ignore this email: your password stays as it is.
                """
        case .emailVerification:
            subject = "Confirm your CareMesh email"
            text = """
                Welcome to CareMesh. To confirm this is your email, enter this code in the app:

                \(v("code"))

                It works once, for \(v("minutes")) minutes.
                """
        default:
            subject = "Your CareMesh account is locked for a while"
            text = """
                There were too many failed sign-ins to your CareMesh account, so it is locked for \(v("minutes")) minutes.

                If that was not you, reset your password once the lock ends.
                """
        }
        return .success(Rendered(kind: name, subject: subject, text: text))
    }

    struct Missing: Error, Equatable {
        var names: [String]
    }
}

import CareMeshContracts
import CareMeshRPC
import CareMeshTesting
import Foundation
import ProviderSandbox
import Testing

/// Account recovery (issue 33): identity's codes, emailed through messaging and SendGrid's v3
/// mail send (the sandbox), a password reset that works once and ends every session, a password
/// change, and the email verified at registration.
extension SmsTests {
    /// Registers an account; its email, password and session.
    func register(_ s: Stack, role: Caremesh_Identity_V1_Role = .user) async throws
        -> (email: String, password: String, session: Caremesh_Identity_V1_Session, id: String)
    {
        var r = Caremesh_Identity_V1_RegisterRequest()
        r.role = role
        r.email = "person.\(UInt32.random(in: 0...UInt32.max))@example.org"
        r.password = "the first long passphrase"
        r.name = "Recovering Person"
        r.phone = "+4479\(Int.random(in: 10_000_000...99_999_999))"
        let made = try await s.client.call(IdentityMethods.register, request: r)
        return (r.email, r.password, made.session, made.user.id)
    }

    /// The code in the latest email of `subject` to `address` (waiting for it).
    func emailedCode(_ s: Stack, to address: String, subject: String, after count: Int = 0) async throws -> String {
        try await TestStack.eventually(timeout: .seconds(15)) {
            let mails = s.sandbox.emails.filter { $0.to == address && $0.subject == subject }
            guard mails.count > count, let match = mails.last!.text.firstMatch(of: /\b([0-9]{8})\b/) else {
                throw RPCError(.unavailable, "no new email '\(subject)' to \(address) yet")
            }
            return String(match.1)
        }
    }

    func resetPassword(_ s: Stack, _ email: String, _ code: String, _ password: String = "a brand new passphrase") async throws {
        _ = try await s.client.call(IdentityMethods.resetPassword, request: .with {
            $0.email = email
            $0.code = code
            $0.newPassword = password
        })
    }

    /// A new code (a minute after the last) that expires, and one worn out by wrong tries; a
    /// flood of requests sends one email.
    func expiringAndWornOutCodes(_ s: Stack, email: String, id: UUID, subject: String) async throws {
        // A new code (a minute later) that expires, and one worn out by wrong tries.
        _ = try await s.db.sql("UPDATE identity.account_codes SET created_at = now() - interval '2 minutes' WHERE user_id = \(id)")
        _ = try await s.client.call(IdentityMethods.requestPasswordReset, request: .with { $0.email = email })
        let second = try await emailedCode(s, to: email, subject: subject, after: 1)
        _ = try await s.db.sql("UPDATE identity.account_codes SET expires_at = now() - interval '1 second' WHERE user_id = \(id)")
        #expect(await fieldViolations { try await resetPassword(s, email, second) } == ["code"])
        _ = try await s.db.sql("UPDATE identity.account_codes SET created_at = now() - interval '2 minutes' WHERE user_id = \(id)")
        _ = try await s.client.call(IdentityMethods.requestPasswordReset, request: .with { $0.email = email })
        let third = try await emailedCode(s, to: email, subject: subject, after: 2)
        let off = third == "99999999" ? "99999998" : "99999999"
        for _ in 0..<5 {
            let violations = await fieldViolations { try await resetPassword(s, email, off) }
            #expect(violations == ["code"])
        }
        #expect(await fieldViolations { try await resetPassword(s, email, third) } == ["code"])
        // Asking again at once sends nothing more (one email per minute).
        _ = try await s.client.call(IdentityMethods.requestPasswordReset, request: .with { $0.email = email })
        try await Task.sleep(for: .milliseconds(500))
        #expect(s.sandbox.emails.filter { $0.to == email && $0.subject == subject }.count == 3)
    }

    static func bearer(_ session: Caremesh_Identity_V1_Session) -> CallOptions {
        CallOptions(metadata: ["authorization": "Bearer \(session.accessToken)"])
    }

    @Test func theEmailIsVerifiedWithTheCodeSentAtRegistrationOnce() async throws {
        try await withStack { s in
            let person = try await register(s)
            let code = try await emailedCode(s, to: person.email, subject: "Confirm your CareMesh email")
            let me = Self.bearer(person.session)
            let wrong = code == "00000000" ? "00000001" : "00000000"
            #expect(await fieldViolations {
                _ = try await s.client.call(IdentityMethods.verifyEmail, request: .with { $0.code = wrong }, options: me)
            } == ["code"])
            #expect(await fieldViolations {
                _ = try await s.client.call(IdentityMethods.verifyEmail, request: .with { $0.code = "12ab" }, options: me)
            } == ["code"])
            let user = try await s.client.call(IdentityMethods.verifyEmail, request: .with { $0.code = String(code.prefix(4)) + "-" + code.suffix(4) },
                                               options: me).user
            #expect(user.emailVerified && user.email == person.email)
            // Once only; a verified email asks for nothing more.
            #expect(await statusCode { _ = try await s.client.call(IdentityMethods.verifyEmail, request: .with { $0.code = code }, options: me) }
                    == .invalidArgument)
            #expect(await statusCode { _ = try await s.client.call(IdentityMethods.requestEmailVerification, request: .init(), options: me) }
                    == .failedPrecondition)
            // Messaging sends account emails for identity only.
            #expect(await statusCode {
                _ = try await s.client.call(MessagingMethods.sendEmail, request: .with { $0.to = "x@example.org"; $0.kind = .passwordReset
                    $0.clientCorrelator = "forged"; $0.variables = ["code": "12345678", "minutes": "15"] }, options: me)
            } == .permissionDenied)
        }
    }

    @Test func aResetCodeWorksOnceEndsEverySessionExpiresAndAnswersTheSameForUnknownEmails() async throws {
        try await withStack { s in
            let person = try await register(s)
            _ = try await emailedCode(s, to: person.email, subject: "Confirm your CareMesh email")
            // An unknown email is answered as a known one, and nothing is sent.
            let before = s.sandbox.emails.count
            _ = try await s.client.call(IdentityMethods.requestPasswordReset, request: .with { $0.email = "nobody.here@example.org" })
            #expect(await fieldViolations {
                _ = try await s.client.call(IdentityMethods.requestPasswordReset, request: .with { $0.email = "not an email" })
            } == ["email"])
            _ = try await s.client.call(IdentityMethods.requestPasswordReset, request: .with { $0.email = person.email.uppercased() })
            let subject = "Your CareMesh password reset code"
            let code = try await emailedCode(s, to: person.email, subject: subject)
            #expect(s.sandbox.emails.count == before + 1)
            // Sent, its body blanked: the table keeps no live code.
            _ = try await TestStack.eventually(timeout: .seconds(10)) {
                guard try await s.count("""
                    SELECT count(*) FROM messaging.emails WHERE kind = 'password_reset' AND status = 'sent' AND body_text NOT LIKE \("%\(code)%")
                    """) == 1 else { throw RPCError(.unavailable, "not sent yet") }
            }

            let email = person.email
            let wrong = code == "11111111" ? "22222222" : "11111111"
            #expect(await fieldViolations { try await resetPassword(s, email, wrong) } == ["code"])
            #expect(await fieldViolations { try await resetPassword(s, email, code, "short") } == ["new_password"])
            try await resetPassword(s, email, code)
            // Once: the same code again is wrong; every session ended; the new password signs in.
            #expect(await fieldViolations { try await resetPassword(s, email, code, "yet another passphrase") } == ["code"])
            #expect(await statusCode { _ = try await s.client.call(IdentityMethods.refresh, request: .with { $0.refreshToken = person.session.refreshToken }) }
                    == .unauthenticated)
            #expect(await statusCode { _ = try await s.client.call(IdentityMethods.login, request: .with { $0.email = person.email
                $0.password = person.password }) } == .unauthenticated)
            _ = try await s.client.call(IdentityMethods.login, request: .with { $0.email = person.email; $0.password = "a brand new passphrase" })

            try await expiringAndWornOutCodes(s, email: person.email, id: UUID(uuidString: person.id)!, subject: subject)
        }
    }

    @Test func aPasswordChangeNeedsTheCurrentOneAndEndsTheOtherSessions() async throws {
        try await withStack { s in
            let person = try await register(s)
            let other = try await s.client.call(IdentityMethods.login, request: .with { $0.email = person.email; $0.password = person.password })
            let me = Self.bearer(person.session)
            func change(_ current: String, _ next: String) async throws -> Caremesh_Identity_V1_Session {
                try await s.client.call(IdentityMethods.changePassword, request: .with { $0.currentPassword = current; $0.newPassword = next },
                                        options: me).session
            }
            #expect(await fieldViolations { _ = try await change("not the password", "a changed passphrase") } == ["current_password"])
            #expect(await fieldViolations { _ = try await change(person.password, person.password) } == ["new_password"])
            let fresh = try await change(person.password, "a changed passphrase")
            // The other sign-in's refresh token is dead, and its access token is refused once the router hears.
            #expect(await statusCode { _ = try await s.client.call(IdentityMethods.refresh, request: .with { $0.refreshToken = other.session.refreshToken }) }
                    == .unauthenticated)
            _ = try await TestStack.eventually(timeout: .seconds(10)) {
                let code = await statusCode(of: { _ = try await s.client.call(IdentityMethods.whoAmI, request: .init(),
                                                                              options: Self.bearer(other.session)) })
                guard code == .unauthenticated else { throw RPCError(.unavailable, "the old token still works") }
            }
            #expect(try await s.client.call(IdentityMethods.whoAmI, request: .init(), options: Self.bearer(fresh)).user.email == person.email)
            _ = try await s.client.call(IdentityMethods.login, request: .with { $0.email = person.email; $0.password = "a changed passphrase" })
        }
    }

    @Test func anEmailTheProviderRefusesForNowIsSentOnRetryAndOneThatExpiredIsNeverSent() async throws {
        try await withStack { s in
            let person = try await register(s)
            _ = try await emailedCode(s, to: person.email, subject: "Confirm your CareMesh email")
            // SendGrid answers 503 twice, then takes it: sent on the third attempt.
            s.sandbox.apply(.init(api: "sendgrid", to: person.email, sendErrors: [503, 503]))
            _ = try await s.client.call(IdentityMethods.requestPasswordReset, request: .with { $0.email = person.email })
            _ = try await emailedCode(s, to: person.email, subject: "Your CareMesh password reset code")
            let attempts = try await s.db.sql("""
                SELECT attempts, status FROM messaging.emails WHERE to_address = \(person.email) AND kind = 'password_reset'
                """).map { try $0.decode((Int32, String).self) }
            #expect(attempts.count == 1 && attempts[0].0 == 3 && attempts[0].1 == "sent")
            // One that expired while it waited is given up, blanked, never sent.
            let before = s.sandbox.emails.count
            _ = try await s.db.sql("""
                INSERT INTO messaging.emails (kind, to_address, subject, body_text, client_correlator, requested_by, expires_at, next_attempt_at)
                VALUES ('password_reset', 'late@example.org', 'Your CareMesh password reset code', 'code 12345678', 'late-1',
                        'service:identity', now() - interval '1 second', now())
                """)
            let failed = try await TestStack.eventually(timeout: .seconds(10)) {
                let rows = try await s.db.sql("SELECT status, body_text, error_message FROM messaging.emails WHERE client_correlator = 'late-1'")
                    .map { try $0.decode((String, String, String?).self) }
                guard rows.first?.0 == "failed" else { throw RPCError(.unavailable, "not given up yet") }
                return rows[0]
            }
            #expect(!failed.1.contains("12345678") && failed.2 == "expired before it could be sent")
            #expect(s.sandbox.emails.count == before)
        }
    }
}

import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Crypto
import Foundation
import Logging
import PostgresNIO

/// Account recovery and email verification (issue 33): codes emailed through messaging
/// (`SendEmail`, as `service:identity`, with a token identity signs for itself), password reset
/// and change (every session ended), and the email confirmed.
///
/// Asking for a reset answers the same, at about the same speed, whether or not the email has
/// an account: the email goes out after the answer.
final class Recovery: Sendable {
    let accounts: Accounts
    let client: RPCClient
    let key: SymmetricKey
    let logger: Logger

    init(accounts: Accounts, client: RPCClient, logger: Logger) {
        self.accounts = accounts
        self.client = client
        self.key = accounts.configuration.accountCodeKey
        self.logger = logger
    }

    var store: Store { accounts.store }

    static let wrongCode = RPCError.invalidArgument(field: "code", "is wrong or has expired; ask for a new one")

    // MARK: - Codes

    /// A fresh code of `purpose` for `user`, replacing the last one, unless that one is younger
    /// than `resendAfter` (nil: a flood of requests sends one email). With when it was made.
    func issue(_ purpose: AccountCode.Purpose, user: UUID) async throws -> (code: String, at: Double)? {
        var generator = SystemRandomNumberGenerator()
        let code = AccountCode.new(using: &generator)
        let digest = ByteBuffer(bytes: AccountCode.digest(code, purpose: purpose, user: user, key: key))
        let at = try await store.query("""
            INSERT INTO account_codes AS a (user_id, purpose, code_hash, expires_at)
            VALUES (\(user), \(purpose.rawValue), \(digest), now() + make_interval(secs => \(AccountCode.lifetime.seconds)))
            ON CONFLICT (user_id, purpose) DO UPDATE
                SET code_hash = excluded.code_hash, expires_at = excluded.expires_at, wrong_tries = 0, created_at = now()
                WHERE a.created_at < now() - make_interval(secs => \(AccountCode.resendAfter.seconds))
            RETURNING extract(epoch FROM created_at)::float8
            """).first?.decode(Double.self)
        return at.map { (code, $0) }
    }

    /// Checks `code` for (`user`, `purpose`); a wrong one counts against the code. Throws
    /// `wrongCode` for a wrong, expired, exhausted or missing code.
    func check(_ code: String, _ purpose: AccountCode.Purpose, user: UUID) async throws {
        let digest = AccountCode.digest(code, purpose: purpose, user: user, key: key)
        let right = try await store.withTransaction { c -> Bool in
            guard let row = try await c.query("""
                SELECT code_hash, expires_at > now() AND wrong_tries < \(AccountCode.maxWrongTries) FROM account_codes
                WHERE user_id = \(user) AND purpose = \(purpose.rawValue) FOR UPDATE
                """, logger: self.logger).collect().first else { return false }
            let (stored, live) = try row.decode((ByteBuffer, Bool).self)
            guard live else { return false }
            guard PasswordHasher.constantTimeEqual(Array(stored.readableBytesView), Array(digest)) else {
                try await c.query("""
                    UPDATE account_codes SET wrong_tries = wrong_tries + 1 WHERE user_id = \(user) AND purpose = \(purpose.rawValue)
                    """, logger: self.logger)
                return false
            }
            return true
        }
        guard right else { throw Self.wrongCode }
    }

    /// Uses up the code in `c`'s transaction: false if it is no longer there as checked.
    func consume(_ code: String, _ purpose: AccountCode.Purpose, user: UUID, on c: PostgresConnection) async throws -> Bool {
        let digest = ByteBuffer(bytes: AccountCode.digest(code, purpose: purpose, user: user, key: key))
        return try await c.query("""
            DELETE FROM account_codes
            WHERE user_id = \(user) AND purpose = \(purpose.rawValue) AND code_hash = \(digest) AND expires_at > now()
            RETURNING 1
            """, logger: logger).hasRows()
    }

    /// Emails a code through messaging.
    func mail(_ kind: Caremesh_Messaging_V1_EmailKind, to email: String, code: String, correlator: String) async throws {
        let token = try await accounts.accessToken(subject: "service:identity", roles: ["service"], session: "").token
        let request = Caremesh_Messaging_V1_SendEmailRequest.with {
            $0.to = email
            $0.kind = kind
            $0.variables = ["code": code, "minutes": "\(Int(AccountCode.lifetime.seconds) / 60)"]
            $0.clientCorrelator = correlator
            $0.expiresInS = UInt32(AccountCode.lifetime.seconds)
        }
        _ = try await client.call(MessagingMethods.sendEmail, request: request,
                                  options: CallOptions(metadata: ["authorization": "Bearer \(token)"]))
    }

    /// Issues and emails a code after the caller was answered (a failure is logged: the person
    /// asks again).
    func issueAndMail(_ purpose: AccountCode.Purpose, user: UUID, email: String) async throws {
        guard let (code, at) = try await issue(purpose, user: user) else { return }
        let kind: Caremesh_Messaging_V1_EmailKind = purpose == .passwordReset ? .passwordReset : .emailVerification
        Task {
            do {
                try await self.mail(kind, to: email, code: code, correlator: "\(purpose.rawValue):\(user.text):\(Int64(at * 1_000))")
            } catch {
                self.logger.warning("account email not handed to messaging", metadata: ["user.id": "\(user.text)",
                                                                                         "purpose": "\(purpose.rawValue)",
                                                                                         "error.kind": "\(RPCError.loggableKind(of: error))"])
            }
        }
    }

    // MARK: - Calls

    func requestReset(_ r: Caremesh_Identity_V1_RequestPasswordResetRequest) async throws -> Caremesh_Identity_V1_RequestPasswordResetResponse {
        var v = FieldViolations()
        let email = Validate.email(r.email)
        v.check(email != nil, "email", "must be a valid email address")
        try v.throwIfAny()
        let rows = try await store.query("SELECT id, email FROM users WHERE lower(email) = lower(\(email!)) AND is_active")
        if let row = rows.first {
            let (id, address) = try row.decode((UUID, String).self)
            try await issueAndMail(.passwordReset, user: id, email: address)
        }
        return .init()
    }

    func reset(_ r: Caremesh_Identity_V1_ResetPasswordRequest) async throws -> Caremesh_Identity_V1_ResetPasswordResponse {
        var v = FieldViolations()
        let email = Validate.email(r.email)
        v.check(email != nil, "email", "must be a valid email address")
        let code = AccountCode.normalized(r.code)
        v.check(code != nil, "code", "must be the 8 digits from the email")
        Validate.password(r.newPassword, email: email ?? "", into: &v, field: "new_password")
        try v.throwIfAny()
        guard let row = try await store.query("SELECT id FROM users WHERE lower(email) = lower(\(email!)) AND is_active").first else {
            throw Self.wrongCode
        }
        let user = try row.decode(UUID.self)
        try await check(code!, .passwordReset, user: user)
        // Only a right code costs a password hash.
        let password = r.newPassword, hasher = accounts.hasher
        let hash = try await accounts.gate.run { Result { try hasher.hash(password) } }.get()
        try await store.withTransaction { c in
            guard try await self.consume(code!, .passwordReset, user: user, on: c) else { throw Self.wrongCode }
            try await self.setPassword(hash, user: user, reason: "password_reset", on: c)
        }
        return .init()
    }

    func change(_ r: Caremesh_Identity_V1_ChangePasswordRequest, _ context: RPCContext) async throws -> Caremesh_Identity_V1_ChangePasswordResponse {
        let me = try context.requireCaller().requireUserID()
        var v = FieldViolations()
        v.check(!r.currentPassword.isEmpty && r.currentPassword.utf8.count <= 1_024, "current_password", "is required")
        try v.throwIfAny()
        guard let row = try await store.query("SELECT email, password_hash, role FROM users WHERE id = \(me) AND is_active").first else {
            throw RPCError(.unauthenticated, "no active account")
        }
        let (email, stored, role) = try row.decode((String, String, String).self)
        Validate.password(r.newPassword, email: email, into: &v, field: "new_password")
        v.check(r.newPassword != r.currentPassword, "new_password", "must differ from the current one")
        try v.throwIfAny()
        let current = r.currentPassword, next = r.newPassword, hasher = accounts.hasher
        let matches = await accounts.gate.run { (try? hasher.verify(current, against: stored)) ?? false }
        guard matches else { throw RPCError.invalidArgument(field: "current_password", "is not correct") }
        let hash = try await accounts.gate.run { Result { try hasher.hash(next) } }.get()
        var response = Caremesh_Identity_V1_ChangePasswordResponse()
        response.session = try await store.withTransaction { c in
            let version = try await self.setPassword(hash, user: me, reason: "password_changed", on: c)
            return try await self.accounts.issueSession(c, userID: me.text, role: role, version: version, family: UUID(), parent: nil)
        }
        return response
    }

    /// The new password hash, every session ended (refresh tokens revoked, access tokens
    /// refused from the new token version), the sign-in lock lifted. Returns the new version.
    @discardableResult
    func setPassword(_ hash: String, user: UUID, reason: String, on c: PostgresConnection) async throws -> Int32 {
        try await c.query("UPDATE users SET password_hash = \(hash), locked_until = NULL WHERE id = \(user)", logger: logger)
        try await c.query("DELETE FROM login_failures WHERE user_id = \(user)", logger: logger)
        try await c.query("""
            UPDATE refresh_tokens SET revoked_at = now(), revoked_reason = \(reason) WHERE user_id = \(user) AND revoked_at IS NULL
            """, logger: logger)
        try await TokenRevocation.allTokens(c, user: user, reason: reason, logger: logger)
        return try await c.query("SELECT token_version FROM users WHERE id = \(user)", logger: logger).first(Int32.self) ?? 0
    }

    func requestVerification(_ context: RPCContext) async throws -> Caremesh_Identity_V1_RequestEmailVerificationResponse {
        let me = try context.requireCaller().requireUserID()
        guard let row = try await store.query("SELECT email, email_verified FROM users WHERE id = \(me) AND is_active").first else {
            throw RPCError(.unauthenticated, "no active account")
        }
        let (email, verified) = try row.decode((String, Bool).self)
        guard !verified else { throw RPCError(.failedPrecondition, "this email is already verified") }
        try await issueAndMail(.emailVerification, user: me, email: email)
        return .init()
    }

    func verify(_ r: Caremesh_Identity_V1_VerifyEmailRequest, _ context: RPCContext) async throws -> Caremesh_Identity_V1_VerifyEmailResponse {
        let me = try context.requireCaller().requireUserID()
        var v = FieldViolations()
        let code = AccountCode.normalized(r.code)
        v.check(code != nil, "code", "must be the 8 digits from the email")
        try v.throwIfAny()
        try await check(code!, .emailVerification, user: me)
        var response = Caremesh_Identity_V1_VerifyEmailResponse()
        response.user = try await store.withTransaction { c in
            guard try await self.consume(code!, .emailVerification, user: me, on: c) else { throw Self.wrongCode }
            return try await self.accounts.loadUser(c, """
                UPDATE users SET email_verified = true WHERE id = \(me) RETURNING \(unescaped: Accounts.userColumns)
                """)
        }
        return response
    }
}

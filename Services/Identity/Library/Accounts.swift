import CareMeshAuth
import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Crypto
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// Sign-up, sign-in, sessions and the caller's own account.
final class Accounts: Sendable {
    let store: Store
    let outbox: Outbox
    let keyring: Keyring
    let configuration: IdentityConfiguration
    let hasher: PasswordHasher
    let gate: HashGate
    /// Derives refresh tokens' successors (`IdentityConfiguration.refreshSuccessorKey`).
    let successorKey: SymmetricKey
    let logger: Logger

    init(store: Store, outbox: Outbox, keyring: Keyring, configuration: IdentityConfiguration, logger: Logger) {
        self.store = store
        self.outbox = outbox
        self.keyring = keyring
        self.configuration = configuration
        self.hasher = PasswordHasher(parameters: configuration.passwordParameters)
        self.gate = HashGate(limit: configuration.hashConcurrency)
        self.successorKey = configuration.refreshSuccessorKey
        self.logger = logger
    }

    static let invalidCredentials = RPCError(.unauthenticated, "the email or password is not correct",
                                             details: [RPCError.detail(reason: "INVALID_CREDENTIALS", domain: "identity")])
    static let invalidRefreshToken = RPCError(.unauthenticated, "the refresh token is not valid; sign in again",
                                              details: [RPCError.detail(reason: "REFRESH_TOKEN_INVALID", domain: "identity")])

    // MARK: - Register

    func register(_ r: Caremesh_Identity_V1_RegisterRequest) async throws -> Caremesh_Identity_V1_RegisterResponse {
        var v = FieldViolations()
        let email = Validate.email(r.email)
        v.check(email != nil, "email", "must be a valid email address")
        Validate.password(r.password, email: email ?? "", into: &v)
        Validate.name(r.name, into: &v, field: "name")
        v.phone(r.phone, "phone")
        let asked = r.role == .unspecified ? .user : r.role
        v.check(Roles.selfService.contains(asked), "role",
                "must be USER, VOLUNTEER or PROFESSIONAL; caregiver, coordinator, EA and admin are given by an admin")
        // Staff roles are granted, never taken: a professional is a user until an admin
        // verifies the licence they submit (SubmitProfessionalCredentials).
        let role = asked == .professional ? .user : asked
        try v.throwIfAny()
        let password = r.password, hasher = self.hasher
        let hash = try await gate.run { Result { try hasher.hash(password) } }.get()
        let roleName = Roles.name(role)!
        let name = r.name.trimmingCharacters(in: .whitespacesAndNewlines)
        do {
            return try await store.withTransaction { c in
                let user = try await self.loadUser(c, """
                    INSERT INTO users (email, password_hash, role) VALUES (\(email!), \(hash), \(roleName))
                    RETURNING \(unescaped: Self.userColumns)
                    """)
                try await c.query("""
                    INSERT INTO user_profiles (user_id, name, phone) VALUES (\(UUID(uuidString: user.id)!), \(name), \(r.phone))
                    """, logger: self.logger)
                var event = Caremesh_Identity_V1_UserRegistered()
                event.userID = user.id
                event.role = role
                _ = try await self.outbox.append(event, key: user.id, on: c)
                var response = Caremesh_Identity_V1_RegisterResponse()
                response.user = user
                response.session = try await self.issueSession(c, userID: user.id, role: roleName, version: 0, family: UUID(), parent: nil)
                return response
            }
        } catch {
            if let (state, constraint) = PSQLError.violation(in: error), state == "23505" {
                if constraint == "users_email_key" { throw Self.taken("email", "an account with this email already exists") }
                if constraint == "user_profiles_phone_key" { throw Self.taken("phone", "this phone number is already in use") }
            }
            throw error
        }
    }

    /// `ALREADY_EXISTS` naming the unique field.
    static func taken(_ field: String, _ description: String) -> RPCError {
        RPCError(.alreadyExists, "\(field): \(description)", details: [RPCError.fieldDetail(field, description)])
    }

    // MARK: - Login

    func login(_ r: Caremesh_Identity_V1_LoginRequest) async throws -> Caremesh_Identity_V1_LoginResponse {
        var v = FieldViolations()
        v.check(!r.email.isEmpty, "email", "is required")
        v.check(!r.password.isEmpty, "password", "is required")
        v.check(r.password.utf8.count <= 1024, "password", "is too long")
        try v.throwIfAny()
        let email = r.email.trimmingCharacters(in: .whitespacesAndNewlines)
        let rows = try await store.query("""
            SELECT id, password_hash, role, is_active, coalesce(locked_until > now(), false), token_version
            FROM users WHERE lower(email) = lower(\(email))
            """)
        let password = r.password, hasher = self.hasher
        guard let row = rows.first else {
            // The same work as a real check: an unknown email answers like a wrong password.
            await gate.run { hasher.verifyNothing(password) }
            throw Self.invalidCredentials
        }
        let (id, stored, role, active, locked, version) = try row.decode((UUID, String, String, Bool, Bool, Int32).self)
        let matches = await gate.run { (try? hasher.verify(password, against: stored)) ?? false }
        guard active, !locked else { throw Self.invalidCredentials }
        guard matches else {
            try await recordFailure(id)
            throw Self.invalidCredentials
        }
        let rehash: String? = hasher.needsRehash(stored) ? await gate.run { try? hasher.hash(password) } : nil
        return try await store.withTransaction { c in
            try await c.query("DELETE FROM login_failures WHERE user_id = \(id)", logger: self.logger)
            if let rehash {
                try await c.query("UPDATE users SET password_hash = \(rehash) WHERE id = \(id)", logger: self.logger)
            }
            var response = Caremesh_Identity_V1_LoginResponse()
            response.user = try await self.loadUser(c, "SELECT \(unescaped: Self.userColumns) FROM users WHERE id = \(id)")
            response.session = try await self.issueSession(c, userID: id.uuidString.lowercased(), role: role,
                                                           version: version, family: UUID(), parent: nil)
            return response
        }
    }

    /// Counts a failed sign-in; at the threshold within the window, locks the account (a
    /// suspicious activity and an `AccountLocked` event). The user row is locked first, so
    /// concurrent failures count one after another.
    private func recordFailure(_ id: UUID) async throws {
        let c = configuration
        try await store.withTransaction { tx in
            _ = try await tx.query("SELECT 1 FROM users WHERE id = \(id) FOR UPDATE", logger: self.logger).hasRows()
            try await tx.query("INSERT INTO login_failures (user_id) VALUES (\(id))", logger: self.logger)
            let count = try await tx.query("""
                SELECT count(*) FROM login_failures WHERE user_id = \(id) AND at > now() - make_interval(secs => \(Double(c.lockoutWindow)))
                """, logger: self.logger).first(Int64.self) ?? 0
            guard count >= c.lockoutThreshold else { return }
            let until = try await tx.query("""
                UPDATE users SET locked_until = now() + make_interval(secs => \(Double(c.lockoutDuration)))
                WHERE id = \(id) RETURNING extract(epoch FROM locked_until)::float8
                """, logger: self.logger).first(Double.self) ?? 0
            try await tx.query("DELETE FROM login_failures WHERE user_id = \(id)", logger: self.logger)
            _ = try await Suspicious.record(tx, outbox: self.outbox, userID: id, type: "MULTIPLE_FAILED_LOGINS",
                                            details: ["failures": "\(count)", "window_s": "\(c.lockoutWindow)"],
                                            ip: nil, logger: self.logger)
            var event = Caremesh_Identity_V1_AccountLocked()
            event.userID = id.uuidString.lowercased()
            event.lockedUntil = Google_Protobuf_Timestamp(epochSeconds: until)
            _ = try await self.outbox.append(event, key: event.userID, on: tx)
            self.logger.notice("account locked after repeated failed sign-ins", metadata: ["user_id": "\(event.userID)"])
        }
    }

    // MARK: - Sessions

    /// A new refresh token in `family` and an access token for it.
    func issueSession(_ c: PostgresConnection, userID: String, role: String, version: Int32, family: UUID, parent: UUID?) async throws
        -> Caremesh_Identity_V1_Session
    {
        let (refreshToken, hash) = Self.newRefreshToken()
        let ttl = Double(configuration.refreshTokenTTL)
        let refreshExpires = try await c.query("""
            INSERT INTO refresh_tokens (user_id, family_id, parent_id, token_hash, expires_at)
            VALUES (\(UUID(uuidString: userID)!), \(family), \(parent), \(hash), now() + make_interval(secs => \(ttl)))
            RETURNING extract(epoch FROM expires_at)::float8
            """, logger: logger).first(Double.self) ?? 0
        return try await session(userID: userID, role: role, version: version, family: family, refreshToken: refreshToken,
                                 refreshExpires: refreshExpires)
    }

    /// An opaque refresh token (256 random bits) and the SHA-256 it is stored as.
    static func newRefreshToken() -> (token: String, hash: ByteBuffer) {
        let token = Base64URL.encode(SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) })
        return (token, hash(token))
    }

    /// The successor of a presented refresh token: HMAC-SHA256 of it under identity's own key,
    /// as unguessable as a random token to anyone without the key, and the same every time.
    static func successor(of refreshToken: String, key: SymmetricKey) -> String {
        Base64URL.encode(Data(HMAC<SHA256>.authenticationCode(for: Data(refreshToken.utf8), using: key)))
    }

    static func hash(_ refreshToken: String) -> ByteBuffer { ByteBuffer(bytes: SHA256.hash(data: Data(refreshToken.utf8))) }

    /// The session for a stored refresh token: a signed access token beside it.
    func session(userID: String, role: String, version: Int32, family: UUID, refreshToken: String, refreshExpires: Double) async throws
        -> Caremesh_Identity_V1_Session
    {
        let (token, expires) = try await accessToken(subject: userID, roles: [role], session: family.uuidString.lowercased(),
                                                     version: Int64(version))
        var session = Caremesh_Identity_V1_Session()
        session.accessToken = token
        session.accessTokenExpiresAt = .init(seconds: expires)
        session.refreshToken = refreshToken
        session.refreshTokenExpiresAt = Google_Protobuf_Timestamp(epochSeconds: refreshExpires)
        session.tokenType = "Bearer"
        session.sessionID = family.uuidString.lowercased()
        return session
    }

    /// An access token for `subject`, signed with the current key, and when it expires. A user's
    /// carries the token version it was issued at (`tv`): the router refuses it once a later
    /// version is announced (`TokenRevocation`).
    func accessToken(subject: String, roles: [String], session: String, version: Int64? = nil) async throws -> (token: String, expires: Int64) {
        let key = try await keyring.signingKey()
        let now = Keyring.epochNow()
        let claims = AccessClaims(iss: AccessToken.issuer, aud: AccessToken.audience, sub: subject, roles: roles, sid: session,
                                  iat: now, nbf: now, exp: now + configuration.accessTokenTTL, jti: UUID().uuidString.lowercased(),
                                  tv: version)
        return (try AccessToken.sign(claims, kid: key.kid, key: key.privateKey), claims.exp)
    }

    /// A service's access token, for its secret (compared as SHA-256 digests in constant time).
    /// A wrong secret is recorded as suspicious activity.
    func issueServiceToken(_ r: Caremesh_Identity_V1_IssueServiceTokenRequest) async throws -> Caremesh_Identity_V1_IssueServiceTokenResponse {
        var v = FieldViolations()
        v.check(IdentityConfiguration.servicesWithSecrets.contains(r.service), "service",
                "must be one of \(IdentityConfiguration.servicesWithSecrets.joined(separator: ", "))")
        v.check(!r.secret.isEmpty && r.secret.utf8.count <= 512, "secret", "is required (at most 512 characters)")
        try v.throwIfAny()
        let presented = SHA256.hash(data: Data(r.secret.utf8))
        guard let expected = configuration.serviceSecrets[r.service],
              PasswordHasher.constantTimeEqual(Array(presented), Array(expected)) else {
            try await store.withTransaction { c in
                _ = try await Suspicious.record(c, outbox: self.outbox, userID: nil, type: "SERVICE_SECRET_REJECTED",
                                                details: ["service": r.service], ip: nil, logger: self.logger)
            }
            throw RPCError(.unauthenticated, "the service secret is not correct",
                           details: [RPCError.detail(reason: "INVALID_SERVICE_SECRET", domain: "identity")])
        }
        let (token, expires) = try await accessToken(subject: "service:\(r.service)", roles: ["service"], session: "")
        var response = Caremesh_Identity_V1_IssueServiceTokenResponse()
        response.accessToken = token
        response.expiresAt = .init(seconds: expires)
        return response
    }

    /// Rotates a refresh token. A token already rotated is accepted again only within the
    /// grace window, and answered with the successor it already has (two tabs refreshing at
    /// once share one new token; the session never forks); after it, presenting it means it was
    /// stolen or replayed: the whole family is revoked and recorded.
    ///
    /// The successor is derived from the presented token (`successor(of:key:)`), so a replay
    /// computes the same one and the database only finds it. The rotation is one statement
    /// (`rotate_refresh_token`, migrations 0103 and 0105): one round trip, plans kept by
    /// PL/pgSQL. Only a detected reuse takes a transaction of its own.
    func refresh(_ r: Caremesh_Identity_V1_RefreshRequest) async throws -> Caremesh_Identity_V1_RefreshResponse {
        var v = FieldViolations()
        v.check(!r.refreshToken.isEmpty, "refresh_token", "is required")
        v.check(r.refreshToken.utf8.count <= 256, "refresh_token", "is too long")
        try v.throwIfAny()
        let presented = Self.hash(r.refreshToken)
        let next = Self.successor(of: r.refreshToken, key: successorKey), nextHash = Self.hash(next)
        let grace = Double(configuration.refreshReuseGrace), ttl = Double(configuration.refreshTokenTTL)
        let rows = try await store.query("""
            SELECT outcome, user_id, family_id, role, expires_at, token_version
            FROM rotate_refresh_token(\(presented), \(nextHash), \(grace), \(ttl))
            """)
        guard let row = rows.first else { throw Self.invalidRefreshToken }
        let (outcome, userID, family, role, expires, version) = try row.decode((String, UUID?, UUID?, String?, Double?, Int32?).self)
        switch (outcome, userID, family, role, expires) {
        case ("issued", let user?, let family?, let role?, let expires?):
            var response = Caremesh_Identity_V1_RefreshResponse()
            response.session = try await session(userID: user.uuidString.lowercased(), role: role, version: version ?? 0, family: family,
                                                 refreshToken: next, refreshExpires: expires)
            return response
        case ("reused", let user?, let family?, _, _):
            try await store.withTransaction { c in
                try await c.query("""
                    UPDATE refresh_tokens SET revoked_at = now(), revoked_reason = 'reuse_detected'
                    WHERE family_id = \(family) AND revoked_at IS NULL
                    """, logger: self.logger)
                _ = try await Suspicious.record(c, outbox: self.outbox, userID: user, type: "REFRESH_TOKEN_REUSE",
                                                details: ["session_id": family.uuidString.lowercased()], ip: nil,
                                                logger: self.logger)
                try await TokenRevocation.session(c, user: user, session: family, reason: "reuse_detected", logger: self.logger)
            }
            logger.notice("a rotated refresh token was presented again; its session is revoked")
            throw Self.invalidRefreshToken
        default:
            throw Self.invalidRefreshToken
        }
    }

    func logout(_ context: RPCContext) async throws -> Caremesh_Identity_V1_LogoutResponse {
        let caller = try context.requireCaller()
        guard let user = caller.userID, let family = UUID(uuidString: caller.sessionID) else {
            throw RPCError(.unauthenticated, "the access token names no session")
        }
        try await store.withTransaction { c in
            try await c.query("""
                UPDATE refresh_tokens SET revoked_at = now(), revoked_reason = 'logout'
                WHERE family_id = \(family) AND user_id = \(user) AND revoked_at IS NULL
                """, logger: self.logger)
            try await TokenRevocation.session(c, user: user, session: family, reason: "logout", logger: self.logger)
        }
        return .init()
    }

    func logoutEverywhere(_ context: RPCContext) async throws -> Caremesh_Identity_V1_LogoutEverywhereResponse {
        let user = try context.requireCaller().requireUserID()
        return try await store.withTransaction { c in
            var families = Set<UUID>()
            for try await family in try await c.query("""
                UPDATE refresh_tokens SET revoked_at = now(), revoked_reason = 'logout_everywhere'
                WHERE user_id = \(user) AND revoked_at IS NULL RETURNING family_id
                """, logger: self.logger).decode(UUID.self) { families.insert(family) }
            try await TokenRevocation.allTokens(c, user: user, reason: "logout_everywhere", logger: self.logger)
            var response = Caremesh_Identity_V1_LogoutEverywhereResponse()
            response.revoked = UInt32(families.count)
            return response
        }
    }

    // MARK: - The caller's own account

    func whoAmI(_ context: RPCContext) async throws -> Caremesh_Identity_V1_WhoAmIResponse {
        let caller = try context.requireCaller()
        if caller.userID == nil && caller.has(role: "service") {
            // A service (subject "service:<name>"): its roles, and no account.
            var response = Caremesh_Identity_V1_WhoAmIResponse()
            response.roles = caller.roles
            return response
        }
        let id = try caller.requireUserID()
        return try await store.withConnection { c in
            var response = Caremesh_Identity_V1_WhoAmIResponse()
            response.user = try await self.loadUser(c, "SELECT \(unescaped: Self.userColumns) FROM users WHERE id = \(id)")
            if let profile = try await self.loadProfile(c, id) { response.profile = profile }
            response.verification = try await Credentials.state(c, id, logger: self.logger)
            response.roles = caller.roles
            response.sessionID = caller.sessionID
            return response
        }
    }

    func updateProfile(_ r: Caremesh_Identity_V1_UpdateProfileRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_UpdateProfileResponse
    {
        let id = try context.requireCaller().requireUserID()
        let p = r.profile
        var v = FieldViolations()
        Validate.name(p.name, into: &v, field: "profile.name")
        v.phone(p.phone, "profile.phone")
        v.check(p.address.count <= 500, "profile.address", "must be at most 500 characters")
        Validate.httpsURL(p.photoURL, into: &v, field: "profile.photo_url", required: false)
        if !p.preferences.language.isEmpty {
            Validate.languageTag(p.preferences.language, into: &v, field: "profile.preferences.language")
        }
        v.check(p.emergencyContacts.count <= 5, "profile.emergency_contacts", "at most 5")
        for (i, contact) in p.emergencyContacts.enumerated() {
            Validate.name(contact.name, into: &v, field: "profile.emergency_contacts[\(i)].name")
            v.phone(contact.phone, "profile.emergency_contacts[\(i)].phone")
            v.check(contact.relationship.count <= 50, "profile.emergency_contacts[\(i)].relationship", "at most 50 characters")
        }
        try v.throwIfAny()
        let preferences = try p.preferences.jsonString()
        let contacts = "[" + (try p.emergencyContacts.map { try $0.jsonString() }).joined(separator: ",") + "]"
        let name = p.name.trimmingCharacters(in: .whitespacesAndNewlines)
        let address: String? = p.address.isEmpty ? nil : p.address
        let photo: String? = p.photoURL.isEmpty ? nil : p.photoURL
        do {
            return try await store.withConnection { c in
                try await c.query("""
                    UPDATE user_profiles SET name = \(name), phone = \(p.phone), address = \(address), photo_url = \(photo),
                           preferences = \(preferences)::jsonb, emergency_contacts = \(contacts)::jsonb
                    WHERE user_id = \(id)
                    """, logger: self.logger)
                var response = Caremesh_Identity_V1_UpdateProfileResponse()
                if let profile = try await self.loadProfile(c, id) { response.profile = profile }
                return response
            }
        } catch {
            if let (state, constraint) = PSQLError.violation(in: error), state == "23505", constraint == "user_profiles_phone_key" {
                throw Self.taken("profile.phone", "this phone number is already in use")
            }
            throw error
        }
    }

    // MARK: - Rows

    static let userColumns = "id, email, role, is_active, email_verified, extract(epoch FROM created_at)::float8, extract(epoch FROM updated_at)::float8"

    func loadUser(_ c: PostgresConnection, _ query: PostgresQuery) async throws -> Caremesh_Identity_V1_User {
        try await Self.loadUser(c, query, logger: logger)
    }

    /// The user `query` selects (`userColumns`); `NOT_FOUND` when none.
    static func loadUser(_ c: PostgresConnection, _ query: PostgresQuery, logger: Logger) async throws -> Caremesh_Identity_V1_User {
        for try await row in try await c.query(query, logger: logger).decode((UUID, String, String, Bool, Bool, Double, Double).self) {
            return user(row)
        }
        throw RPCError(.notFound, "no such user")
    }

    static func user(_ row: (UUID, String, String, Bool, Bool, Double, Double)) -> Caremesh_Identity_V1_User {
        var u = Caremesh_Identity_V1_User()
        u.id = row.0.uuidString.lowercased()
        u.email = row.1
        u.role = Roles.role(row.2)
        u.active = row.3
        u.emailVerified = row.4
        u.createdAt = Google_Protobuf_Timestamp(epochSeconds: row.5)
        u.updatedAt = Google_Protobuf_Timestamp(epochSeconds: row.6)
        return u
    }

    func loadProfile(_ c: PostgresConnection, _ id: UUID) async throws -> Caremesh_Identity_V1_Profile? {
        let rows = try await c.query("""
            SELECT name, phone, coalesce(address, ''), coalesce(photo_url, ''), preferences::text, emergency_contacts::text
            FROM user_profiles WHERE user_id = \(id)
            """, logger: logger)
        for try await (name, phone, address, photo, prefs, contacts) in rows.decode((String, String, String, String, String, String).self) {
            var p = Caremesh_Identity_V1_Profile()
            p.userID = id.uuidString.lowercased()
            p.name = name
            p.phone = phone
            p.address = address
            p.photoURL = photo
            var options = JSONDecodingOptions()
            options.ignoreUnknownFields = true
            p.preferences = (try? Caremesh_Identity_V1_Preferences(jsonString: prefs, options: options)) ?? .init()
            p.emergencyContacts = (try? Caremesh_Identity_V1_EmergencyContact.array(fromJSONString: contacts, options: options)) ?? []
            return p
        }
        return nil
    }
}


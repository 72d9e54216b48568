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


import CareMeshAuth
import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Crypto
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// Sessions: access and refresh tokens, service tokens, rotation, sign-out.
extension Accounts {
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
}

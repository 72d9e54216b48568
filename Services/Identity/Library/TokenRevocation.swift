import CareMeshContracts
import CareMeshStore
import Foundation
import Logging
import PostgresNIO

/// Access tokens that stop working before they expire. Identity announces `TokensRevoked` in
/// the transaction of the change; the router pulls it and refuses the tokens at once.
enum TokenRevocation {
    /// How long the router keeps an entry: the longest access-token life identity allows
    /// (`IDENTITY_ACCESS_TOKEN_TTL_S` at most a day) and the router's leeway.
    static let horizon: Int64 = 86_400 + 60

    /// One session's tokens (logout, a reused refresh token).
    static func session(_ c: PostgresConnection, user: UUID, session: UUID, reason: String, logger: Logger) async throws {
        var event = Caremesh_Identity_V1_TokensRevoked()
        event.userID = user.uuidString.lowercased()
        event.sessionID = session.uuidString.lowercased()
        try await announce(event, reason: reason, c, logger)
    }

    /// Every token the user holds now (deactivation, a role change, logout everywhere): the
    /// user's token version is bumped, so tokens issued from now on carry the new one.
    static func allTokens(_ c: PostgresConnection, user: UUID, reason: String, logger: Logger) async throws {
        guard let version = try await c.query("""
            UPDATE users SET token_version = token_version + 1 WHERE id = \(user) RETURNING token_version
            """, logger: logger).first(Int32.self) else { return }
        var event = Caremesh_Identity_V1_TokensRevoked()
        event.userID = user.uuidString.lowercased()
        event.minVersion = Int64(version)
        try await announce(event, reason: reason, c, logger)
    }

    private static func announce(_ event: Caremesh_Identity_V1_TokensRevoked, reason: String,
                                 _ c: PostgresConnection, _ logger: Logger) async throws {
        var event = event
        event.reason = reason
        event.until = Int64(Date().timeIntervalSince1970) + horizon
        try await Outbox.append(event, key: event.userID, schema: IdentityService.name, on: c, logger: logger)
    }
}

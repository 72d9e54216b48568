import CareMeshAuth
import CareMeshContracts
import Foundation

/// Access tokens identity revoked before they expire (`TokensRevoked`, pulled from identity's
/// events): whole sessions (logout, a reused refresh token), and a user's tokens older than a
/// version (deactivation, a role change, logout everywhere). Each entry is kept until every
/// token it concerns has expired.
public struct RevokedTokens: Sendable, Equatable {
    /// Session id → when its entry may go.
    private(set) var sessions: [String: Int64] = [:]
    /// User id → the lowest token version still good, and when the entry may go.
    private(set) var users: [String: (minVersion: Int64, until: Int64)] = [:]

    public init() {}

    public static func == (a: Self, b: Self) -> Bool {
        a.sessions == b.sessions && a.users.mapValues(\.minVersion) == b.users.mapValues(\.minVersion)
    }

    public var isEmpty: Bool { sessions.isEmpty && users.isEmpty }
    public var count: Int { sessions.count + users.count }

    /// Takes one announcement (a later version of a user wins; entries only ever tighten).
    public mutating func apply(_ event: Caremesh_Identity_V1_TokensRevoked) {
        if !event.sessionID.isEmpty {
            sessions[event.sessionID] = max(sessions[event.sessionID] ?? 0, event.until)
        }
        if event.minVersion > 0, !event.userID.isEmpty {
            let old = users[event.userID]
            users[event.userID] = (max(old?.minVersion ?? 0, event.minVersion), max(old?.until ?? 0, event.until))
        }
    }

    /// Why a verified token is refused, or nil when it is not revoked.
    public func refusal(_ claims: AccessClaims) -> String? {
        if !claims.sid.isEmpty, sessions[claims.sid] != nil { return "its session was ended" }
        if let user = users[claims.sub], (claims.tv ?? 0) < user.minVersion {
            return "it was issued before the account changed (deactivation, role, or sign-out everywhere)"
        }
        return nil
    }

    /// Drops the entries whose tokens have all expired.
    public mutating func expire(now: Int64) {
        sessions = sessions.filter { $0.value > now }
        users = users.filter { $0.value.until > now }
    }
}

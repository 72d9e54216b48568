import CareMeshContracts
import CareMeshRPC
import CareMeshTesting
import Foundation
import Testing

/// Revocation that takes effect: identity announces `TokensRevoked`, the router follows it and
/// refuses the affected access tokens within a second, before they expire.
extension IdentityTests {
    /// Waits up to 1 s for `token` to be refused `TOKEN_REVOKED` by the router.
    func refusedWithinASecond(_ s: Stack, _ token: Caremesh_Identity_V1_Session) async throws {
        let refused = try await TestStack.eventually(timeout: .seconds(1)) { () async throws -> RPCError in
            do {
                _ = try await s.client.call(IdentityMethods.whoAmI, request: .init(), options: s.auth(token))
            } catch {
                if let e = error as? RPCError, e.reason == "TOKEN_REVOKED" { return e }
                throw error
            }
            throw RPCError(.unknown, "still accepted")
        }
        #expect(refused.code == .unauthenticated)
    }

    @Test("deactivation, logout, a reused refresh token and a role change stop the access tokens concerned at the router within 1 s; others go on")
    func revocationTakesEffect() async throws {
        try await withIdentity(["IDENTITY_REFRESH_REUSE_GRACE_S": "0"]) { s in
            let admin = try await account(s, "admin")
            let bystander = try await register(s)

            // Deactivation: every token of the account.
            let gone = try await register(s)
            var deactivate = Caremesh_Identity_V1_DeactivateUserRequest()
            deactivate.userID = gone.user.id
            deactivate.reason = "left the organization"
            _ = try await s.client.call(IdentityMethods.deactivateUser, request: deactivate, options: admin.auth)
            try await refusedWithinASecond(s, gone.session)

            // Logout: that session's token, not another session's.
            let twice = try await register(s)
            var login = Caremesh_Identity_V1_LoginRequest()
            login.email = twice.user.email
            login.password = "a long enough passphrase"
            let other = try await s.client.call(IdentityMethods.login, request: login).session
            _ = try await s.client.call(IdentityMethods.logout, request: .init(), options: s.auth(twice.session))
            try await refusedWithinASecond(s, twice.session)
            _ = try await s.client.call(IdentityMethods.whoAmI, request: .init(), options: s.auth(other))

            // A refresh token presented again after the grace: the whole session.
            let stolen = try await register(s)
            let next = try await refresh(s, stolen.session.refreshToken)
            try await Task.sleep(for: .milliseconds(1_100))
            #expect(await code { _ = try await refresh(s, stolen.session.refreshToken) } == .unauthenticated)
            try await refusedWithinASecond(s, next)

            // A role change: the old token stops; a refresh carries the new role and works.
            let promoted = try await register(s)
            var promote = Caremesh_Identity_V1_SetUserRoleRequest()
            promote.userID = promoted.user.id
            promote.role = .coordinator
            _ = try await s.client.call(IdentityMethods.setUserRole, request: promote, options: admin.auth)
            try await refusedWithinASecond(s, promoted.session)
            let renewed = try await refresh(s, promoted.session.refreshToken)
            #expect(try await s.client.call(IdentityMethods.whoAmI, request: .init(), options: s.auth(renewed)).roles == ["coordinator"])

            // Logout everywhere: every session's token.
            _ = try await s.client.call(IdentityMethods.logoutEverywhere, request: .init(), options: s.auth(other))
            try await refusedWithinASecond(s, other)

            // Nobody else was touched, and public methods still answer a revoked caller.
            _ = try await s.client.call(IdentityMethods.whoAmI, request: .init(), options: s.auth(bystander.session))
            _ = try await s.client.call(IdentityMethods.getSigningKeys, request: .init(), options: s.auth(gone.session))
            #expect(s.router.stats.revokedTokens >= 5)
            #expect(s.router.revokedTokenEntries >= 5)
        }
    }
}

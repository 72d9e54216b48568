import CareMeshContracts
import CareMeshRPC
import CareMeshRouter
import CareMeshStore
import CareMeshTesting
import Foundation
import IdentityService
import Logging
import PostgresNIO
import Synchronization
import Testing

/// Identity through a router that requires tokens, on real PostgreSQL.
@Suite(.serialized) struct IdentityTests {
    let logger = TestDatabase.logger

    struct Stack: Sendable {
        let router: Router
        let client: RPCClient
        let db: TestDatabase

        func auth(_ session: Caremesh_Identity_V1_Session) -> CallOptions {
            CallOptions(metadata: ["authorization": "Bearer \(session.accessToken)"])
        }

        /// One value from identity's schema, as identity's own role sees it (row-level
        /// security applies), or as the superuser (it does not).
        /// `setup` runs first on the same connection.
        func count(_ sql: String, superuser: Bool = false, after setup: String? = nil) async throws -> Int64 {
            try await Store.withSingleConnection(superuser ? db.admin : db.url("identity"), logger: TestDatabase.logger) { c in
                if let setup { try await c.query(PostgresQuery(unsafeSQL: setup), logger: TestDatabase.logger) }
                return try await c.query(PostgresQuery(unsafeSQL: sql), logger: TestDatabase.logger).first(Int64.self) ?? -1
            }
        }
    }

    func makeHost(_ router: Router, _ db: TestDatabase, _ extra: [String: String]) async throws -> ServiceHost {
        try await IdentityService.make(environment: db.environment.merging(TestStack.workerEnvironment(router)) { $1 }
            .merging(extra) { $1 }, logger: logger)
    }

    /// A fresh database, a router that requires tokens and an identity worker; the router has
    /// identity's signing keys before `body` runs.
    /// `database`: one made (and migrated as far as wanted) before; a fresh one if nil.
    func withIdentity(_ extra: [String: String] = [:], database: TestDatabase? = nil,
                      _ body: @Sendable (Stack) async throws -> Void) async throws {
        let router = try TestStack.startRouter(TestStack.routerConfiguration(authentication: .required))
        defer { router.stop() }
        let db = if let database { database } else { try await TestDatabase.fresh("identity") }
        let host = try await makeHost(router, db, extra)
        let client = TestStack.client(router)
        defer { client.close() }
        try await TestStack.withHosts([host]) {
            try await TestStack.waitUntilServing(client, "identity")
            _ = try await TestStack.eventually(timeout: .seconds(10)) {
                if router.signingKeyIDs.isEmpty { throw RPCError(.unavailable, "no keys yet") }
            }
            try await body(Stack(router: router, client: client, db: db))
        }
    }

    func register(_ s: Stack, _ email: String = "ann.\(UInt32.random(in: 0...UInt32.max))@example.org",
                  password: String = "a long enough passphrase", phone: String? = nil,
                  role: Caremesh_Identity_V1_Role = .user) async throws -> Caremesh_Identity_V1_RegisterResponse {
        var r = Caremesh_Identity_V1_RegisterRequest()
        r.email = email
        r.password = password
        r.name = "Ann Example"
        r.phone = phone ?? "+3361\(Int.random(in: 1_000_000...9_999_999))"
        r.role = role
        return try await s.client.call(IdentityMethods.register, request: r)
    }

    func refresh(_ s: Stack, _ token: String) async throws(RPCError) -> Caremesh_Identity_V1_Session {
        var r = Caremesh_Identity_V1_RefreshRequest()
        r.refreshToken = token
        return try await s.client.call(IdentityMethods.refresh, request: r).session
    }

    /// A signed-in account holding `role` (given by the superuser, as an admin would).
    func account(_ s: Stack, _ role: String) async throws -> (id: String, auth: CallOptions) {
        let signup = try await register(s, "\(role).\(UInt32.random(in: 0...UInt32.max))@example.org")
        _ = try await s.count("UPDATE identity.users SET role = '\(role)' WHERE id = '\(signup.user.id)' RETURNING 1", superuser: true)
        var login = Caremesh_Identity_V1_LoginRequest()
        login.email = signup.user.email
        login.password = "a long enough passphrase"
        return (signup.user.id, s.auth(try await s.client.call(IdentityMethods.login, request: login).session))
    }

    func violations(_ body: () async throws -> Void) async -> Set<String> { await fieldViolations(of: body) }

    func code(_ body: () async throws -> Void) async -> StatusCode? { await statusCode(of: body) }

    @Test("the token life: sign-up, who am I, rotation, concurrent refresh in the grace window, reuse revokes the family, logout")
    func tokenLife() async throws {
        try await withIdentity(["IDENTITY_REFRESH_REUSE_GRACE_S": "1"]) { s in
            let signup = try await register(s, "Ann.Life@Example.ORG")
            #expect(signup.user.email == "Ann.Life@example.org")
            #expect(signup.user.role == .user)
            let me = try await s.client.call(IdentityMethods.whoAmI, request: .init(), options: s.auth(signup.session))
            #expect(me.user.id == signup.user.id)
            #expect(me.roles == ["user"])
            #expect(me.sessionID == signup.session.sessionID)
            #expect(me.profile.name == "Ann Example")

            // Rotation: a new pair each time, same session.
            let second = try await refresh(s, signup.session.refreshToken)
            #expect(second.refreshToken != signup.session.refreshToken)
            #expect(second.sessionID == signup.session.sessionID)
            _ = try await s.client.call(IdentityMethods.whoAmI, request: .init(), options: s.auth(second))

            // Five refreshes at once with one token, inside the grace window: all succeed with the
            // same successor (idempotent rotation), and the session does not fork.
            let tokens = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<5 { group.addTask { try await refresh(s, second.refreshToken).refreshToken } }
                return try await group.reduce(into: [String]()) { $0.append($1) }
            }
            #expect(tokens.count == 5 && Set(tokens).count == 1)
            #expect(try await s.count("""
                SELECT count(*) FROM identity.refresh_tokens c JOIN identity.refresh_tokens p ON c.parent_id = p.id
                WHERE p.token_hash = sha256(convert_to('\(second.refreshToken)', 'UTF8'))
                """) == 1, "one successor, one chain")
            // The successor refreshes on; the original, replayed inside the window, still answers
            // with that same successor (not a token of its own).
            let third = try await refresh(s, tokens[0])
            #expect(try await refresh(s, second.refreshToken).refreshToken == tokens[0])
            #expect(third.refreshToken != tokens[0])

            // After the window, the rotated token again: the whole family is revoked.
            try await Task.sleep(for: .milliseconds(1_300))
            #expect(await code { _ = try await refresh(s, second.refreshToken) } == .unauthenticated)
            for t in tokens {
                #expect(await code { _ = try await refresh(s, t) } == .unauthenticated)
            }
            #expect(try await s.count("SELECT count(*) FROM identity.suspicious_activities WHERE activity_type = 'REFRESH_TOKEN_REUSE'") == 1)
            #expect(await code { _ = try await refresh(s, third.refreshToken) } == .unauthenticated)
            // signup's, second, its one successor and third: the whole family.
            #expect(try await s.count("SELECT count(*) FROM identity.refresh_tokens WHERE revoked_reason = 'reuse_detected'") == 4)

            // A new sign-in; logout ends that session only; logout everywhere ends the rest.
            var login = Caremesh_Identity_V1_LoginRequest()
            login.email = "ann.life@example.org"
            login.password = "a long enough passphrase"
            let a = try await s.client.call(IdentityMethods.login, request: login).session
            let b = try await s.client.call(IdentityMethods.login, request: login).session
            _ = try await s.client.call(IdentityMethods.logout, request: .init(), options: s.auth(a))
            #expect(await code { _ = try await refresh(s, a.refreshToken) } == .unauthenticated)
            let b2 = try await refresh(s, b.refreshToken)
            let everywhere = try await s.client.call(IdentityMethods.logoutEverywhere, request: .init(), options: s.auth(b2))
            #expect(everywhere.revoked == 1)
            #expect(await code { _ = try await refresh(s, b2.refreshToken) } == .unauthenticated)
            #expect(await code { _ = try await refresh(s, "made-up") } == .unauthenticated)
        }
    }

    @Test("without a valid token the router refuses; a public method passes; the caller is the token's")
    func routerRefuses() async throws {
        try await withIdentity { s in
            let signup = try await register(s)
            // Counted from here: identity's own call after Register (the verification email to a
            // messaging that is not running) is not this test's.
            try await Task.sleep(for: .milliseconds(300))
            let before = s.router.stats.unauthenticated
            #expect(await code { _ = try await s.client.call(IdentityMethods.whoAmI, request: .init()) } == .unauthenticated)
            let tampered = signup.session.accessToken.dropLast(4) + "AAAA"
            #expect(await code {
                _ = try await s.client.call(IdentityMethods.whoAmI, request: .init(),
                                            options: .init(metadata: ["authorization": "Bearer \(tampered)"]))
            } == .unauthenticated)
            let keys = try await s.client.call(IdentityMethods.getSigningKeys, request: .init())
            #expect(keys.keys.count >= 1 && keys.keys.allSatisfy { $0.alg == "EdDSA" && $0.crv == "Ed25519" })
            #expect(Set(keys.keys.map(\.kid)) == s.router.signingKeyIDs)
            #expect(s.router.stats.unauthenticated - before == 2)
        }
    }

    @Test("five wrong passwords lock the account; the lock holds across a restart and then expires")
    func lockout() async throws {
        let router = try TestStack.startRouter(TestStack.routerConfiguration(authentication: .required))
        defer { router.stop() }
        let db = try await TestDatabase.fresh("lockout")
        let client = TestStack.client(router)
        defer { client.close() }
        let settings = ["IDENTITY_LOCKOUT_DURATION_S": "4"]
        let login = {
            var l = Caremesh_Identity_V1_LoginRequest()
            l.email = "locked@example.org"
            l.password = "the right passphrase"
            return l
        }()
        let first = try await makeHost(router, db, settings)
        try await TestStack.withHosts([first]) {
            try await TestStack.waitUntilServing(client, "identity")
            var r = Caremesh_Identity_V1_RegisterRequest()
            r.email = login.email
            r.password = login.password
            r.name = "Lee"
            r.phone = "+447700900123"
            _ = try await client.call(IdentityMethods.register, request: r)
            var wrong = login
            wrong.password = "not the passphrase"
            for _ in 0..<5 {
                await #expect(throws: RPCError.self) { try await client.call(IdentityMethods.login, request: wrong) }
            }
        }
        let second = try await makeHost(router, db, settings)
        try await TestStack.withHosts([second]) {
            try await TestStack.waitUntilServing(client, "identity")
            // Locked: the right password gets exactly the answer a wrong one gets.
            do {
                _ = try await client.call(IdentityMethods.login, request: login)
                Issue.record("a locked account signed in")
            } catch let e as RPCError {
                #expect(e.code == .unauthenticated)
                #expect(e.reason == "INVALID_CREDENTIALS")
            }
            try await Task.sleep(for: .seconds(4))
            _ = try await client.call(IdentityMethods.login, request: login)
        }
        let s = Stack(router: router, client: client, db: db)
        #expect(try await s.count("SELECT count(*) FROM identity.suspicious_activities WHERE activity_type = 'MULTIPLE_FAILED_LOGINS'") == 1)
        #expect(try await s.count("SELECT count(*) FROM identity.outbox WHERE type = 'caremesh.identity.v1.AccountLocked'") == 1)
        #expect(try await s.count("SELECT count(*) FROM identity.login_failures") == 0)
    }

    @Test("an unknown email and a wrong password get the same answer")
    func unknownEmail() async throws {
        try await withIdentity { s in
            _ = try await register(s, "known@example.org")
            var login = Caremesh_Identity_V1_LoginRequest()
            login.password = "whatever it may be"
            var answers: [String] = []
            for email in ["known@example.org", "unknown@example.org"] {
                login.email = email
                do { _ = try await s.client.call(IdentityMethods.login, request: login) } catch let e as RPCError {
                    answers.append("\(e.code.name) \(e.message) \(e.reason ?? "")")
                }
            }
            #expect(answers.count == 2 && answers[0] == answers[1])
        }
    }

    @Test("bad input names each field and writes nothing; taken email and phone are ALREADY_EXISTS")
    func badInput() async throws {
        try await withIdentity { s in
            var r = Caremesh_Identity_V1_RegisterRequest()
            r.email = "not-an-email"
            r.password = "short"
            r.name = ""
            r.phone = "0612345678"
            r.role = .admin
            do {
                _ = try await s.client.call(IdentityMethods.register, request: r)
                Issue.record("accepted")
            } catch let e as RPCError {
                #expect(e.code == .invalidArgument)
                let fields = Set(e.details.flatMap { $0.badRequest.fieldViolations.map(\.field) })
                #expect(fields == ["email", "password", "name", "phone", "role"])
            }
            r.email = "weak@example.org"
            r.password = "password12345"
            r.name = "Weak"
            r.phone = "+33612345678"
            r.role = .volunteer
            await #expect(throws: RPCError.self) { try await s.client.call(IdentityMethods.register, request: r) }
            #expect(try await s.count("SELECT count(*) FROM identity.users") == 0)
            #expect(try await s.count("SELECT count(*) FROM identity.outbox") == 0)

            _ = try await register(s, "taken@example.org", phone: "+33612345678")
            for (email, phone, field) in [("TAKEN@example.org", "+33698765432", "email"), ("other@example.org", "+33612345678", "phone")] {
                do {
                    _ = try await register(s, email, phone: phone)
                    Issue.record("accepted a duplicate \(field)")
                } catch let e as RPCError {
                    #expect(e.code == .alreadyExists)
                    #expect(e.details.first?.badRequest.fieldViolations.first?.field == field)
                }
            }
            #expect(try await s.count("SELECT count(*) FROM identity.users") == 1)
        }
    }

    @Test("credentials: a volunteer submits, cannot verify themselves, an admin verifies and revokes; events announce it; an expired certification is flagged by its timer")
    func verification() async throws {
        try await withIdentity { s in
            let volunteer = try await register(s, role: .volunteer)
            let v = s.auth(volunteer.session)
            var submit = Caremesh_Identity_V1_SubmitVolunteerCredentialsRequest()
            submit.credentials.skills = [.firstAid, .cpr]
            var cert = Caremesh_Identity_V1_Certification()
            cert.name = "CPR Certification"
            cert.issuedBy = "Red Cross"
            cert.issueDate = "2020-01-15"
            cert.expiryDate = "2022-01-15"  // already past: its timer fires at once
            submit.credentials.certifications = [cert]
            let submitted = try await s.client.call(IdentityMethods.submitVolunteerCredentials, request: submit, options: v)
            #expect(submitted.verification.state == .pending)
            #expect(submitted.verification.volunteer.skills == [.cpr, .firstAid])

            // Bad input is named; a plain user may not submit volunteer credentials.
            var bad = submit
            bad.credentials.skills = []
            bad.credentials.certifications[0].expiryDate = "2019-01-01"
            do {
                _ = try await s.client.call(IdentityMethods.submitVolunteerCredentials, request: bad, options: v)
                Issue.record("accepted")
            } catch let e as RPCError {
                #expect(e.code == .invalidArgument)
                #expect(Set(e.details.flatMap { $0.badRequest.fieldViolations.map(\.field) })
                        == ["credentials.skills", "credentials.certifications[0].expiry_date"])
            }
            let user = try await register(s)
            #expect(await code { _ = try await s.client.call(IdentityMethods.submitVolunteerCredentials, request: submit, options: s.auth(user.session)) } == .permissionDenied)

            // Verifying is for admins: the volunteer cannot verify themselves.
            var verify = Caremesh_Identity_V1_VerifyUserRequest()
            verify.userID = volunteer.user.id
            #expect(await code { _ = try await s.client.call(IdentityMethods.verifyUser, request: verify, options: v) } == .permissionDenied)
            // Even an admin cannot verify themselves (and the database refuses it too).
            let adminAccount = try await account(s, "admin")
            let admin = adminAccount.auth
            var selfVerify = verify
            selfVerify.userID = adminAccount.id
            #expect(await code { _ = try await s.client.call(IdentityMethods.verifyUser, request: selfVerify, options: admin) } == .permissionDenied)

            let verified = try await s.client.call(IdentityMethods.verifyUser, request: verify, options: admin)
            #expect(verified.verification.state == .verified)
            #expect(verified.verification.decidedBy == adminAccount.id)
            var revoke = Caremesh_Identity_V1_RevokeVerificationRequest()
            revoke.userID = volunteer.user.id
            revoke.reason = "background check failed"
            let revoked = try await s.client.call(IdentityMethods.revokeVerification, request: revoke, options: admin)
            #expect(revoked.verification.state == .revoked)
            #expect(revoked.verification.revocationReason == "background check failed")
            let own = try await s.client.call(IdentityMethods.getVerification, request: .init(), options: v)
            #expect(own.verification.state == .revoked)
            var other = Caremesh_Identity_V1_GetVerificationRequest()
            other.userID = adminAccount.id
            #expect(await code { _ = try await s.client.call(IdentityMethods.getVerification, request: other, options: v) } == .permissionDenied)

            // The events dispatch reads, in order, from identity's outbox (an admin may pull them).
            let events = try await TestStack.eventually(timeout: .seconds(10)) {
                var pull = Caremesh_Events_V1_PullEventsRequest()
                pull.limit = 100
                let all = try await s.client.call(EventsMethods.pull, service: "identity", request: pull, options: admin).events
                    .filter { $0.key == volunteer.user.id }.map(\.type)
                guard all.contains("caremesh.identity.v1.CredentialExpired") else { throw RPCError(.unavailable, "not yet") }
                return all
            }
            #expect(events.filter { $0 != "caremesh.identity.v1.CredentialExpired" } == [
                "caremesh.identity.v1.UserRegistered", "caremesh.identity.v1.VolunteerVerified",
                "caremesh.identity.v1.VerificationRevoked",
            ])
            #expect(try await s.count("SELECT count(*) FROM identity.certifications WHERE expired_at IS NOT NULL") == 1)
        }
    }
}

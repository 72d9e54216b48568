import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import CareMeshTesting
import Foundation
import IdentityService
import PostgresNIO
import Testing

/// Staff roles are granted, never taken: registration gives a user (or a volunteer applicant);
/// a professional is one once an admin verified the licence; caregivers and other staff are
/// made by an admin. PHI needs such a role.
extension IdentityTests {
    @Test("register cannot make staff: caregiver is refused, professional is a user until the licence is verified, and such an account reads and writes no PHI")
    func staffRolesAreGranted() async throws {
        try await withIdentity { s in
            #expect(await violations { _ = try await register(s, role: .caregiver) } == ["role"])
            #expect(await violations { _ = try await register(s, role: .admin) } == ["role"])
            let applicant = try await register(s, role: .professional)
            #expect(applicant.user.role == .user)
            let auth = s.auth(applicant.session)
            #expect(try await s.client.call(IdentityMethods.whoAmI, request: .init(), options: auth).roles == ["user"])

            // No PHI, whatever it asks.
            #expect(await code { _ = try await s.client.call(IdentityMethods.createPatient, request: .init(), options: auth) } == .permissionDenied)
            #expect(await code { _ = try await s.client.call(IdentityMethods.searchPatients, request: .init(), options: auth) } == .permissionDenied)
            var get = Caremesh_Identity_V1_GetPatientRequest()
            get.id = UUID().uuidString
            #expect(await code { _ = try await s.client.call(IdentityMethods.getPatient, request: get, options: auth) } == .permissionDenied)
            #expect(await code { _ = try await s.client.call(IdentityMethods.updatePatient, request: .init(), options: auth) } == .permissionDenied)

            // The licence, verified by an admin, makes the professional; the next token says so.
            var submit = Caremesh_Identity_V1_SubmitProfessionalCredentialsRequest()
            submit.credentials.licenseNumber = "RPPS-\(UInt32.random(in: 0...UInt32.max))"
            submit.credentials.specialization = "Geriatrics"
            let pending = try await s.client.call(IdentityMethods.submitProfessionalCredentials, request: submit, options: auth)
            #expect(pending.verification.role == .professional)
            let admin = try await account(s, "admin")
            var verify = Caremesh_Identity_V1_VerifyUserRequest()
            verify.userID = applicant.user.id
            _ = try await s.client.call(IdentityMethods.verifyUser, request: verify, options: admin.auth)
            let verified = try await refresh(s, applicant.session.refreshToken)
            #expect(try await s.client.call(IdentityMethods.whoAmI, request: .init(), options: s.auth(verified)).roles == ["professional"])
            var search = Caremesh_Identity_V1_SearchPatientsRequest()
            search.purpose = .treatment
            search.namePrefix = "Nobody"
            _ = try await s.client.call(IdentityMethods.searchPatients, request: search, options: s.auth(verified))

            // Revoked, the role goes with it.
            var revoke = Caremesh_Identity_V1_RevokeVerificationRequest()
            revoke.userID = applicant.user.id
            revoke.reason = "licence suspended"
            _ = try await s.client.call(IdentityMethods.revokeVerification, request: revoke, options: admin.auth)
            let revoked = try await refresh(s, verified.refreshToken)
            #expect(try await s.client.call(IdentityMethods.whoAmI, request: .init(), options: s.auth(revoked)).roles == ["user"])
            // An admin's own role is never touched by a verification.
            #expect(try await s.count("SELECT count(*) FROM identity.users WHERE role = 'admin'", superuser: true) == 1)
        }
    }

    @Test("migration 0106 takes self-service staff roles away, lists them for admins, and an admin's SetUserRole confirms one")
    func roleReviewMigration() async throws {
        let db = try await TestDatabase.fresh("roles")
        let url = db.url("identity")
        let migrator = try Migrator.forService("identity", own: IdentityService.migrations, logger: TestDatabase.logger)
        _ = try await migrator.up(url, to: 105)
        let ids = (caregiver: UUID(), unverified: UUID(), verified: UUID(), coordinator: UUID())
        try await Store.withSingleConnection(db.admin, logger: TestDatabase.logger) { c in
            for (id, role) in [(ids.caregiver, "caregiver"), (ids.unverified, "professional"), (ids.verified, "professional"),
                               (ids.coordinator, "coordinator")] {
                try await c.query("""
                    INSERT INTO identity.users (id, email, password_hash, role) VALUES (\(id), \("\(role)-\(id)@example.org"), '$scrypt$x', \(role))
                    """, logger: TestDatabase.logger)
            }
            try await c.query("""
                INSERT INTO identity.professionals (user_id, license_number, specialization)
                VALUES (\(ids.unverified), 'L-1', 'GP')
                """, logger: TestDatabase.logger)
            try await c.query("""
                INSERT INTO identity.professionals (user_id, license_number, specialization, verification, decided_at, decided_by)
                VALUES (\(ids.verified), 'L-2', 'GP', 'verified', now(), \(ids.coordinator))
                """, logger: TestDatabase.logger)
        }
        #expect(try await migrator.up(url) == IdentityService.migrations.map(\.version).filter { $0 > 105 })
        func roles() async throws -> [UUID: String] {
            try await Store.withSingleConnection(db.admin, logger: TestDatabase.logger) { c in
                var out: [UUID: String] = [:]
                for try await (id, role) in try await c.query("SELECT id, role FROM identity.users", logger: TestDatabase.logger)
                    .decode((UUID, String).self) { out[id] = role }
                return out
            }
        }
        #expect(try await roles() == [ids.caregiver: "user", ids.unverified: "user", ids.verified: "professional",
                                      ids.coordinator: "coordinator"])

        // Admins see what changed, and give a role back to confirm it.
        try await withIdentity(database: db) { s in
            let client = s.client
            let admin = try await account(s, "admin")
            let open = try await client.call(IdentityMethods.listRoleReviews, request: .init(), options: admin.auth).reviews
            #expect(Set(open.map(\.userID)) == [ids.caregiver.uuidString.lowercased(), ids.unverified.uuidString.lowercased()])
            #expect(open.first { $0.userID == ids.caregiver.uuidString.lowercased() }?.previousRole == .caregiver)
            #expect(open.allSatisfy { !$0.reason.isEmpty && $0.confirmedBy.isEmpty && $0.email.hasSuffix("@example.org") })
            let user = try await register(s)
            #expect(await code { _ = try await client.call(IdentityMethods.listRoleReviews, request: .init(), options: s.auth(user.session)) }
                    == .permissionDenied)

            var giveBack = Caremesh_Identity_V1_SetUserRoleRequest()
            giveBack.userID = ids.caregiver.uuidString
            giveBack.role = .caregiver
            _ = try await client.call(IdentityMethods.setUserRole, request: giveBack, options: admin.auth)
            let still = try await client.call(IdentityMethods.listRoleReviews, request: .init(), options: admin.auth).reviews
            #expect(still.map(\.userID) == [ids.unverified.uuidString.lowercased()])
            var everything = Caremesh_Identity_V1_ListRoleReviewsRequest()
            everything.includeConfirmed = true
            let all = try await client.call(IdentityMethods.listRoleReviews, request: everything, options: admin.auth).reviews
            let confirmed = try #require(all.first { $0.userID == ids.caregiver.uuidString.lowercased() })
            #expect(confirmed.confirmedBy == admin.id.lowercased() && confirmed.hasConfirmedAt)
        }
        #expect(try await roles()[ids.caregiver] == "caregiver")
        // Down gives back what no admin decided on, and only that.
        let after105 = IdentityService.migrations.map(\.version).filter { $0 > 105 }
        #expect(try await migrator.down(url, count: after105.count) == after105.reversed())
        #expect(try await roles()[ids.unverified] == "professional")
    }
}

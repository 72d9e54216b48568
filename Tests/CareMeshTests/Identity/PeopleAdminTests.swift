import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import CareMeshTesting
import Foundation
import PostgresNIO
import Testing

/// PHI (patients and clients) with its audit trail and row-level security, and the admin
/// methods, through a router that requires tokens.
extension IdentityTests {
    @Test("PHI: care staff create, read, update and search; every access is audited with no PHI; bad input names its fields; others are refused")
    func patients() async throws {
        try await withIdentity { s in
            let coordinator = try await account(s, "coordinator")
            let admin = try await account(s, "admin")
            let plain = try await register(s)

            var ann = Caremesh_Identity_V1_Patient()
            ann.kind = .patient
            ann.fullName = "Annabel Quill"
            ann.dateOfBirth = "1941-03-07"
            ann.primaryPhone = "+33612345678"
            ann.preferredLanguage = "fr"
            ann.smsPreferred = true
            var create = Caremesh_Identity_V1_CreatePatientRequest()
            create.patient = ann
            create.purpose = .careCoordination

            // A plain user may not touch PHI at all.
            #expect(await code { _ = try await s.client.call(IdentityMethods.createPatient, request: create, options: s.auth(plain.session)) }
                    == .permissionDenied)
            // Bad input: each field named, nothing written.
            var bad = create
            bad.purpose = .unspecified
            bad.patient.fullName = " "
            bad.patient.dateOfBirth = "2999-01-01"
            bad.patient.primaryPhone = ""
            bad.patient.secondaryPhone = "0612"
            bad.patient.preferredLanguage = "French"
            #expect(await violations { _ = try await s.client.call(IdentityMethods.createPatient, request: bad, options: coordinator.auth) }
                    == ["purpose", "patient.full_name", "patient.date_of_birth", "patient.secondary_phone",
                        "patient.preferred_language", "patient.sms_preferred"])
            #expect(try await s.count("SELECT count(*) FROM identity.patients", superuser: true) == 0)
            #expect(try await s.count("SELECT count(*) FROM identity.audit_log", superuser: true) == 0)

            let created = try await s.client.call(IdentityMethods.createPatient, request: create, options: coordinator.auth).patient
            #expect(created.fullName == "Annabel Quill" && created.preferredLanguage == "fr" && created.smsPreferred)
            var get = Caremesh_Identity_V1_GetPatientRequest()
            get.id = created.id
            get.purpose = .treatment
            #expect(try await s.client.call(IdentityMethods.getPatient, request: get, options: coordinator.auth).patient == created)
            var update = Caremesh_Identity_V1_UpdatePatientRequest()
            update.patient = created
            update.patient.secondaryPhone = "+33698765432"
            update.purpose = .personRequest
            let updated = try await s.client.call(IdentityMethods.updatePatient, request: update, options: coordinator.auth).patient
            #expect(updated.secondaryPhone == "+33698765432" && updated.kind == .patient)

            // Search by a name prefix (LIKE's own characters are literal) and by phone, in pages.
            for name in ["Annie Rowe", "Anna Vale"] {
                var other = create
                other.patient.fullName = name
                other.patient.primaryPhone = "+3361\(Int.random(in: 1_000_000...9_999_999))"
                _ = try await s.client.call(IdentityMethods.createPatient, request: other, options: coordinator.auth)
            }
            var search = Caremesh_Identity_V1_SearchPatientsRequest()
            search.namePrefix = "ann"
            search.purpose = .careCoordination
            search.pageSize = 2
            let first = try await s.client.call(IdentityMethods.searchPatients, request: search, options: coordinator.auth)
            #expect(first.patients.count == 2 && !first.nextPageToken.isEmpty)
            search.pageToken = first.nextPageToken
            let second = try await s.client.call(IdentityMethods.searchPatients, request: search, options: coordinator.auth)
            #expect(second.patients.count == 1 && second.nextPageToken.isEmpty)
            #expect(Set((first.patients + second.patients).map(\.fullName)) == ["Annabel Quill", "Annie Rowe", "Anna Vale"])
            var byPhone = Caremesh_Identity_V1_SearchPatientsRequest()
            byPhone.phone = "+33698765432"
            byPhone.purpose = .emergency
            #expect(try await s.client.call(IdentityMethods.searchPatients, request: byPhone, options: coordinator.auth).patients.map(\.id) == [created.id])
            var wildcard = byPhone
            wildcard.phone = ""
            wildcard.namePrefix = "%_"
            #expect(try await s.client.call(IdentityMethods.searchPatients, request: wildcard, options: coordinator.auth).patients.isEmpty)
            search.pageToken = "not-a-token"
            #expect(await violations { _ = try await s.client.call(IdentityMethods.searchPatients, request: search, options: coordinator.auth) }
                    == ["page_token"])

            // The audit trail of Ann's record: who, what, why, and no PHI anywhere in it.
            var audit = Caremesh_Identity_V1_ListAuditEntriesRequest()
            audit.recordID = created.id
            #expect(await code { _ = try await s.client.call(IdentityMethods.listAuditEntries, request: audit, options: coordinator.auth) }
                    == .permissionDenied)
            let trail = try await s.client.call(IdentityMethods.listAuditEntries, request: audit, options: admin.auth).entries
            #expect(trail.map(\.action) == ["READ", "READ", "UPDATE", "READ", "CREATE"])  // newest first
            #expect(trail.map(\.purpose) == [.emergency, .careCoordination, .personRequest, .treatment, .careCoordination])
            #expect(trail.allSatisfy { $0.actorID == coordinator.id && $0.actorRoles == ["coordinator"] && !$0.requestID.isEmpty })
            #expect(try await s.count("SELECT count(*) FROM identity.audit_log WHERE action = 'SEARCH'", superuser: true) == 4)
            let phi = ["Annabel", "Quill", "1941-03-07", "33612345678", "33698765432"]
            let leaks = try await s.count("""
                SELECT count(*) FROM identity.audit_log a
                WHERE \(phi.map { "row_to_json(a)::text ILIKE '%\($0)%'" }.joined(separator: " OR "))
                """, superuser: true)
            #expect(leaks == 0)

            // Row-level security: identity's own role sees no PHI row unless the transaction
            // names an acting user with a care role; and the audit trail cannot be rewritten.
            #expect(try await s.count("SELECT count(*) FROM identity.patients", superuser: true) == 3)
            #expect(try await s.count("SELECT count(*) FROM identity.patients") == 0)
            func actor(_ id: String, _ roles: String) -> String {
                "SELECT set_config('caremesh.actor_id', '\(id)', false), set_config('caremesh.actor_roles', '\(roles)', false)"
            }
            #expect(try await s.count("SELECT count(*) FROM identity.patients", after: actor(plain.user.id, "user")) == 0)
            #expect(try await s.count("SELECT count(*) FROM identity.patients", after: actor(coordinator.id, "coordinator")) == 3)
            await #expect(throws: (any Error).self) {
                _ = try await s.count("""
                    INSERT INTO identity.patients (kind, full_name, created_by) VALUES ('patient', 'X Y', '\(coordinator.id)') RETURNING 1
                    """)
            }
            await #expect(throws: (any Error).self) {
                _ = try await s.count("UPDATE identity.audit_log SET purpose = 'OPERATIONS' RETURNING 1")
            }
            #expect(try await s.count("SELECT count(*) FROM identity.audit_log WHERE purpose = 'OPERATIONS'", superuser: true) == 0)
        }
    }

    @Test("admin: users by role, roles given, deactivation stops sign-in and refresh and is announced, pending verifications, documents, suspicious activity; events only for services and admins")
    func administration() async throws {
        try await withIdentity { s in
            let admin = try await account(s, "admin")
            let volunteer = try await register(s, role: .volunteer)
            let v = s.auth(volunteer.session)
            let plain = try await register(s)

            var list = Caremesh_Identity_V1_ListUsersRequest()
            list.role = .volunteer
            #expect(await code { _ = try await s.client.call(IdentityMethods.listUsers, request: list, options: v) } == .permissionDenied)
            #expect(try await s.client.call(IdentityMethods.listUsers, request: list, options: admin.auth).users.map(\.id) == [volunteer.user.id])
            list.role = .unspecified
            list.pageSize = 2
            let page1 = try await s.client.call(IdentityMethods.listUsers, request: list, options: admin.auth)
            list.pageToken = page1.nextPageToken
            let page2 = try await s.client.call(IdentityMethods.listUsers, request: list, options: admin.auth)
            #expect(Set((page1.users + page2.users).map(\.id)) == [admin.id, volunteer.user.id, plain.user.id])

            // Documents need submitted credentials, of a type that fits the role.
            var doc = Caremesh_Identity_V1_AddDocumentRequest()
            doc.type = .idProof
            doc.url = "https://files.example.org/id.pdf"
            #expect(await code { _ = try await s.client.call(IdentityMethods.addDocument, request: doc, options: v) } == .failedPrecondition)
            var submit = Caremesh_Identity_V1_SubmitVolunteerCredentialsRequest()
            submit.credentials.skills = [.driver]
            _ = try await s.client.call(IdentityMethods.submitVolunteerCredentials, request: submit, options: v)
            var wrong = doc
            wrong.type = .medicalLicense
            wrong.url = "http://files.example.org/id.pdf"
            #expect(await violations { _ = try await s.client.call(IdentityMethods.addDocument, request: wrong, options: v) } == ["type", "url"])
            let added = try await s.client.call(IdentityMethods.addDocument, request: doc, options: v).document
            let pending = try await s.client.call(IdentityMethods.listPendingVerifications, request: .init(), options: admin.auth).verifications
            #expect(pending.map(\.userID) == [volunteer.user.id])
            #expect(pending.first?.documents.map(\.id) == [added.id])

            // Suspicious activity: reported by admins (and services), never by users.
            var report = Caremesh_Identity_V1_RecordSuspiciousActivityRequest()
            report.userID = plain.user.id
            report.activityType = "RATE_LIMIT_EXCEEDED"
            report.details = ["sos_per_hour": "12"]
            report.ipAddress = "203.0.113.9"
            #expect(await code { _ = try await s.client.call(IdentityMethods.recordSuspiciousActivity, request: report, options: v) } == .permissionDenied)
            var badReport = report
            badReport.activityType = "rate limit"
            badReport.ipAddress = "999.1.1.1"
            #expect(await violations { _ = try await s.client.call(IdentityMethods.recordSuspiciousActivity, request: badReport, options: admin.auth) }
                    == ["activity_type", "ip_address"])
            _ = try await s.client.call(IdentityMethods.recordSuspiciousActivity, request: report, options: admin.auth)
            var suspicious = Caremesh_Identity_V1_ListSuspiciousActivitiesRequest()
            suspicious.activityType = "RATE_LIMIT_EXCEEDED"
            let found = try await s.client.call(IdentityMethods.listSuspiciousActivities, request: suspicious, options: admin.auth).activities
            #expect(found.count == 1 && found.first?.userID == plain.user.id && found.first?.details == ["sos_per_hour": "12"]
                    && found.first?.ipAddress == "203.0.113.9")

            // Roles are given by admins (never to themselves); the next token carries them.
            var promote = Caremesh_Identity_V1_SetUserRoleRequest()
            promote.userID = plain.user.id
            promote.role = .coordinator
            #expect(await code { _ = try await s.client.call(IdentityMethods.setUserRole, request: promote, options: v) } == .permissionDenied)
            var selfPromote = promote
            selfPromote.userID = admin.id
            #expect(await code { _ = try await s.client.call(IdentityMethods.setUserRole, request: selfPromote, options: admin.auth) } == .permissionDenied)
            #expect(try await s.client.call(IdentityMethods.setUserRole, request: promote, options: admin.auth).user.role == .coordinator)
            _ = try await s.client.call(IdentityMethods.setUserRole, request: promote, options: admin.auth)  // unchanged: no event
            let promoted = try await refresh(s, plain.session.refreshToken)
            #expect(try await s.client.call(IdentityMethods.whoAmI, request: .init(), options: s.auth(promoted)).roles == ["coordinator"])

            // Deactivation: not oneself; then sign-in and refresh stop, and it is announced once.
            var deactivate = Caremesh_Identity_V1_DeactivateUserRequest()
            deactivate.userID = admin.id
            deactivate.reason = "left the organization"
            #expect(await code { _ = try await s.client.call(IdentityMethods.deactivateUser, request: deactivate, options: admin.auth) } == .permissionDenied)
            deactivate.userID = plain.user.id
            #expect(try await s.client.call(IdentityMethods.deactivateUser, request: deactivate, options: admin.auth).user.active == false)
            _ = try await s.client.call(IdentityMethods.deactivateUser, request: deactivate, options: admin.auth)  // idempotent
            var login = Caremesh_Identity_V1_LoginRequest()
            login.email = plain.user.email
            login.password = "a long enough passphrase"
            #expect(await code { _ = try await s.client.call(IdentityMethods.login, request: login) } == .unauthenticated)
            #expect(await code { _ = try await refresh(s, promoted.refreshToken) } == .unauthenticated)
            list = .init()
            #expect(!(try await s.client.call(IdentityMethods.listUsers, request: list, options: admin.auth).users.map(\.id).contains(plain.user.id)))
            list.includeInactive = true
            #expect(try await s.client.call(IdentityMethods.listUsers, request: list, options: admin.auth).users.map(\.id).contains(plain.user.id))

            // Events are for services and admins: a user may not read them.
            var pull = Caremesh_Events_V1_PullEventsRequest()
            pull.limit = 100
            #expect(await code { _ = try await s.client.call(EventsMethods.pull, service: "identity", request: pull, options: v) } == .permissionDenied)
            let events = try await TestStack.eventually(timeout: .seconds(10)) {
                let all = try await s.client.call(EventsMethods.pull, service: "identity", request: pull, options: admin.auth).events
                    .filter { $0.key == plain.user.id }
                guard all.contains(where: { $0.type == "caremesh.identity.v1.UserDeactivated" }) else { throw RPCError(.unavailable, "not yet") }
                return all.map(\.type)
            }
            // A role change and a deactivation each revoke the tokens issued before (the router's).
            #expect(events == ["caremesh.identity.v1.UserRegistered", "caremesh.identity.v1.SuspiciousActivityRecorded",
                               "caremesh.identity.v1.UserRoleChanged", "caremesh.identity.v1.TokensRevoked",
                               "caremesh.identity.v1.UserDeactivated", "caremesh.identity.v1.TokensRevoked"])
        }
    }
}

extension IdentityTests {
    @Test("services sign in with their secret: a service token pulls events and reports suspicious activity but reads no PHI; a wrong secret is refused and recorded")
    func serviceTokens() async throws {
        try await withIdentity { s in
            let admin = try await account(s, "admin")
            // A client that signs in as dispatch by itself.
            var config = ClientConfiguration(endpoint: s.router.boundEndpoints.client)
            config.link = TestStack.BusKeys.clientLink(s.router)
            config.defaultTimeout = .seconds(5)
            config.credentials = ServiceCredentials(service: "dispatch", environment: s.db.environment)
            let dispatch = RPCClient(configuration: config, logger: TestStack.quietLogger("dispatch-client"))
            defer { dispatch.close() }
            var pull = Caremesh_Events_V1_PullEventsRequest()
            pull.limit = 10
            let events = try await dispatch.call(EventsMethods.pull, service: "identity", request: pull).events
            #expect(events.contains { $0.type == "caremesh.identity.v1.UserRegistered" })
            let me = try await dispatch.call(IdentityMethods.whoAmI, request: .init())
            #expect(me.roles == ["service"])

            var report = Caremesh_Identity_V1_RecordSuspiciousActivityRequest()
            report.userID = admin.id
            report.activityType = "RATE_LIMIT_EXCEEDED"
            _ = try await dispatch.call(IdentityMethods.recordSuspiciousActivity, request: report)
            var search = Caremesh_Identity_V1_SearchPatientsRequest()
            search.namePrefix = "an"
            search.purpose = .emergency
            #expect(await code { _ = try await dispatch.call(IdentityMethods.searchPatients, request: search) } == .permissionDenied)

            // A wrong secret, an unknown service.
            var issue = Caremesh_Identity_V1_IssueServiceTokenRequest()
            issue.service = "alerts"
            issue.secret = TestDatabase.serviceSecret("dispatch")
            #expect(await code { _ = try await s.client.call(IdentityMethods.issueServiceToken, request: issue) } == .unauthenticated)
            issue.service = "identity"
            #expect(await violations { _ = try await s.client.call(IdentityMethods.issueServiceToken, request: issue) } == ["service"])
            var rejected = Caremesh_Identity_V1_ListSuspiciousActivitiesRequest()
            rejected.activityType = "SERVICE_SECRET_REJECTED"
            let recorded = try await s.client.call(IdentityMethods.listSuspiciousActivities, request: rejected, options: admin.auth).activities
            #expect(recorded.map(\.details) == [["service": "alerts"]])
        }
    }
}

import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// Credentials and verification of volunteers and professionals.
///
/// A volunteer or professional submits credentials (which puts them back to pending); an admin
/// other than themselves verifies or revokes. Dispatch learns eligibility from the events:
/// `VolunteerVerified`, `VerificationRevoked`, `CredentialExpired`. Each certification with an
/// expiry date arms a durable timer that marks it expired and announces it.
final class Credentials: Sendable {
    let store: Store
    let outbox: Outbox
    let logger: Logger
    static let expiryJob = "certification-expiry"

    init(store: Store, outbox: Outbox, logger: Logger) {
        self.store = store
        self.outbox = outbox
        self.logger = logger
    }

    static let skillNames = Caremesh_Identity_V1_Skill.storedNames

    static func skill(_ name: String) -> Caremesh_Identity_V1_Skill { .init(storedName: name) }

    /// Where the user's verification stands (NONE if they submitted nothing).
    static func state(_ c: PostgresConnection, _ id: UUID, logger: Logger) async throws -> Caremesh_Identity_V1_VerificationState {
        let rows = try await c.query("""
            SELECT verification FROM volunteers WHERE user_id = \(id)
            UNION ALL SELECT verification FROM professionals WHERE user_id = \(id)
            """, logger: logger)
        return state(named: try await rows.first(String.self))
    }

    static func state(named name: String?) -> Caremesh_Identity_V1_VerificationState {
        switch name {
        case nil: .none
        case "pending": .pending
        case "verified": .verified
        case "revoked": .revoked
        default: .unspecified
        }
    }

    // MARK: - Submit

    func submitVolunteer(_ r: Caremesh_Identity_V1_SubmitVolunteerCredentialsRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_SubmitCredentialsResponse
    {
        let id = try context.requireRole(["volunteer"]).requireUserID()
        var v = FieldViolations()
        let skills = r.credentials.skills.compactMap { Self.skillNames[$0] }
        v.check(!skills.isEmpty, "credentials.skills", "name at least one skill")
        v.check(skills.count == r.credentials.skills.count, "credentials.skills", "a skill is not one of the known set")
        v.check(r.credentials.certifications.count <= 20, "credentials.certifications", "at most 20")
        var certs: [(String, String, String, String?, Date?, String?)] = []
        for (i, cert) in r.credentials.certifications.enumerated() {
            let f = "credentials.certifications[\(i)]"
            Validate.name(cert.name, into: &v, field: "\(f).name")
            v.check(cert.issuedBy.count <= 200, "\(f).issued_by", "at most 200 characters")
            let issue = Validate.date(cert.issueDate)
            v.check(issue != nil, "\(f).issue_date", "must be a date, YYYY-MM-DD")
            let expiry = cert.expiryDate.isEmpty ? nil : Validate.date(cert.expiryDate)
            v.check(cert.expiryDate.isEmpty || expiry != nil, "\(f).expiry_date", "must be a date, YYYY-MM-DD")
            if let issue, let expiry { v.check(expiry > issue, "\(f).expiry_date", "must be after the issue date") }
            Validate.httpsURL(cert.documentURL, into: &v, field: "\(f).document_url", required: false)
            if issue != nil {
                certs.append((cert.name.trimmingCharacters(in: .whitespaces), cert.issuedBy, cert.issueDate,
                              expiry == nil ? nil : cert.expiryDate, expiry, cert.documentURL.isEmpty ? nil : cert.documentURL))
            }
        }
        try v.throwIfAny()
        let uniqueSkills = Array(Set(skills)).sorted()
        let certifications = certs
        return try await store.withTransaction { c in
            let previous = try await c.query("SELECT verification FROM volunteers WHERE user_id = \(id) FOR UPDATE",
                                             logger: self.logger).first(String.self)
            try await c.query("""
                INSERT INTO volunteers (user_id, skills) VALUES (\(id), \(uniqueSkills))
                ON CONFLICT (user_id) DO UPDATE SET skills = excluded.skills, verification = 'pending', submitted_at = now(),
                    decided_at = NULL, decided_by = NULL, revocation_reason = NULL
                """, logger: self.logger)
            // The old certifications' timers go with them.
            for try await old in try await c.query("DELETE FROM certifications WHERE volunteer_id = \(id) RETURNING id",
                                                   logger: self.logger).decode(UUID.self) {
                try await Jobs.cancel(Self.expiryJob, uniqueKey: old.uuidString, on: c, logger: self.logger)
            }
            for (name, issuer, issue, expiryText, expiry, url) in certifications {
                let certID = try await c.query("""
                    INSERT INTO certifications (volunteer_id, name, issued_by, issue_date, expiry_date, document_url)
                    VALUES (\(id), \(name), \(issuer), \(issue)::date, \(expiryText)::date, \(url)) RETURNING id
                    """, logger: self.logger).first(UUID.self)!
                if let expiry {
                    try await Jobs.schedule(Self.expiryJob, payload: Data(certID.uuidString.utf8), runAt: expiry,
                                            uniqueKey: certID.uuidString, on: c, logger: self.logger)
                }
            }
            if previous == "verified" {
                try await self.announceRevoked(c, id, role: .volunteer, reason: "credentials resubmitted")
            }
            var response = Caremesh_Identity_V1_SubmitCredentialsResponse()
            response.verification = try await self.load(c, id)
            return response
        }
    }

    func submitProfessional(_ r: Caremesh_Identity_V1_SubmitProfessionalCredentialsRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_SubmitCredentialsResponse
    {
        // A user applies; a professional resubmits (and is a user again until re-verified).
        let id = try context.requireRole(["user", "professional"]).requireUserID()
        let p = r.credentials
        var v = FieldViolations()
        Validate.name(p.licenseNumber, into: &v, field: "credentials.license_number", max: 100)
        Validate.name(p.specialization, into: &v, field: "credentials.specialization", max: 100)
        v.check(p.hospitalAffiliation.count <= 255, "credentials.hospital_affiliation", "at most 255 characters")
        try v.throwIfAny()
        let license = p.licenseNumber.trimmingCharacters(in: .whitespaces)
        let specialization = p.specialization.trimmingCharacters(in: .whitespaces)
        let affiliation: String? = p.hospitalAffiliation.isEmpty ? nil : p.hospitalAffiliation
        do {
            return try await store.withTransaction { c in
                let previous = try await c.query("SELECT verification FROM professionals WHERE user_id = \(id) FOR UPDATE",
                                                 logger: self.logger).first(String.self)
                try await c.query("""
                    INSERT INTO professionals (user_id, license_number, specialization, hospital_affiliation)
                    VALUES (\(id), \(license), \(specialization), \(affiliation))
                    ON CONFLICT (user_id) DO UPDATE SET license_number = excluded.license_number,
                        specialization = excluded.specialization, hospital_affiliation = excluded.hospital_affiliation,
                        verification = 'pending', submitted_at = now(), decided_at = NULL, decided_by = NULL,
                        revocation_reason = NULL
                    """, logger: self.logger)
                if previous == "verified" {
                    try await self.announceRevoked(c, id, role: .professional, reason: "credentials resubmitted")
                    try await Self.followVerification(c, id, verified: false, logger: self.logger)
                }
                var response = Caremesh_Identity_V1_SubmitCredentialsResponse()
                response.verification = try await self.load(c, id)
                return response
            }
        } catch {
            if let (state, constraint) = PSQLError.violation(in: error), state == "23505", constraint == "professionals_license_number_key" {
                throw Accounts.taken("credentials.license_number", "this licence number is already registered")
            }
            throw error
        }
    }

    static let documentTypes: [Caremesh_Identity_V1_DocumentType: (name: String, volunteer: Bool, professional: Bool)] = [
        .idProof: ("ID_PROOF", true, false), .certification: ("CERTIFICATION", true, false),
        .backgroundCheck: ("BACKGROUND_CHECK", true, false), .medicalLicense: ("MEDICAL_LICENSE", false, true),
        .degree: ("DEGREE", false, true), .hospitalID: ("HOSPITAL_ID", false, true), .other: ("OTHER", true, true),
    ]

    /// A supporting document (an https link) for the caller's submitted credentials.
    func addDocument(_ r: Caremesh_Identity_V1_AddDocumentRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_AddDocumentResponse
    {
        let caller = try context.requireRole(["volunteer", "professional"])
        let id = try caller.requireUserID()
        let volunteer = caller.has(role: "volunteer")
        var v = FieldViolations()
        let type = Self.documentTypes[r.type]
        v.check(type.map { volunteer ? $0.volunteer : $0.professional } ?? false, "type",
                volunteer ? "must be ID_PROOF, CERTIFICATION, BACKGROUND_CHECK or OTHER"
                          : "must be MEDICAL_LICENSE, DEGREE, HOSPITAL_ID or OTHER")
        Validate.httpsURL(r.url, into: &v, field: "url", required: true)
        try v.throwIfAny()
        let query: PostgresQuery = volunteer
            ? "INSERT INTO volunteer_documents (volunteer_id, document_type, document_url) SELECT user_id, \(type!.name), \(r.url) FROM volunteers WHERE user_id = \(id) RETURNING id, extract(epoch FROM uploaded_at)::float8"
            : "INSERT INTO professional_documents (professional_id, document_type, document_url) SELECT user_id, \(type!.name), \(r.url) FROM professionals WHERE user_id = \(id) RETURNING id, extract(epoch FROM uploaded_at)::float8"
        return try await store.withTransaction { c in
            var row: (UUID, Double)?
            for try await r in try await c.query(query, logger: self.logger).decode((UUID, Double).self) { row = r }
            guard let (docID, at) = row else {
                throw RPCError(.failedPrecondition, "submit your credentials before adding documents")
            }
            var response = Caremesh_Identity_V1_AddDocumentResponse()
            response.document.id = docID.uuidString.lowercased()
            response.document.type = r.type
            response.document.url = r.url
            response.document.uploadedAt = Google_Protobuf_Timestamp(epochSeconds: at)
            return response
        }
    }

    // MARK: - Decide (admins)

    func verify(_ r: Caremesh_Identity_V1_VerifyUserRequest, _ context: RPCContext) async throws -> Caremesh_Identity_V1_VerifyUserResponse {
        let admin = try context.requireRole(Roles.admin).requireUserID()
        guard let id = UUID(uuidString: r.userID) else { throw RPCError.invalidArgument(field: "user_id", "must be a UUID") }
        guard id != admin else { throw RPCError(.permissionDenied, "no one may verify themselves") }
        return try await store.withTransaction { c in
            let role: Caremesh_Identity_V1_Role
            var skills: [String] = []
            if let s = try await c.query("""
                UPDATE volunteers SET verification = 'verified', decided_at = now(), decided_by = \(admin), revocation_reason = NULL
                WHERE user_id = \(id) RETURNING skills
                """, logger: self.logger).first([String].self) {
                role = .volunteer
                skills = s
            } else if try await c.query("""
                UPDATE professionals SET verification = 'verified', decided_at = now(), decided_by = \(admin), revocation_reason = NULL
                WHERE user_id = \(id) RETURNING user_id
                """, logger: self.logger).hasRows() {
                role = .professional
                try await Self.followVerification(c, id, verified: true, by: admin, logger: self.logger)
            } else {
                throw RPCError(.notFound, "user_id: no credentials were submitted for this user")
            }
            var event = Caremesh_Identity_V1_VolunteerVerified()
            event.userID = id.uuidString.lowercased()
            event.role = role
            event.skills = skills.map(Self.skill)
            event.verifiedBy = admin.uuidString.lowercased()
            _ = try await self.outbox.append(event, key: event.userID, on: c)
            var response = Caremesh_Identity_V1_VerifyUserResponse()
            response.verification = try await self.load(c, id)
            return response
        }
    }

    func revoke(_ r: Caremesh_Identity_V1_RevokeVerificationRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_RevokeVerificationResponse
    {
        let admin = try context.requireRole(Roles.admin).requireUserID()
        var v = FieldViolations()
        let id = UUID(uuidString: r.userID)
        v.check(id != nil, "user_id", "must be a UUID")
        Validate.name(r.reason, into: &v, field: "reason", max: 500)
        try v.throwIfAny()
        guard id! != admin else { throw RPCError(.permissionDenied, "no one may decide on their own verification") }
        let reason = r.reason.trimmingCharacters(in: .whitespacesAndNewlines)
        return try await store.withTransaction { c in
            var role = Caremesh_Identity_V1_Role.volunteer
            var found = try await c.query("""
                UPDATE volunteers SET verification = 'revoked', decided_at = now(), decided_by = \(admin), revocation_reason = \(reason)
                WHERE user_id = \(id!) RETURNING user_id
                """, logger: self.logger).hasRows()
            if !found {
                role = .professional
                found = try await c.query("""
                    UPDATE professionals SET verification = 'revoked', decided_at = now(), decided_by = \(admin), revocation_reason = \(reason)
                    WHERE user_id = \(id!) RETURNING user_id
                    """, logger: self.logger).hasRows()
            }
            guard found else { throw RPCError(.notFound, "user_id: no credentials were submitted for this user") }
            try await self.announceRevoked(c, id!, role: role, reason: reason)
            if role == .professional { try await Self.followVerification(c, id!, verified: false, by: admin, logger: self.logger) }
            var response = Caremesh_Identity_V1_RevokeVerificationResponse()
            response.verification = try await self.load(c, id!)
            return response
        }
    }

    /// A professional's role follows the licence: verified makes a user a professional, anything
    /// else makes a professional a user again (other roles, an admin's say, are left alone).
    static func followVerification(_ c: PostgresConnection, _ id: UUID, verified: Bool, by admin: UUID? = nil,
                                   logger: Logger) async throws {
        let (from, to): (String, Caremesh_Identity_V1_Role) = verified ? ("user", .professional) : ("professional", .user)
        guard try await c.query("SELECT 1 FROM users WHERE id = \(id) AND role = \(from)", logger: logger).hasRows() else { return }
        _ = try await Admin.setRole(c, id: id, role: to, by: admin, logger: logger)
    }

    private func announceRevoked(_ c: PostgresConnection, _ id: UUID, role: Caremesh_Identity_V1_Role, reason: String) async throws {
        var event = Caremesh_Identity_V1_VerificationRevoked()
        event.userID = id.uuidString.lowercased()
        event.role = role
        event.reason = reason
        _ = try await outbox.append(event, key: event.userID, on: c)
    }

    func get(_ r: Caremesh_Identity_V1_GetVerificationRequest, _ context: RPCContext) async throws -> Caremesh_Identity_V1_GetVerificationResponse {
        let id = try context.requireSelf(r.userID, field: "user_id", orRole: Roles.admin)
        var response = Caremesh_Identity_V1_GetVerificationResponse()
        response.verification = try await store.withConnection { c in try await self.load(c, id) }
        return response
    }

    /// Everything known about one user's verification.
    func load(_ c: PostgresConnection, _ id: UUID) async throws -> Caremesh_Identity_V1_Verification {
        var out = Caremesh_Identity_V1_Verification()
        out.userID = id.uuidString.lowercased()
        out.state = .none
        let volunteer = try await c.query("""
            SELECT skills, verification, coalesce(decided_by::text, ''), extract(epoch FROM decided_at)::float8,
                   coalesce(revocation_reason, ''), extract(epoch FROM submitted_at)::float8
            FROM volunteers WHERE user_id = \(id)
            """, logger: logger)
        for try await (skills, state, by, at, reason, submitted) in volunteer.decode(([String], String, String, Double?, String, Double).self) {
            out.role = .volunteer
            out.volunteer.skills = skills.map(Self.skill)
            fill(&out, state, by, at, reason, submitted)
            let certs = try await c.query("""
                SELECT name, issued_by, issue_date::text, coalesce(expiry_date::text, ''), coalesce(document_url, '')
                FROM certifications WHERE volunteer_id = \(id) ORDER BY issue_date
                """, logger: logger)
            for try await (name, issuer, issue, expiry, url) in certs.decode((String, String, String, String, String).self) {
                var cert = Caremesh_Identity_V1_Certification()
                cert.name = name
                cert.issuedBy = issuer
                cert.issueDate = issue
                cert.expiryDate = expiry
                cert.documentURL = url
                out.volunteer.certifications.append(cert)
            }
        }
        let professional = try await c.query("""
            SELECT license_number, specialization, coalesce(hospital_affiliation, ''), verification,
                   coalesce(decided_by::text, ''), extract(epoch FROM decided_at)::float8, coalesce(revocation_reason, ''),
                   extract(epoch FROM submitted_at)::float8
            FROM professionals WHERE user_id = \(id)
            """, logger: logger)
        for try await (license, spec, hospital, state, by, at, reason, submitted) in professional.decode(
            (String, String, String, String, String, Double?, String, Double).self)
        {
            out.role = .professional
            out.professional.licenseNumber = license
            out.professional.specialization = spec
            out.professional.hospitalAffiliation = hospital
            fill(&out, state, by, at, reason, submitted)
        }
        let documents = try await c.query("""
            SELECT id, document_type, document_url, extract(epoch FROM uploaded_at)::float8 FROM volunteer_documents WHERE volunteer_id = \(id)
            UNION ALL
            SELECT id, document_type, document_url, extract(epoch FROM uploaded_at)::float8 FROM professional_documents WHERE professional_id = \(id)
            ORDER BY 4, 1
            """, logger: logger)
        for try await (docID, type, url, at) in documents.decode((UUID, String, String, Double).self) {
            var d = Caremesh_Identity_V1_Document()
            d.id = docID.uuidString.lowercased()
            d.type = Self.documentTypes.first { $0.value.name == type }?.key ?? .unspecified
            d.url = url
            d.uploadedAt = Google_Protobuf_Timestamp(epochSeconds: at)
            out.documents.append(d)
        }
        return out
    }

    private func fill(_ out: inout Caremesh_Identity_V1_Verification, _ state: String, _ by: String, _ at: Double?,
                      _ reason: String, _ submitted: Double) {
        out.state = Self.state(named: state)
        out.decidedBy = by
        if let at { out.decidedAt = Google_Protobuf_Timestamp(epochSeconds: at) }
        out.revocationReason = reason
        out.submittedAt = Google_Protobuf_Timestamp(epochSeconds: submitted)
    }

    // MARK: - Expiry timer

    /// The durable timer of one certification: mark it expired and announce it (once).
    func expire(_ job: Job, _ c: PostgresConnection) async throws {
        guard let id = UUID(uuidString: String(decoding: job.payload, as: UTF8.self)) else { return }
        let rows = try await c.query("""
            UPDATE certifications SET expired_at = now()
            WHERE id = \(id) AND expired_at IS NULL AND expiry_date <= current_date
            RETURNING volunteer_id, name, expiry_date::text
            """, logger: logger)
        for try await (volunteer, name, date) in rows.decode((UUID, String, String).self) {
            var event = Caremesh_Identity_V1_CredentialExpired()
            event.userID = volunteer.uuidString.lowercased()
            event.credential = name
            event.expiredOn = date
            _ = try await outbox.append(event, key: event.userID, on: c)
        }
    }
}

import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// The people CareMesh serves: patients and clients (PHI).
///
/// Only care staff may touch them (admin, coordinator, professional, caregiver, EA), and each
/// call says why (a purpose from a closed set). Every create, read, update and search runs in
/// one transaction that first sets the acting user and roles (what the table's row-level
/// security checks: without them PostgreSQL shows no row, even to identity's own role) and
/// ends by writing the audit entries, so a PHI access without its audit entry cannot commit.
/// Audit entries hold ids, roles, the action and the purpose, never PHI.
final class People: Sendable {
    let store: Store
    let outbox: Outbox
    let logger: Logger

    /// Who may touch PHI (the database's `phi_access_allowed()` says the same).
    static let careRoles: Set<String> = ["admin", "coordinator", "professional", "caregiver", "ea"]

    init(store: Store, outbox: Outbox, logger: Logger) {
        self.store = store
        self.outbox = outbox
        self.logger = logger
    }

    static func purpose(named name: String) -> Caremesh_Identity_V1_AccessPurpose { .init(storedName: name) }

    static let kindNames: [Caremesh_Identity_V1_PersonKind: String] = [.patient: "patient", .client: "client"]

    // MARK: - Calls

    func create(_ r: Caremesh_Identity_V1_CreatePatientRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_CreatePatientResponse
    {
        let actor = try Actor(context)
        var v = FieldViolations()
        let purpose = Self.purpose(r.purpose, into: &v)
        v.check([.patient, .client].contains(r.patient.kind), "patient.kind", "must be PATIENT or CLIENT")
        let fields = Fields(r.patient, into: &v)
        try v.throwIfAny()
        let kind = Self.kindNames[r.patient.kind]!
        var response = Caremesh_Identity_V1_CreatePatientResponse()
        response.patient = try await one(actor, "CREATE", purpose, """
            INSERT INTO patients (kind, full_name, date_of_birth, primary_phone, secondary_phone, preferred_language,
                                  sms_preferred, home_zone_id, created_by)
            VALUES (\(kind), \(fields.name), \(fields.birth)::date, \(fields.primary), \(fields.secondary), \(fields.language),
                    \(fields.sms), \(fields.zone), \(actor.id))
            RETURNING \(unescaped: Self.columns)
            """) { c, patient in try await self.zoneChanged(patient, on: c) }
        return response
    }

    func update(_ r: Caremesh_Identity_V1_UpdatePatientRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_UpdatePatientResponse
    {
        let actor = try Actor(context)
        var v = FieldViolations()
        let purpose = Self.purpose(r.purpose, into: &v)
        let id = UUID(uuidString: r.patient.id)
        v.check(id != nil, "patient.id", "must be a UUID")
        let fields = Fields(r.patient, into: &v)
        try v.throwIfAny()
        var response = Caremesh_Identity_V1_UpdatePatientResponse()
        response.patient = try await one(actor, "UPDATE", purpose, """
            UPDATE patients SET full_name = \(fields.name), date_of_birth = \(fields.birth)::date,
                primary_phone = \(fields.primary), secondary_phone = \(fields.secondary),
                preferred_language = \(fields.language), sms_preferred = \(fields.sms), home_zone_id = \(fields.zone)
            WHERE id = \(id!) RETURNING \(unescaped: Self.columns)
            """) { c, patient in try await self.zoneChanged(patient, on: c) }
        return response
    }

    func get(_ r: Caremesh_Identity_V1_GetPatientRequest, _ context: RPCContext) async throws -> Caremesh_Identity_V1_GetPatientResponse {
        let actor = try Actor(context)
        var v = FieldViolations()
        let purpose = Self.purpose(r.purpose, into: &v)
        let id = UUID(uuidString: r.id)
        v.check(id != nil, "id", "must be a UUID")
        try v.throwIfAny()
        var response = Caremesh_Identity_V1_GetPatientResponse()
        response.patient = try await one(actor, "READ", purpose, "SELECT \(unescaped: Self.columns) FROM patients WHERE id = \(id!)")
        return response
    }

    func search(_ r: Caremesh_Identity_V1_SearchPatientsRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_SearchPatientsResponse
    {
        let actor = try Actor(context)
        var v = FieldViolations()
        let purpose = Self.purpose(r.purpose, into: &v)
        let prefix = r.namePrefix.trimmingCharacters(in: .whitespacesAndNewlines)
        v.check(!(prefix.isEmpty && r.phone.isEmpty), "name_prefix", "give a name prefix or a phone")
        v.check(prefix.isEmpty || (2...100).contains(prefix.count), "name_prefix", "must be 2 to 100 characters")
        v.phone(r.phone, "phone", required: false)
        v.check([.unspecified, .patient, .client].contains(r.kind), "kind", "must be PATIENT, CLIENT or unset")
        let page = Page(size: r.pageSize, token: r.pageToken, into: &v)
        try v.throwIfAny()
        // LIKE's own characters in the name are matched literally.
        let pattern: String? = prefix.isEmpty ? nil : prefix.lowercased()
            .replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
            .replacingOccurrences(of: "_", with: "\\_") + "%"
        let phone: String? = r.phone.isEmpty ? nil : r.phone
        let kind = Self.kindNames[r.kind]
        return try await withPHI(actor) { c in
            let rows = try await c.query("""
                SELECT \(unescaped: Self.columns), \(unescaped: Page.micros("created_at")) FROM patients
                WHERE (\(pattern)::text IS NULL OR lower(full_name) LIKE \(pattern))
                  AND (\(phone)::text IS NULL OR primary_phone = \(phone) OR secondary_phone = \(phone))
                  AND (\(kind)::text IS NULL OR kind = \(kind))
                  AND \(after: page, time: "created_at", id: "id")
                ORDER BY created_at DESC, id DESC LIMIT \(page.limit)
                """, logger: self.logger)
            let (found, token) = try await page.collect(
                rows.decode((UUID, String, String, String?, String?, String?, String, Bool, UUID?, Double, Double, UUID?, Int64).self)
            ) { r in ((r.0, Self.patient((r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11))), r.12, r.0) }
            try await self.auditSearch(c, actor, purpose: purpose, found: found.count)
            try await self.audit(c, actor, "READ", ids: found.map(\.0), purpose: purpose)
            var response = Caremesh_Identity_V1_SearchPatientsResponse()
            response.patients = found.map(\.1)
            response.nextPageToken = token
            return response
        }
    }

    /// How to reach a person by SMS, for the messaging service's reminders: four fields, in a
    /// transaction acting as that service (a SELECT-only policy lets it read, `patients_contact_read`),
    /// audited with the service as the actor.
    func contact(_ r: Caremesh_Identity_V1_GetPatientContactRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_GetPatientContactResponse
    {
        let caller = try context.requireService([Self.contactReader], "only the messaging service reads contacts")
        var v = FieldViolations()
        let purpose = Self.purpose(r.purpose, into: &v)
        let id = UUID(uuidString: r.patientID)
        v.check(id != nil, "patient_id", "must be a UUID")
        try v.throwIfAny()
        let trace = context.traceID
        let service = String(caller.subject.dropFirst("service:".count))
        return try await store.withActor(caller.subject, roles: ["service"]) { c in
            let rows = try await c.query("""
                SELECT full_name, primary_phone, preferred_language, sms_preferred FROM patients WHERE id = \(id!)
                """, logger: self.logger).collect()
            guard let row = rows.first else { throw RPCError(.notFound, "no such patient or client") }
            let (name, phone, language, sms) = try row.decode((String, String?, String, Bool).self)
            try await c.query("""
                INSERT INTO audit_log (actor_service, actor_roles, action, record_type, record_id, purpose, request_id)
                VALUES (\(service), \(caller.roles), 'READ', 'patient', \(id!), \(purpose), \(trace))
                """, logger: self.logger)
            var response = Caremesh_Identity_V1_GetPatientContactResponse()
            response.patientID = id!.text
            response.fullName = name
            response.primaryPhone = phone ?? ""
            response.preferredLanguage = language
            response.smsPreferred = sms
            return response
        }
    }

    /// The one service that may read contacts (`phi_contact_read_allowed()` says the same).
    static let contactReader = "service:messaging"

    // MARK: - The PHI transaction and its audit

    /// The caller acting on PHI: a user with a care role.
    struct Actor: Sendable {
        let id: UUID
        let roles: [String]
        let trace: String

        init(_ context: RPCContext) throws(RPCError) {
            let caller = try context.requireRole(People.careRoles)
            guard let id = caller.userID else { throw RPCError(.permissionDenied, "PHI is for people, not services") }
            self.id = id
            roles = caller.roles.sorted()
            trace = context.traceID
        }
    }

    /// Runs `body` in a transaction in which row-level security sees `actor`.
    func withPHI<R: Sendable>(_ actor: Actor, _ body: @escaping @Sendable (PostgresConnection) async throws -> R) async throws -> R {
        try await store.withActor(actor.id.text, roles: actor.roles, body)
    }

    /// The one patient `query` writes or reads, audited as `action`, in a PHI transaction
    /// (`then` runs in it too, e.g. to announce a write).
    func one(_ actor: Actor, _ action: String, _ purpose: String, _ query: PostgresQuery,
                     then: @escaping @Sendable (PostgresConnection, Caremesh_Identity_V1_Patient) async throws -> Void = { _, _ in })
        async throws -> Caremesh_Identity_V1_Patient
    {
        try await withPHI(actor) { c in
            let (id, patient) = try await self.load(c, query)
            try await self.audit(c, actor, action, ids: [id], purpose: purpose)
            try await then(c, patient)
            return patient
        }
    }

    /// `PersonZoneChanged` with the zone as it now stands (ids only): alerts routes by it.
    func zoneChanged(_ patient: Caremesh_Identity_V1_Patient, on c: PostgresConnection) async throws {
        var e = Caremesh_Identity_V1_PersonZoneChanged()
        e.personID = patient.id
        e.kind = patient.kind
        e.zoneID = patient.homeZoneID
        _ = try await outbox.append(e, key: patient.id, on: c)
    }

    /// One audit entry per record, in the caller's transaction.
    func audit(_ c: PostgresConnection, _ actor: Actor, _ action: String, ids: [UUID], purpose: String) async throws {
        guard !ids.isEmpty else { return }
        try await c.query("""
            INSERT INTO audit_log (actor_id, actor_roles, action, record_type, record_id, purpose, request_id)
            SELECT \(actor.id), \(actor.roles), \(action), 'patient', r, \(purpose), \(actor.trace) FROM unnest(\(ids)::uuid[]) AS r
            """, logger: logger)
    }

    /// The audit entry of a search itself: no record, how many it returned.
    private func auditSearch(_ c: PostgresConnection, _ actor: Actor, purpose: String, found: Int) async throws {
        try await c.query("""
            INSERT INTO audit_log (actor_id, actor_roles, action, record_type, result_count, purpose, request_id)
            VALUES (\(actor.id), \(actor.roles), 'SEARCH', 'patient', \(found), \(purpose), \(actor.trace))
            """, logger: logger)
    }

    // MARK: - Fields and rows

    static func purpose(_ p: Caremesh_Identity_V1_AccessPurpose, into v: inout FieldViolations) -> String {
        v.purpose(p) ?? ""
    }

    /// A patient's editable fields, checked and normalised (each violation names its field).
    struct Fields: Sendable {
        var name = "", birth: String?, primary: String?, secondary: String?, language = "en", sms = false, zone: UUID?

        init(_ p: Caremesh_Identity_V1_Patient, into v: inout FieldViolations) {
            Validate.name(p.fullName, into: &v, field: "patient.full_name")
            name = p.fullName.trimmingCharacters(in: .whitespacesAndNewlines)
            if !p.dateOfBirth.isEmpty {
                if let d = Validate.date(p.dateOfBirth) {
                    v.check(d > Validate.date("1900-01-01")! && d <= Date(), "patient.date_of_birth", "must be after 1900-01-01 and not in the future")
                    birth = p.dateOfBirth
                } else {
                    v.add("patient.date_of_birth", "must be a date, YYYY-MM-DD")
                }
            }
            v.phone(p.primaryPhone, "patient.primary_phone", required: false)
            v.phone(p.secondaryPhone, "patient.secondary_phone", required: false)
            primary = p.primaryPhone.isEmpty ? nil : p.primaryPhone
            secondary = p.secondaryPhone.isEmpty ? nil : p.secondaryPhone
            v.check(secondary == nil || secondary != primary, "patient.secondary_phone", "must differ from the primary phone")
            if !p.preferredLanguage.isEmpty {
                language = p.preferredLanguage
                Validate.languageTag(language, into: &v, field: "patient.preferred_language")
            }
            sms = p.smsPreferred
            v.check(!sms || primary != nil, "patient.sms_preferred", "needs a primary phone")
            if !p.homeZoneID.isEmpty {
                zone = UUID(uuidString: p.homeZoneID)
                v.check(zone != nil, "patient.home_zone_id", "must be a UUID")
            }
        }
    }

    static let columns = """
        id, kind, full_name, date_of_birth::text, primary_phone, secondary_phone, preferred_language, sms_preferred,
        home_zone_id, extract(epoch FROM created_at)::float8, extract(epoch FROM updated_at)::float8, account_id
        """

    typealias Row = (UUID, String, String, String?, String?, String?, String, Bool, UUID?, Double, Double, UUID?)

    /// The one row `query` returns; `NOT_FOUND` when none (including a row RLS hides).
    private func load(_ c: PostgresConnection, _ query: PostgresQuery) async throws -> (UUID, Caremesh_Identity_V1_Patient) {
        for try await row in try await c.query(query, logger: logger).decode(Row.self) {
            return (row.0, Self.patient(row))
        }
        throw RPCError(.notFound, "no such patient or client")
    }

    static func patient(_ row: Row) -> Caremesh_Identity_V1_Patient {
        var p = Caremesh_Identity_V1_Patient()
        p.id = row.0.uuidString.lowercased()
        p.kind = kindNames.key(for: row.1) ?? .patient
        p.fullName = row.2
        p.dateOfBirth = row.3 ?? ""
        p.primaryPhone = row.4 ?? ""
        p.secondaryPhone = row.5 ?? ""
        p.preferredLanguage = row.6
        p.smsPreferred = row.7
        p.homeZoneID = row.8?.uuidString.lowercased() ?? ""
        p.createdAt = Google_Protobuf_Timestamp(epochSeconds: row.9)
        p.updatedAt = Google_Protobuf_Timestamp(epochSeconds: row.10)
        p.accountID = row.11?.text ?? ""
        return p
    }
}

import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import PostgresNIO
import SwiftProtobuf

/// Who may see an appointment, and the trail of who did.
///
/// Appointments are PHI. PostgreSQL decides what each transaction sees (forced row-level
/// security, migration 0104): every appointment call runs in `withPHI`, which sets the acting
/// user, their roles, and, for staff who stated one, the purpose. The practitioner and the
/// patient's account see their own; admins and coordinators see others' only with a purpose. A
/// session that sets none sees no appointment at all. Every read, list and change writes
/// `appointment_audit` entries in the same transaction (ids, roles, a purpose: never PHI), so an
/// access without its entry cannot commit.
extension Appointments {
    /// The signed-in person calling.
    struct Actor: Sendable {
        let caller: Caller
        let id: UUID
        let roles: [String]
        /// An admin or coordinator (the front desk).
        let staff: Bool
        /// The purpose stated, as stored.
        let purpose: String?
        let trace: String

        init(_ context: RPCContext, purpose stated: Caremesh_Identity_V1_AccessPurpose) throws(RPCError) {
            caller = try context.requireCaller()
            id = try caller.requireUserID()
            roles = caller.roles.sorted()
            staff = caller.hasAny(of: Responders.staff)
            purpose = stated.storedName
            trace = context.traceID
        }

        /// Staff who stated a purpose: they act on anyone's appointments (what the policy says too).
        var actsForOthers: Bool { staff && purpose != nil }

        /// What the actor is to `a`.
        func relation(to a: Record) -> AppointmentRelation {
            var r: AppointmentRelation = []
            if actsForOthers { r.insert(.staff) }
            if id == a.patientAccount { r.insert(.patient) }
            if id == a.practitioner { r.insert(.practitioner) }
            return r
        }

        /// The purpose an entry records: the one stated, else what being party to it implies.
        func auditPurpose(_ relation: AppointmentRelation) -> String {
            purpose ?? (relation.contains(.practitioner) ? "TREATMENT" : "PERSON_REQUEST")
        }

        /// Staff acting beyond their own appointments say why.
        static let purposeNeeded = RPCError.invalidArgument(
            field: "purpose", "staff acting on someone else's appointments say why: TREATMENT, EMERGENCY, CARE_COORDINATION, "
                + "PERSON_REQUEST, OPERATIONS or COMPLIANCE")
    }

    /// Runs `body` in a transaction in which row-level security sees `actor`.
    func withPHI<R: Sendable>(_ actor: Actor, _ body: @escaping @Sendable (PostgresConnection) async throws -> R) async throws -> R {
        try await store.withActor(actor.id.text, roles: actor.roles) { c in
            if actor.actsForOthers, let purpose = actor.purpose {
                try await c.query("SELECT set_config('caremesh.purpose', \(purpose), true)", logger: self.logger)
            }
            return try await body(c)
        }
    }

    /// One entry per appointment, each with its purpose, in the caller's transaction.
    func audit(_ c: PostgresConnection, _ actor: Actor, _ action: String, _ records: [Record]) async throws {
        guard !records.isEmpty else { return }
        let purposes = records.map { actor.auditPurpose(actor.relation(to: $0)) }
        try await c.query("""
            INSERT INTO appointment_audit (actor_id, actor_roles, action, appointment_id, purpose, request_id)
            SELECT \(actor.id), \(actor.roles), \(action), r, p, \(actor.trace) FROM unnest(\(records.map(\.id))::uuid[], \(purposes)::text[]) AS x(r, p)
            """, logger: logger)
    }

    /// The entry of a list itself: no appointment, how many it returned.
    func auditList(_ c: PostgresConnection, _ actor: Actor, found: Int) async throws {
        try await c.query("""
            INSERT INTO appointment_audit (actor_id, actor_roles, action, result_count, purpose, request_id)
            VALUES (\(actor.id), \(actor.roles), 'LIST', \(Int32(found)), \(actor.purpose ?? "PERSON_REQUEST"), \(actor.trace))
            """, logger: logger)
    }

    /// The trail, newest first (admins only).
    func listAudit(_ r: Caremesh_Dispatch_V1_ListAppointmentAuditRequest, _ context: RPCContext) async throws
        -> Caremesh_Dispatch_V1_ListAppointmentAuditResponse
    {
        _ = try context.requireRole(["admin"])
        var v = FieldViolations()
        let appointment = v.optionalUUID(r.appointmentID, "appointment_id")
        let actor = v.optionalUUID(r.actorID, "actor_id")
        let page = Page(size: r.pageSize, token: r.pageToken, into: &v)
        try v.throwIfAny()
        return try await store.withConnection { c in
            let rows = try await c.query("""
                SELECT id, actor_id, actor_roles, action, appointment_id, coalesce(result_count, 0), purpose, request_id,
                       extract(epoch FROM at)::float8, \(unescaped: Page.micros("at"))
                FROM appointment_audit
                WHERE (\(appointment)::uuid IS NULL OR appointment_id = \(appointment)) AND (\(actor)::uuid IS NULL OR actor_id = \(actor))
                  AND \(after: page, time: "at", id: "id")
                ORDER BY at DESC, id DESC LIMIT \(page.limit)
                """, logger: self.logger)
            var response = Caremesh_Dispatch_V1_ListAppointmentAuditResponse()
            (response.entries, response.nextPageToken) = try await page.collect(
                rows.decode((UUID, UUID, [String], String, UUID?, Int32, String, String, Double, Int64).self)
            ) { row in
                var e = Caremesh_Dispatch_V1_AppointmentAuditEntry()
                e.id = row.0.text
                e.actorID = row.1.text
                e.actorRoles = row.2
                e.action = row.3
                e.appointmentID = row.4?.text ?? ""
                e.resultCount = UInt32(row.5)
                e.purpose = .init(storedName: row.6)
                e.requestID = row.7
                e.at = Google_Protobuf_Timestamp(epochSeconds: row.8)
                return (e, row.9, row.0)
            }
            return response
        }
    }

    // MARK: - Rows

    struct Record: Sendable {
        var appointment: Caremesh_Dispatch_V1_Appointment
        var id: UUID
        var practitioner: UUID
        var patient: UUID
        var patientAccount: UUID?
        var state: AppointmentState
        var start: Date
    }

    /// Over `a` (appointments) joined with `s` (the practitioner's schedule).
    static let columns = """
        a.id, a.practitioner_id, a.patient_id, extract(epoch FROM lower(a.during))::float8, extract(epoch FROM upper(a.during))::float8,
        a.status, a.reason, a.booked_by, s.time_zone, a.cancel_reason, extract(epoch FROM a.created_at)::float8,
        extract(epoch FROM a.confirmed_at)::float8, extract(epoch FROM a.cancelled_at)::float8, extract(epoch FROM a.completed_at)::float8,
        a.patient_account_id
        """

    static func record(_ row: PostgresRow) throws -> Record {
        let r = row.makeRandomAccess()
        var a = Caremesh_Dispatch_V1_Appointment()
        let id = try r[0].decode(UUID.self), practitioner = try r[1].decode(UUID.self), patient = try r[2].decode(UUID.self)
        a.id = id.text
        a.practitionerID = practitioner.text
        a.patientID = patient.text
        let start = try r[3].decode(Double.self)
        a.start = Google_Protobuf_Timestamp(epochSeconds: start)
        a.end = Google_Protobuf_Timestamp(epochSeconds: try r[4].decode(Double.self))
        let state = AppointmentState(rawValue: try r[5].decode(String.self)) ?? .pending
        a.status = state.proto
        a.reason = try r[6].decode(String.self)
        a.bookedBy = try r[7].decode(UUID.self).text
        a.timeZone = try r[8].decode(String.self)
        a.cancelReason = try r[9].decode(String.self)
        a.createdAt = Google_Protobuf_Timestamp(epochSeconds: try r[10].decode(Double.self))
        if let t = try r[11].decode(Double?.self) { a.confirmedAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        if let t = try r[12].decode(Double?.self) { a.cancelledAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        if let t = try r[13].decode(Double?.self) { a.completedAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        let account = try r[14].decode(UUID?.self)
        a.patientAccountID = account?.text ?? ""
        return Record(appointment: a, id: id, practitioner: practitioner, patient: patient, patientAccount: account, state: state,
                      start: Date(timeIntervalSince1970: start))
    }

    /// The appointments that `statement` returns (a SELECT of `appointments` rows, or an
    /// INSERT/UPDATE … RETURNING *), with their practitioner's time zone, ordered by `order`.
    func appointments(_ c: PostgresConnection, _ statement: PostgresQuery, order: String = "") async throws -> [Record] {
        let query = PostgresQuery(unsafeSQL: """
            WITH a AS (\(statement.sql)) SELECT \(Self.columns) FROM a JOIN practitioner_schedules s ON s.practitioner_id = a.practitioner_id \(order)
            """, binds: statement.binds)
        var out: [Record] = []
        for try await row in try await c.query(query, logger: logger) { out.append(try Self.record(row)) }
        return out
    }
}

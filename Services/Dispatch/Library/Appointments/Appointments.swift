import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// Appointments (seed 003): practitioners' weekly hours in their time zone, blocked times and
/// free slots (`Appointments+Schedules`), and bookings that the database keeps from overlapping
/// (`appointments_practitioner_free`, `appointments_patient_free`,
/// `appointments_patient_account_free`), under row-level security and audit
/// (`Appointments+Access`).
///
/// A booking names its patient by a record at identity or by an account; identity says which
/// (`PersonDirectory`), and whether the record is linked to the patient's own account. The
/// appointment keeps both: the record for reminders, the account for the patient's own view and
/// the conversation with the practitioner.
struct Appointments: Sendable {
    let store: Store
    let outbox: Outbox
    let people: PersonDirectory
    let logger: Logger

    static let longestSearch: TimeInterval = 31 * 86_400
    static let longestList: TimeInterval = 366 * 86_400
    static let longestBlock: TimeInterval = 366 * 86_400

    // MARK: - Who

    /// `text` as a practitioner id (empty: the caller, who must be a professional); someone
    /// else's schedule only for staff.
    static func practitioner(_ text: String, _ context: RPCContext) throws -> UUID {
        if text.isEmpty, try !context.requireCaller().has(role: "professional") {
            throw RPCError(.permissionDenied, "only practitioners (professionals) have schedules")
        }
        return try context.requireSelf(text, field: "practitioner_id", orRole: Responders.staff)
    }

    /// Serializes a practitioner's bookings against changes to their hours and blocked times
    /// (overlapping bookings are refused by the exclusion constraints, not by this lock).
    func lock(_ c: PostgresConnection, _ practitioner: UUID) async throws {
        try await c.lockForTransaction("dispatch.practitioner.\(practitioner)", logger: logger)
    }

    // MARK: - Appointments

    func book(_ r: Caremesh_Dispatch_V1_BookAppointmentRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_BookAppointmentResponse {
        let actor = try Actor(context, purpose: r.purpose)
        var v = FieldViolations()
        let practitioner = v.uuid(r.practitionerID, "practitioner_id")
        let named = r.patientID.isEmpty ? actor.id : v.uuid(r.patientID, "patient_id")
        v.check(r.hasStart, "start", "is required")
        v.check(!r.hasStart || r.start.date > Date(), "start", "must be in the future")
        v.check(r.durationMinutes <= 480, "duration_minutes", "must be at most 480 (0 for the practitioner's slot)")
        v.check(r.reason.count <= 500, "reason", "must be at most 500 characters")
        v.check(named == nil || named != practitioner, "patient_id", "cannot be the practitioner")
        let forSelf = named == actor.id
        if named != nil, !forSelf {
            guard actor.staff else { throw RPCError(.permissionDenied, "only staff book for someone else") }
            if actor.purpose == nil { v.add("purpose", "staff booking for someone else say why") }
        }
        try v.throwIfAny()
        // Who the patient is: a record, an account, or both linked (NOT_FOUND naming patient_id).
        let person = try await people.resolve(named!, field: "patient_id")
        let account = forSelf ? actor.id : person.account
        guard let patient = person.record ?? account else { throw RPCError.notFound(field: "patient_id", "names no patient") }
        guard account != practitioner, patient != practitioner else {
            throw RPCError.invalidArgument(field: "patient_id", "cannot be the practitioner")
        }
        let start = r.start.date
        do {
            return try await withPHI(actor) { c in
                try await self.lock(c, practitioner!)
                let (tz, slot) = try await self.settings(c, practitioner!)
                let minutes = r.durationMinutes == 0 ? slot : max(5, Int(r.durationMinutes))
                let end = start.addingTimeInterval(Double(minutes * 60))
                for try await (inHours, blocked) in try await c.query("""
                    SELECT EXISTS (SELECT 1 FROM availability a, (SELECT \(start)::timestamptz AT TIME ZONE \(tz) AS local) l
                                   WHERE a.practitioner_id = \(practitioner!) AND a.weekday = extract(isodow FROM l.local)
                                     AND (l.local::date + a.start_time) AT TIME ZONE \(tz) <= \(start)::timestamptz
                                     AND (l.local::date + a.end_time) AT TIME ZONE \(tz) >= \(end)::timestamptz),
                           EXISTS (SELECT 1 FROM blocked_times b
                                   WHERE b.practitioner_id = \(practitioner!) AND b.during && tstzrange(\(start), \(end)))
                    """, logger: self.logger).decode((Bool, Bool).self) {
                    guard inHours else {
                        throw RPCError(.failedPrecondition, "this time is outside the practitioner's hours",
                                       details: [RPCError.detail(reason: "OUTSIDE_HOURS", domain: "dispatch")])
                    }
                    guard !blocked else {
                        throw RPCError(.failedPrecondition, "the practitioner is not available at this time",
                                       details: [RPCError.detail(reason: "BLOCKED", domain: "dispatch")])
                    }
                }
                guard let record = try await self.appointments(c, """
                    INSERT INTO appointments (practitioner_id, patient_id, patient_account_id, during, reason, booked_by)
                    VALUES (\(practitioner!), \(patient), \(account), tstzrange(\(start), \(end)), \(r.reason), \(actor.id)) RETURNING *
                    """).first else { throw RPCError(.internal, "the insert returned no row") }
                try await self.audit(c, actor, "CREATE", [record])
                var e = Caremesh_Dispatch_V1_AppointmentBooked()
                e.appointmentID = record.appointment.id
                e.practitionerID = record.appointment.practitionerID
                e.patientID = record.appointment.patientID
                e.patientAccountID = record.appointment.patientAccountID
                e.start = record.appointment.start
                e.end = record.appointment.end
                e.timeZone = tz
                _ = try await self.outbox.append(e, key: record.appointment.id, on: c)
                var response = Caremesh_Dispatch_V1_BookAppointmentResponse()
                response.appointment = record.appointment
                return response
            }
        } catch {
            if let (state, constraint) = PSQLError.violation(in: error), state == "23P01" {
                let practitionerBusy = constraint == "appointments_practitioner_free"
                throw RPCError(.failedPrecondition, practitionerBusy ? "this time is already booked" : "the patient already has an appointment at this time",
                               details: [RPCError.detail(reason: practitionerBusy ? "SLOT_TAKEN" : "PATIENT_BUSY", domain: "dispatch")])
            }
            throw error
        }
    }

    /// The appointment, locked for the transaction when `forUpdate`, and what the actor is to
    /// it. One the actor may not see does not exist for them (`NOT_FOUND`), unless they are
    /// staff who gave no purpose, who are told to give one.
    func locked(_ c: PostgresConnection, _ text: String, _ actor: Actor, forUpdate: Bool) async throws -> (Record, AppointmentRelation) {
        var v = FieldViolations()
        let id = v.uuid(text, "id")
        try v.throwIfAny()
        guard let record = try await appointments(c, "SELECT * FROM appointments WHERE id = \(id!) \(unescaped: forUpdate ? "FOR UPDATE" : "")").first else {
            if actor.staff, actor.purpose == nil { throw Actor.purposeNeeded }
            throw RPCError(.notFound, "no appointment with this id")
        }
        let relation = actor.relation(to: record)
        guard !relation.isEmpty else { throw RPCError(.notFound, "no appointment with this id") }
        return (record, relation)
    }

    func get(_ r: Caremesh_Dispatch_V1_GetAppointmentRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_GetAppointmentResponse {
        let actor = try Actor(context, purpose: r.purpose)
        var response = Caremesh_Dispatch_V1_GetAppointmentResponse()
        response.appointment = try await withPHI(actor) { c in
            let (record, _) = try await self.locked(c, r.id, actor, forUpdate: false)
            try await self.audit(c, actor, "READ", [record])
            return record.appointment
        }
        return response
    }

    func confirm(_ r: Caremesh_Dispatch_V1_ConfirmAppointmentRequest, _ context: RPCContext) async throws
        -> Caremesh_Dispatch_V1_ConfirmAppointmentResponse
    {
        var response = Caremesh_Dispatch_V1_ConfirmAppointmentResponse()
        response.appointment = try await move(r.id, .confirm, try Actor(context, purpose: r.purpose))
        return response
    }

    func cancel(_ r: Caremesh_Dispatch_V1_CancelAppointmentRequest, _ context: RPCContext) async throws
        -> Caremesh_Dispatch_V1_CancelAppointmentResponse
    {
        guard r.reason.count <= 500 else { throw RPCError.invalidArgument(field: "reason", "must be at most 500 characters") }
        var response = Caremesh_Dispatch_V1_CancelAppointmentResponse()
        response.appointment = try await move(r.id, .cancel, try Actor(context, purpose: r.purpose), reason: r.reason)
        return response
    }

    func complete(_ r: Caremesh_Dispatch_V1_CompleteAppointmentRequest, _ context: RPCContext) async throws
        -> Caremesh_Dispatch_V1_CompleteAppointmentResponse
    {
        var response = Caremesh_Dispatch_V1_CompleteAppointmentResponse()
        response.appointment = try await move(r.id, .complete, try Actor(context, purpose: r.purpose))
        return response
    }

    /// Confirm, cancel, complete: the lifecycle decides, one UPDATE applies it (audited as an
    /// UPDATE; a repeat that changes nothing as a READ).
    private func move(_ id: String, _ action: AppointmentAction, _ actor: Actor, reason: String = "") async throws
        -> Caremesh_Dispatch_V1_Appointment
    {
        try await withPHI(actor) { c in
            let (record, relation) = try await self.locked(c, id, actor, forUpdate: true)
            guard let to = try AppointmentLifecycle.apply(action, to: record.state, by: relation, startsAt: record.start, now: Date()) else {
                try await self.audit(c, actor, "READ", [record])
                return record.appointment
            }
            let cancelled = to == .cancelled
            guard let updated = try await self.appointments(c, """
                UPDATE appointments SET status = \(to.rawValue),
                    confirmed_at = CASE WHEN \(to == .confirmed) THEN now() ELSE confirmed_at END,
                    completed_at = CASE WHEN \(to == .completed) THEN now() ELSE completed_at END,
                    cancelled_at = CASE WHEN \(cancelled) THEN now() ELSE cancelled_at END,
                    cancel_reason = CASE WHEN \(cancelled) THEN \(reason) ELSE cancel_reason END,
                    cancelled_by = CASE WHEN \(cancelled) THEN \(actor.id) ELSE cancelled_by END
                WHERE id = \(record.id) RETURNING *
                """).first else { throw RPCError(.internal, "the appointment vanished") }
            try await self.audit(c, actor, "UPDATE", [updated])
            if to == .cancelled {
                var e = Caremesh_Dispatch_V1_AppointmentCancelled()
                e.appointmentID = updated.appointment.id
                e.practitionerID = updated.appointment.practitionerID
                e.patientID = updated.appointment.patientID
                e.patientAccountID = updated.appointment.patientAccountID
                e.start = updated.appointment.start
                e.actorID = actor.id.text
                _ = try await self.outbox.append(e, key: updated.appointment.id, on: c)
            } else if to == .completed {
                var e = Caremesh_Dispatch_V1_AppointmentCompleted()
                e.appointmentID = updated.appointment.id
                e.practitionerID = updated.appointment.practitionerID
                e.patientID = updated.appointment.patientID
                e.patientAccountID = updated.appointment.patientAccountID
                e.start = updated.appointment.start
                _ = try await self.outbox.append(e, key: updated.appointment.id, on: c)
            }
            return updated.appointment
        }
    }

    /// The caller's own (as patient and as practitioner); staff with a purpose, anyone's.
    /// Audited as one LIST entry and a READ of each appointment returned.
    func list(_ r: Caremesh_Dispatch_V1_ListAppointmentsRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_ListAppointmentsResponse {
        let actor = try Actor(context, purpose: r.purpose)
        var v = FieldViolations()
        let practitioner = v.optionalUUID(r.practitionerID, "practitioner_id")
        let patient = v.optionalUUID(r.patientID, "patient_id")
        let from = r.hasFrom ? r.from : Google_Protobuf_Timestamp(date: Date())
        let to = r.hasTo ? r.to : Google_Protobuf_Timestamp(date: from.date.addingTimeInterval(Self.longestSearch))
        let span = Self.range(from, to, names: ("from", "to"), longest: Self.longestList, into: &v)
        let statuses = r.statuses.map { AppointmentState(proto: $0) }
        v.check(!statuses.contains(nil), "statuses", "must be PENDING, CONFIRMED, CANCELLED or COMPLETED")
        let limit = v.limit(r.limit, default: 200)
        try v.throwIfAny()
        // Naming someone else is for staff, who then say why.
        let others = (patient != nil && patient != actor.id) || (actor.staff && practitioner != nil && practitioner != actor.id)
        if others {
            guard actor.staff else { throw RPCError(.permissionDenied, "only staff list another patient's appointments") }
            guard actor.purpose != nil else { throw Actor.purposeNeeded }
        }
        let (start, end) = span!
        let mine: UUID? = actor.actsForOthers ? nil : actor.id
        let wanted = statuses.compactMap { $0?.rawValue }
        return try await withPHI(actor) { c in
            let found = try await self.appointments(c, """
                SELECT * FROM appointments
                WHERE lower(during) >= \(start) AND lower(during) < \(end)
                  AND (\(practitioner)::uuid IS NULL OR practitioner_id = \(practitioner))
                  AND (\(patient)::uuid IS NULL OR patient_id = \(patient) OR patient_account_id = \(patient))
                  AND (\(mine)::uuid IS NULL OR practitioner_id = \(mine) OR patient_account_id = \(mine))
                  AND (cardinality(\(wanted)::text[]) = 0 OR status = ANY(\(wanted)::text[]))
                ORDER BY lower(during), id LIMIT \(limit)
                """, order: "ORDER BY lower(a.during), a.id")
            try await self.auditList(c, actor, found: found.count)
            try await self.audit(c, actor, "READ", found)
            var response = Caremesh_Dispatch_V1_ListAppointmentsResponse()
            response.appointments = found.map(\.appointment)
            return response
        }
    }
}

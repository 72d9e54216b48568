import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// Appointments (seed 003): practitioners' weekly hours in their time zone, blocked times,
/// free-slot search, and bookings that the database keeps from overlapping
/// (`appointments_practitioner_free`, `appointments_patient_free`).
struct Appointments: Sendable {
    let store: Store
    let outbox: Outbox
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

    static func relation(_ a: Record, _ caller: Caller) -> AppointmentRelation {
        var r: AppointmentRelation = []
        if caller.hasAny(of: Responders.staff) { r.insert(.staff) }
        if caller.userID == a.patient { r.insert(.patient) }
        if caller.userID == a.practitioner { r.insert(.practitioner) }
        return r
    }

    /// Serializes a practitioner's bookings against changes to their hours and blocked times
    /// (overlapping bookings are refused by the exclusion constraints, not by this lock).
    func lock(_ c: PostgresConnection, _ practitioner: UUID) async throws {
        try await c.lockForTransaction("dispatch.practitioner.\(practitioner)", logger: logger)
    }

    // MARK: - Schedules

    static let scheduleColumns = """
        s.practitioner_id, s.time_zone, s.slot_minutes, extract(epoch FROM s.updated_at)::float8,
        ARRAY(SELECT a.weekday::int4 FROM availability a WHERE a.practitioner_id = s.practitioner_id ORDER BY a.weekday, a.start_time),
        ARRAY(SELECT (extract(epoch FROM a.start_time) / 60)::int4 FROM availability a
              WHERE a.practitioner_id = s.practitioner_id ORDER BY a.weekday, a.start_time),
        ARRAY(SELECT (extract(epoch FROM a.end_time) / 60)::int4 FROM availability a
              WHERE a.practitioner_id = s.practitioner_id ORDER BY a.weekday, a.start_time)
        """

    func schedule(_ c: PostgresConnection, _ practitioner: UUID) async throws -> Caremesh_Dispatch_V1_Schedule? {
        let rows = try await c.query("""
            SELECT \(unescaped: Self.scheduleColumns) FROM practitioner_schedules s WHERE s.practitioner_id = \(practitioner)
            """, logger: logger)
        for try await (id, zone, slot, updated, days, starts, ends) in rows.decode((UUID, String, Int32, Double, [Int32], [Int32], [Int32]).self) {
            var s = Caremesh_Dispatch_V1_Schedule()
            s.practitionerID = id.uuidString.lowercased()
            s.timeZone = zone
            s.slotMinutes = UInt32(slot)
            s.updatedAt = Google_Protobuf_Timestamp(epochSeconds: updated)
            s.windows = zip(days, zip(starts, ends)).map { day, times in
                var w = Caremesh_Dispatch_V1_AvailabilityWindow()
                w.weekday = Caremesh_Dispatch_V1_Weekday(rawValue: Int(day)) ?? .unspecified
                w.start = WeeklyHours.text(Int(times.0))
                w.end = WeeklyHours.text(Int(times.1))
                return w
            }
            return s
        }
        return nil
    }

    /// The practitioner's time zone and slot length (`NOT_FOUND` without a schedule): what booking, blocking
    /// and the slot search need, without the windows.
    func settings(_ c: PostgresConnection, _ practitioner: UUID) async throws -> (timeZone: String, slotMinutes: Int) {
        let rows = try await c.query("""
            SELECT time_zone, slot_minutes FROM practitioner_schedules WHERE practitioner_id = \(practitioner)
            """, logger: logger)
        for try await (zone, slot) in rows.decode((String, Int32).self) { return (zone, Int(slot)) }
        throw RPCError(.notFound, "this practitioner has no schedule")
    }

    func setSchedule(_ r: Caremesh_Dispatch_V1_SetScheduleRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_SetScheduleResponse {
        let practitioner = try Self.practitioner(r.practitionerID, context)
        var v = FieldViolations()
        let slot = r.slotMinutes == 0 ? 30 : Int(r.slotMinutes)
        v.check((5...480).contains(slot), "slot_minutes", "must be from 5 to 480 (0 for 30)")
        v.check(!r.timeZone.isEmpty && r.timeZone.count <= 64, "time_zone", "must be an IANA time zone such as Europe/Paris")
        let windows = WeeklyHours.validate(r.windows, into: &v)
        try v.throwIfAny()
        return try await store.withTransaction { c in
            let known = try await c.query("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = \(r.timeZone))", logger: self.logger)
                .first(Bool.self) ?? false
            guard known else { throw RPCError.invalidArgument(field: "time_zone", "is not a time zone PostgreSQL knows (IANA names, e.g. Europe/Paris)") }
            try await self.lock(c, practitioner)
            try await c.query("""
                INSERT INTO practitioner_schedules (practitioner_id, time_zone, slot_minutes) VALUES (\(practitioner), \(r.timeZone), \(Int32(slot)))
                ON CONFLICT (practitioner_id) DO UPDATE SET time_zone = excluded.time_zone, slot_minutes = excluded.slot_minutes
                """, logger: self.logger)
            try await c.query("DELETE FROM availability WHERE practitioner_id = \(practitioner)", logger: self.logger)
            try await c.query("""
                INSERT INTO availability (practitioner_id, weekday, start_time, end_time)
                SELECT \(practitioner), d, time '00:00' + make_interval(mins => s),
                       -- time + interval wraps at midnight: "24:00" is written as itself.
                       CASE WHEN e = 1440 THEN time '24:00' ELSE time '00:00' + make_interval(mins => e) END
                FROM unnest(\(windows.map { Int32($0.weekday) })::int4[], \(windows.map { Int32($0.start) })::int4[],
                            \(windows.map { Int32($0.end) })::int4[]) AS w(d, s, e)
                """, logger: self.logger)
            var response = Caremesh_Dispatch_V1_SetScheduleResponse()
            response.schedule = try await self.schedule(c, practitioner) ?? .init()
            return response
        }
    }

    func getSchedule(_ r: Caremesh_Dispatch_V1_GetScheduleRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_GetScheduleResponse {
        let caller = try context.requireCaller()
        var v = FieldViolations()
        let practitioner = r.practitionerID.isEmpty ? try caller.requireUserID() : v.uuid(r.practitionerID, "practitioner_id")
        try v.throwIfAny()
        return try await store.withConnection { c in
            guard let schedule = try await self.schedule(c, practitioner!) else {
                throw RPCError(.notFound, "this practitioner has no schedule")
            }
            var response = Caremesh_Dispatch_V1_GetScheduleResponse()
            response.schedule = schedule
            if practitioner == caller.userID || caller.hasAny(of: Responders.staff) {
                response.blocked = try await self.blocked(c, practitioner!)
            }
            return response
        }
    }

    // MARK: - Blocked times

    static let blockedColumns = """
        id, practitioner_id, extract(epoch FROM lower(during))::float8, extract(epoch FROM upper(during))::float8, reason
        """

    static func blockedTime(_ row: PostgresRow) throws -> Caremesh_Dispatch_V1_BlockedTime {
        let (id, practitioner, start, end, reason) = try row.decode((UUID, UUID, Double, Double, String).self)
        var b = Caremesh_Dispatch_V1_BlockedTime()
        b.id = id.uuidString.lowercased()
        b.practitionerID = practitioner.uuidString.lowercased()
        b.start = Google_Protobuf_Timestamp(epochSeconds: start)
        b.end = Google_Protobuf_Timestamp(epochSeconds: end)
        b.reason = reason
        return b
    }

    func blocked(_ c: PostgresConnection, _ practitioner: UUID) async throws -> [Caremesh_Dispatch_V1_BlockedTime] {
        var out: [Caremesh_Dispatch_V1_BlockedTime] = []
        for try await row in try await c.query("""
            SELECT \(unescaped: Self.blockedColumns) FROM blocked_times
            WHERE practitioner_id = \(practitioner) AND upper(during) > now() ORDER BY lower(during) LIMIT 1000
            """, logger: logger) { out.append(try Self.blockedTime(row)) }
        return out
    }

    /// [start, end) of two request timestamps, or violations naming them.
    static func range(_ start: Google_Protobuf_Timestamp?, _ end: Google_Protobuf_Timestamp?, names: (String, String),
                      longest: TimeInterval, into v: inout FieldViolations) -> (Date, Date)? {
        v.check(start != nil, names.0, "is required")
        v.check(end != nil, names.1, "is required")
        guard let s = start?.date, let e = end?.date else { return nil }
        guard e > s else {
            v.add(names.1, "must be after \(names.0)")
            return nil
        }
        guard e.timeIntervalSince(s) <= longest else {
            v.add(names.1, "must be at most \(Int(longest / 86_400)) days after \(names.0)")
            return nil
        }
        return (s, e)
    }

    func addBlockedTime(_ r: Caremesh_Dispatch_V1_AddBlockedTimeRequest, _ context: RPCContext) async throws
        -> Caremesh_Dispatch_V1_AddBlockedTimeResponse
    {
        let caller = try context.requireCaller()
        let practitioner = try Self.practitioner(r.practitionerID, context)
        var v = FieldViolations()
        let span = Self.range(r.hasStart ? r.start : nil, r.hasEnd ? r.end : nil, names: ("start", "end"), longest: Self.longestBlock, into: &v)
        v.check(r.reason.count <= 200, "reason", "must be at most 200 characters")
        try v.throwIfAny()
        let (start, end) = span!
        return try await store.withTransaction { c in
            try await self.lock(c, practitioner)
            _ = try await self.settings(c, practitioner)
            let booked = try await c.query("""
                SELECT count(*) FROM appointments WHERE practitioner_id = \(practitioner) AND status IN ('PENDING', 'CONFIRMED')
                  AND during && tstzrange(\(start), \(end))
                """, logger: self.logger).first(Int64.self) ?? 0
            guard booked == 0 else {
                throw RPCError(.failedPrecondition, "\(booked) appointment(s) fall in this time: cancel or move them first",
                               details: [RPCError.detail(reason: "APPOINTMENTS_IN_THE_WAY", domain: "dispatch")])
            }
            var response = Caremesh_Dispatch_V1_AddBlockedTimeResponse()
            for try await row in try await c.query("""
                INSERT INTO blocked_times (practitioner_id, during, reason, created_by)
                VALUES (\(practitioner), tstzrange(\(start), \(end)), \(r.reason), \(try caller.requireUserID()))
                RETURNING \(unescaped: Self.blockedColumns)
                """, logger: self.logger) { response.blocked = try Self.blockedTime(row) }
            return response
        }
    }

    func removeBlockedTime(_ r: Caremesh_Dispatch_V1_RemoveBlockedTimeRequest, _ context: RPCContext) async throws
        -> Caremesh_Dispatch_V1_RemoveBlockedTimeResponse
    {
        let caller = try context.requireCaller()
        var v = FieldViolations()
        let id = v.uuid(r.id, "id")
        try v.throwIfAny()
        return try await store.withTransaction { c in
            guard let owner = try await c.query("SELECT practitioner_id FROM blocked_times WHERE id = \(id!) FOR UPDATE", logger: self.logger)
                .first(UUID.self) else { throw RPCError(.notFound, "no blocked time with this id") }
            guard owner == caller.userID || caller.hasAny(of: Responders.staff) else {
                throw RPCError(.permissionDenied, "only the practitioner and staff remove blocked times")
            }
            try await c.query("DELETE FROM blocked_times WHERE id = \(id!)", logger: self.logger)
            return .init()
        }
    }

    // MARK: - Free slots

    func findFreeSlots(_ r: Caremesh_Dispatch_V1_FindFreeSlotsRequest, _ context: RPCContext) async throws
        -> Caremesh_Dispatch_V1_FindFreeSlotsResponse
    {
        _ = try context.requireCaller()
        var v = FieldViolations()
        let practitioner = v.uuid(r.practitionerID, "practitioner_id")
        let span = Self.range(r.hasFrom ? r.from : nil, r.hasTo ? r.to : nil, names: ("from", "to"), longest: Self.longestSearch, into: &v)
        let limit = v.limit(r.limit, default: 100)
        try v.throwIfAny()
        let (from, to) = span!
        return try await store.withConnection { c in
            let (timeZone, slot) = try await self.settings(c, practitioner!)
            // Each local day's windows become instants in the practitioner's zone (so a DST
            // change moves them in UTC, not on the wall clock), cut into slots, minus what is
            // past, blocked or booked.
            let rows = try await c.query("""
                WITH s AS (SELECT \(timeZone)::text AS tz, make_interval(mins => \(slot)::int4) AS step),
                days AS (SELECT d::date AS day FROM s,
                         generate_series(((\(from)::timestamptz AT TIME ZONE s.tz)::date - 1)::timestamp,
                                         (\(to)::timestamptz AT TIME ZONE s.tz)::date::timestamp, interval '1 day') d),
                windows AS (SELECT (days.day + a.start_time) AT TIME ZONE s.tz AS ws,
                                   (days.day + a.end_time) AT TIME ZONE s.tz AS we, s.step
                            FROM s, days JOIN availability a
                              ON a.practitioner_id = \(practitioner!) AND a.weekday = extract(isodow FROM days.day)),
                slots AS (SELECT t AS start, t + w.step AS stop FROM windows w, generate_series(w.ws, w.we - w.step, w.step) t)
                SELECT extract(epoch FROM start)::float8, extract(epoch FROM stop)::float8 FROM slots
                WHERE start >= greatest(\(from)::timestamptz, now()) AND stop <= \(to)::timestamptz
                  AND NOT EXISTS (SELECT 1 FROM blocked_times b
                                  WHERE b.practitioner_id = \(practitioner!) AND b.during && tstzrange(slots.start, slots.stop))
                  AND NOT EXISTS (SELECT 1 FROM appointments x
                                  WHERE x.practitioner_id = \(practitioner!) AND x.status IN ('PENDING', 'CONFIRMED')
                                    AND x.during && tstzrange(slots.start, slots.stop))
                ORDER BY start LIMIT \(limit)
                """, logger: self.logger)
            var response = Caremesh_Dispatch_V1_FindFreeSlotsResponse()
            response.timeZone = timeZone
            for try await (start, stop) in rows.decode((Double, Double).self) {
                var slot = Caremesh_Dispatch_V1_Slot()
                slot.start = Google_Protobuf_Timestamp(epochSeconds: start)
                slot.end = Google_Protobuf_Timestamp(epochSeconds: stop)
                response.slots.append(slot)
            }
            return response
        }
    }

    // MARK: - Appointments

    struct Record: Sendable {
        var appointment: Caremesh_Dispatch_V1_Appointment
        var id: UUID
        var practitioner: UUID
        var patient: UUID
        var state: AppointmentState
        var start: Date
    }

    /// Over `a` (appointments) joined with `s` (the practitioner's schedule).
    static let columns = """
        a.id, a.practitioner_id, a.patient_id, extract(epoch FROM lower(a.during))::float8, extract(epoch FROM upper(a.during))::float8,
        a.status, a.reason, a.booked_by, s.time_zone, a.cancel_reason, extract(epoch FROM a.created_at)::float8,
        extract(epoch FROM a.confirmed_at)::float8, extract(epoch FROM a.cancelled_at)::float8, extract(epoch FROM a.completed_at)::float8
        """

    static func record(_ row: PostgresRow) throws -> Record {
        let r = row.makeRandomAccess()
        var a = Caremesh_Dispatch_V1_Appointment()
        let id = try r[0].decode(UUID.self), practitioner = try r[1].decode(UUID.self), patient = try r[2].decode(UUID.self)
        a.id = id.uuidString.lowercased()
        a.practitionerID = practitioner.uuidString.lowercased()
        a.patientID = patient.uuidString.lowercased()
        let start = try r[3].decode(Double.self)
        a.start = Google_Protobuf_Timestamp(epochSeconds: start)
        a.end = Google_Protobuf_Timestamp(epochSeconds: try r[4].decode(Double.self))
        let state = AppointmentState(rawValue: try r[5].decode(String.self)) ?? .pending
        a.status = state.proto
        a.reason = try r[6].decode(String.self)
        a.bookedBy = try r[7].decode(UUID.self).uuidString.lowercased()
        a.timeZone = try r[8].decode(String.self)
        a.cancelReason = try r[9].decode(String.self)
        a.createdAt = Google_Protobuf_Timestamp(epochSeconds: try r[10].decode(Double.self))
        if let t = try r[11].decode(Double?.self) { a.confirmedAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        if let t = try r[12].decode(Double?.self) { a.cancelledAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        if let t = try r[13].decode(Double?.self) { a.completedAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        return Record(appointment: a, id: id, practitioner: practitioner, patient: patient, state: state,
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

    func book(_ r: Caremesh_Dispatch_V1_BookAppointmentRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_BookAppointmentResponse {
        let caller = try context.requireCaller()
        let me = try caller.requireUserID()
        var v = FieldViolations()
        let practitioner = v.uuid(r.practitionerID, "practitioner_id")
        let patient = r.patientID.isEmpty ? me : v.uuid(r.patientID, "patient_id")
        v.check(r.hasStart, "start", "is required")
        v.check(!r.hasStart || r.start.date > Date(), "start", "must be in the future")
        v.check(r.durationMinutes <= 480, "duration_minutes", "must be at most 480 (0 for the practitioner's slot)")
        v.check(r.reason.count <= 500, "reason", "must be at most 500 characters")
        v.check(patient == nil || patient != practitioner, "patient_id", "cannot be the practitioner")
        try v.throwIfAny()
        guard patient == me || caller.hasAny(of: Responders.staff) else {
            throw RPCError(.permissionDenied, "only staff book for someone else")
        }
        let start = r.start.date
        do {
            return try await store.withTransaction { c in
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
                    INSERT INTO appointments (practitioner_id, patient_id, during, reason, booked_by)
                    VALUES (\(practitioner!), \(patient!), tstzrange(\(start), \(end)), \(r.reason), \(me)) RETURNING *
                    """).first else { throw RPCError(.internal, "the insert returned no row") }
                var e = Caremesh_Dispatch_V1_AppointmentBooked()
                e.appointmentID = record.appointment.id
                e.practitionerID = record.appointment.practitionerID
                e.patientID = record.appointment.patientID
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
                let whose = constraint == "appointments_patient_free" ? "the patient already has an appointment at this time"
                    : "this time is already booked"
                throw RPCError(.failedPrecondition, whose,
                               details: [RPCError.detail(reason: constraint == "appointments_patient_free" ? "PATIENT_BUSY" : "SLOT_TAKEN",
                                                         domain: "dispatch")])
            }
            throw error
        }
    }

    /// The appointment, locked for the transaction, and what the caller is to it (a stranger
    /// is refused; an unknown id is NOT_FOUND).
    func locked(_ c: PostgresConnection, _ text: String, _ caller: Caller, forUpdate: Bool) async throws -> (Record, AppointmentRelation) {
        var v = FieldViolations()
        let id = v.uuid(text, "id")
        try v.throwIfAny()
        guard let record = try await appointments(c, "SELECT * FROM appointments WHERE id = \(id!) \(unescaped: forUpdate ? "FOR UPDATE" : "")").first else {
            throw RPCError(.notFound, "no appointment with this id")
        }
        let relation = Self.relation(record, caller)
        guard !relation.isEmpty else { throw RPCError(.permissionDenied, "only the patient, the practitioner and staff see this appointment") }
        return (record, relation)
    }

    func get(_ r: Caremesh_Dispatch_V1_GetAppointmentRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_GetAppointmentResponse {
        let caller = try context.requireCaller()
        var response = Caremesh_Dispatch_V1_GetAppointmentResponse()
        response.appointment = try await store.withConnection { c in try await self.locked(c, r.id, caller, forUpdate: false).0.appointment }
        return response
    }

    func confirm(_ r: Caremesh_Dispatch_V1_ConfirmAppointmentRequest, _ context: RPCContext) async throws
        -> Caremesh_Dispatch_V1_ConfirmAppointmentResponse
    {
        var response = Caremesh_Dispatch_V1_ConfirmAppointmentResponse()
        response.appointment = try await move(r.id, .confirm, context)
        return response
    }

    func cancel(_ r: Caremesh_Dispatch_V1_CancelAppointmentRequest, _ context: RPCContext) async throws
        -> Caremesh_Dispatch_V1_CancelAppointmentResponse
    {
        guard r.reason.count <= 500 else { throw RPCError.invalidArgument(field: "reason", "must be at most 500 characters") }
        var response = Caremesh_Dispatch_V1_CancelAppointmentResponse()
        response.appointment = try await move(r.id, .cancel, context, reason: r.reason)
        return response
    }

    func complete(_ r: Caremesh_Dispatch_V1_CompleteAppointmentRequest, _ context: RPCContext) async throws
        -> Caremesh_Dispatch_V1_CompleteAppointmentResponse
    {
        var response = Caremesh_Dispatch_V1_CompleteAppointmentResponse()
        response.appointment = try await move(r.id, .complete, context)
        return response
    }

    /// Confirm, cancel, complete: the lifecycle decides, one UPDATE applies it.
    private func move(_ id: String, _ action: AppointmentAction, _ context: RPCContext, reason: String = "") async throws
        -> Caremesh_Dispatch_V1_Appointment
    {
        let caller = try context.requireCaller()
        let me = try caller.requireUserID()
        return try await store.withTransaction { c in
            let (record, relation) = try await self.locked(c, id, caller, forUpdate: true)
            guard let to = try AppointmentLifecycle.apply(action, to: record.state, by: relation, startsAt: record.start, now: Date()) else {
                return record.appointment
            }
            let cancelled = to == .cancelled
            guard let updated = try await self.appointments(c, """
                UPDATE appointments SET status = \(to.rawValue),
                    confirmed_at = CASE WHEN \(to == .confirmed) THEN now() ELSE confirmed_at END,
                    completed_at = CASE WHEN \(to == .completed) THEN now() ELSE completed_at END,
                    cancelled_at = CASE WHEN \(cancelled) THEN now() ELSE cancelled_at END,
                    cancel_reason = CASE WHEN \(cancelled) THEN \(reason) ELSE cancel_reason END,
                    cancelled_by = CASE WHEN \(cancelled) THEN \(me) ELSE cancelled_by END
                WHERE id = \(record.id) RETURNING *
                """).first else { throw RPCError(.internal, "the appointment vanished") }
            if to == .cancelled {
                var e = Caremesh_Dispatch_V1_AppointmentCancelled()
                e.appointmentID = updated.appointment.id
                e.practitionerID = updated.appointment.practitionerID
                e.patientID = updated.appointment.patientID
                e.start = updated.appointment.start
                e.actorID = me.uuidString.lowercased()
                _ = try await self.outbox.append(e, key: updated.appointment.id, on: c)
            } else if to == .completed {
                var e = Caremesh_Dispatch_V1_AppointmentCompleted()
                e.appointmentID = updated.appointment.id
                e.practitionerID = updated.appointment.practitionerID
                e.patientID = updated.appointment.patientID
                e.start = updated.appointment.start
                _ = try await self.outbox.append(e, key: updated.appointment.id, on: c)
            }
            return updated.appointment
        }
    }

    func list(_ r: Caremesh_Dispatch_V1_ListAppointmentsRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_ListAppointmentsResponse {
        let caller = try context.requireCaller()
        let me = try caller.requireUserID()
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
        let staff = caller.hasAny(of: Responders.staff)
        // Others see only their own (as patient or practitioner); filters narrow that.
        guard staff || patient == nil || patient == me else {
            throw RPCError(.permissionDenied, "only staff list another patient's appointments")
        }
        let (start, end) = span!
        let mine: UUID? = staff ? nil : me
        let wanted = statuses.compactMap { $0?.rawValue }
        return try await store.withConnection { c in
            var response = Caremesh_Dispatch_V1_ListAppointmentsResponse()
            response.appointments = try await self.appointments(c, """
                SELECT * FROM appointments
                WHERE lower(during) >= \(start) AND lower(during) < \(end)
                  AND (\(practitioner)::uuid IS NULL OR practitioner_id = \(practitioner))
                  AND (\(patient)::uuid IS NULL OR patient_id = \(patient))
                  AND (\(mine)::uuid IS NULL OR practitioner_id = \(mine) OR patient_id = \(mine))
                  AND (cardinality(\(wanted)::text[]) = 0 OR status = ANY(\(wanted)::text[]))
                ORDER BY lower(during), id LIMIT \(limit)
                """, order: "ORDER BY lower(a.during), a.id").map(\.appointment)
            return response
        }
    }
}

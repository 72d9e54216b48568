import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// Practitioners' weekly hours in their time zone, blocked times, and the free-slot search.
/// Bookings are seen here only as `booked_times` (ids and times, no PHI), so a search sees every
/// booking without seeing anyone's appointment.
extension Appointments {
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
                SELECT count(*) FROM booked_times WHERE practitioner_id = \(practitioner) AND during && tstzrange(\(start), \(end))
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
                  AND NOT EXISTS (SELECT 1 FROM booked_times x
                                  WHERE x.practitioner_id = \(practitioner!) AND x.during && tstzrange(slots.start, slots.stop))
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

}

import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// What EAs and their managers record (seed 002): EAs' work settings, pairings, end-of-day
/// reports, start-of-day logs, PTO and coaching notes. A report or log is evaluated against
/// the rules in the transaction that stores it.
final class StaffRecords: Sendable {
    let store: Store
    let rules: RuleDesk
    let configuration: AlertsConfiguration
    let logger: Logger

    static let managers = RuleDesk.managers
    static let admins = RuleDesk.admins

    static let ptoReasons: [Caremesh_Alerts_V1_PtoReason: String] = [
        .vacation: "vacation", .sick: "sick", .personal: "personal", .publicHoliday: "public_holiday",
        .bereavement: "bereavement", .other: "other",
    ]
    static let noteTypes: [Caremesh_Alerts_V1_CoachingNoteType: String] = [.ea: "ea", .pairing: "pairing", .general: "general"]

    init(store: Store, rules: RuleDesk, configuration: AlertsConfiguration, logger: Logger) {
        self.store = store
        self.rules = rules
        self.configuration = configuration
        self.logger = logger
    }

    // MARK: - Staff settings

    static let settingsColumns = """
        ea_id, to_char(expected_show_up_time, 'HH24:MI'), time_zone, healthcare_eligibility_date::text,
        extract(epoch FROM updated_at)::float8
        """

    static func settings(_ c: PostgresConnection, _ query: PostgresQuery, logger: Logger) async throws -> Caremesh_Alerts_V1_StaffSettings? {
        var out: Caremesh_Alerts_V1_StaffSettings?
        for try await (ea, time, zone, eligibility, updated) in try await c.query(query, logger: logger)
            .decode((UUID, String, String, String?, Double).self) {
            var s = Caremesh_Alerts_V1_StaffSettings()
            s.eaID = ea.text
            s.expectedShowUpTime = time
            s.timeZone = zone
            s.healthcareEligibilityDate = eligibility ?? ""
            s.updatedAt = Google_Protobuf_Timestamp(epochSeconds: updated)
            out = s
        }
        return out
    }

    func putSettings(_ r: Caremesh_Alerts_V1_PutStaffSettingsRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_PutStaffSettingsResponse
    {
        _ = try context.requireRole(Self.admins)
        let s = r.settings
        var v = FieldViolations()
        let ea = v.uuid(s.eaID, "settings.ea_id")
        let time = LocalTime(s.expectedShowUpTime)
        v.check(time != nil, "settings.expected_show_up_time", "must be HH:MM (24-hour), e.g. 09:00")
        let zone = s.timeZone.isEmpty ? nil : TimeZone(identifier: s.timeZone)
        v.check(zone != nil && s.timeZone.contains("/") || s.timeZone == "UTC", "settings.time_zone",
                "must be an IANA time zone, e.g. Europe/Paris")
        let eligibility = v.optionalDate(s.healthcareEligibilityDate, "settings.healthcare_eligibility_date")
        try v.throwIfAny()
        var response = Caremesh_Alerts_V1_PutStaffSettingsResponse()
        response.settings = try await store.withTransaction { c in
            guard let saved = try await Self.settings(c, """
                INSERT INTO staff_settings (ea_id, expected_show_up_time, time_zone, healthcare_eligibility_date)
                VALUES (\(ea!), \(time!.description)::time, \(s.timeZone), \(eligibility?.description)::date)
                ON CONFLICT (ea_id) DO UPDATE SET expected_show_up_time = EXCLUDED.expected_show_up_time,
                    time_zone = EXCLUDED.time_zone, healthcare_eligibility_date = EXCLUDED.healthcare_eligibility_date
                RETURNING \(unescaped: Self.settingsColumns)
                """, logger: self.logger) else { throw RPCError(.internal, "the upsert returned no row") }
            try await RuleDesk.armDaily(ea!, zone: zone!, at: self.configuration.dailyEvaluationAt, after: Date(), c, logger: self.logger)
            return saved
        }
        return response
    }

    func getSettings(_ r: Caremesh_Alerts_V1_GetStaffSettingsRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_GetStaffSettingsResponse
    {
        let ea = try context.requireSelf(r.eaID, field: "ea_id", orRole: Self.managers)
        guard let found = try await store.withConnection({ c in
            try await Self.settings(c, "SELECT \(unescaped: Self.settingsColumns) FROM staff_settings WHERE ea_id = \(ea)",
                                    logger: self.logger)
        }) else { throw RPCError(.notFound, "this EA has no settings") }
        var response = Caremesh_Alerts_V1_GetStaffSettingsResponse()
        response.settings = found
        return response
    }

    // MARK: - Pairings

    static let pairingColumns = """
        id, ea_id, client_id, start_date::text, health_status, health_status_override,
        extract(epoch FROM created_at)::float8, extract(epoch FROM updated_at)::float8, \(Page.micros("created_at"))
        """

    static func pairings(_ c: PostgresConnection, _ query: PostgresQuery, logger: Logger) async throws
        -> [(row: Caremesh_Alerts_V1_Pairing, micros: Int64, id: UUID)]
    {
        var out: [(row: Caremesh_Alerts_V1_Pairing, micros: Int64, id: UUID)] = []
        for try await (id, ea, client, start, health, override, created, updated, micros) in try await c.query(query, logger: logger)
            .decode((UUID, UUID, UUID, String, String, Bool, Double, Double, Int64).self) {
            var p = Caremesh_Alerts_V1_Pairing()
            p.id = id.text
            p.eaID = ea.text
            p.clientID = client.text
            p.startDate = start
            p.healthStatus = PairingHealthLevel(rawValue: health)?.proto ?? .unspecified
            p.healthStatusOverride = override
            p.createdAt = Google_Protobuf_Timestamp(epochSeconds: created)
            p.updatedAt = Google_Protobuf_Timestamp(epochSeconds: updated)
            out.append((p, micros, id))
        }
        return out
    }

    func createPairing(_ r: Caremesh_Alerts_V1_CreatePairingRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_CreatePairingResponse
    {
        _ = try context.requireRole(Self.admins)
        var v = FieldViolations()
        let ea = v.uuid(r.eaID, "ea_id")
        let client = v.uuid(r.clientID, "client_id")
        let start = v.date(r.startDate, "start_date")
        try v.throwIfAny()
        do {
            var response = Caremesh_Alerts_V1_CreatePairingResponse()
            response.pairing = try await store.withTransaction { c in
                guard try await c.query("SELECT 1 FROM staff_settings WHERE ea_id = \(ea!)", logger: self.logger).hasRows() else {
                    throw RPCError(.failedPrecondition, "ea_id: this EA has no staff settings yet (PutStaffSettings first)")
                }
                guard let created = try await Self.pairings(c, """
                    INSERT INTO pairings (ea_id, client_id, start_date)
                    SELECT \(ea!), client_id, \(start!.description)::date FROM client_zones WHERE client_id = \(client!) AND kind = 'client'
                    RETURNING \(unescaped: Self.pairingColumns)
                    """, logger: self.logger).first else { throw RPCError(.notFound, "client_id: no such client") }
                return created.row
            }
            return response
        } catch {
            if PSQLError.violation(in: error)?.constraint == "pairings_ea_client" {
                throw RPCError(.alreadyExists, "this EA is already paired with this client")
            }
            throw error
        }
    }

    func listPairings(_ r: Caremesh_Alerts_V1_ListPairingsRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_ListPairingsResponse
    {
        let caller = try context.requireCaller()
        let manager = caller.hasAny(of: Self.managers)
        // An EA lists their own; a manager anyone's (or everyone's).
        let ea: UUID? = manager && r.eaID.isEmpty ? nil : try context.requireSelf(r.eaID, field: "ea_id", orRole: Self.managers)
        var v = FieldViolations()
        let client = v.optionalUUID(r.clientID, "client_id")
        let health = r.healthStatus == .unspecified ? nil : PairingHealthLevel(r.healthStatus)
        v.check(r.healthStatus == .unspecified || health != nil, "health_status", "must be GREEN, YELLOW or RED")
        let page = Page(size: r.pageSize, token: r.pageToken, into: &v)
        try v.throwIfAny()
        let healthText = health?.rawValue
        return try await store.withConnection { c in
            let found = try await Self.pairings(c, """
                SELECT \(unescaped: Self.pairingColumns) FROM pairings
                WHERE (\(ea)::uuid IS NULL OR ea_id = \(ea)) AND (\(client)::uuid IS NULL OR client_id = \(client))
                  AND (\(healthText)::text IS NULL OR health_status = \(healthText))
                  AND \(after: page, time: "created_at", id: "id")
                ORDER BY created_at DESC, id DESC LIMIT \(page.limit)
                """, logger: self.logger)
            var response = Caremesh_Alerts_V1_ListPairingsResponse()
            (response.pairings, response.nextPageToken) = page.collect(found)
            return response
        }
    }

    func setHealth(_ r: Caremesh_Alerts_V1_SetPairingHealthRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_SetPairingHealthResponse
    {
        _ = try context.requireRole(Self.managers)
        var v = FieldViolations()
        let id = v.uuid(r.pairingID, "pairing_id")
        let health = r.healthStatus == .unspecified ? nil : PairingHealthLevel(r.healthStatus)
        v.check(r.healthStatus == .unspecified || health != nil, "health_status", "must be GREEN, YELLOW, RED, or UNSPECIFIED to clear")
        try v.throwIfAny()
        var response = Caremesh_Alerts_V1_SetPairingHealthResponse()
        response.pairing = try await store.withTransaction { c in
            let healthText = health?.rawValue
            guard try await c.query("""
                UPDATE pairings SET health_status_override = \(health != nil), health_status = coalesce(\(healthText), health_status)
                WHERE id = \(id!) RETURNING id
                """, logger: self.logger).hasRows() else { throw RPCError(.notFound, "no such pairing") }
            if health == nil { try await RuleDesk.refreshHealth(id!, c, logger: self.logger) }
            guard let p = try await Self.pairings(c, "SELECT \(unescaped: Self.pairingColumns) FROM pairings WHERE id = \(id!)",
                                                  logger: self.logger).first
            else { throw RPCError(.internal, "the pairing vanished") }
            return p.row
        }
        return response
    }

    /// The pairing's EA, start date and time zone, if the caller may act for that EA (the EA
    /// themselves, or `roles`); NOT_FOUND, or PERMISSION_DENIED.
    func pairingFor(_ id: UUID, _ context: RPCContext, orRole roles: Set<String>, _ c: PostgresConnection) async throws
        -> (ea: UUID, start: LocalDate, zone: TimeZone)
    {
        let caller = try context.requireCaller()
        guard let (ea, start, zone) = try await c.query("""
            SELECT p.ea_id, p.start_date::text, s.time_zone FROM pairings p JOIN staff_settings s ON s.ea_id = p.ea_id WHERE p.id = \(id)
            """, logger: logger).decode((UUID, String, String).self).first(where: { _ in true }),
            let startDate = LocalDate(start), let tz = TimeZone(identifier: zone)
        else { throw RPCError(.notFound, "no such pairing") }
        guard caller.userID == ea || caller.hasAny(of: roles) else {
            throw RPCError(.permissionDenied, "only the pairing's EA or one of the roles \(roles.sorted().joined(separator: ", ")) may do this")
        }
        return (ea, startDate, tz)
    }

    // MARK: - End-of-day reports

    static let reportColumns = """
        id, pairing_id, ea_id, report_date::text, hours_worked::float8, tasks_completed, tasks_pending, client_satisfaction::int4,
        ea_wellbeing::int4, needs_support, client_unresponsive, scope_change_requested, highlights, blockers,
        extract(epoch FROM submitted_at)::float8
        """

    static func report(_ row: PostgresRandomAccessRow) throws -> Caremesh_Alerts_V1_EndOfDayReport {
        var e = Caremesh_Alerts_V1_EndOfDayReport()
        e.id = try row[0].decode(UUID.self).text
        e.pairingID = try row[1].decode(UUID.self).text
        e.eaID = try row[2].decode(UUID.self).text
        e.reportDate = try row[3].decode(String.self)
        e.hoursWorked = try row[4].decode(Double.self)
        e.tasksCompleted = UInt32(try row[5].decode(Int32.self))
        e.tasksPending = UInt32(try row[6].decode(Int32.self))
        e.clientSatisfaction = UInt32(try row[7].decode(Int32.self))
        e.eaWellbeing = UInt32(try row[8].decode(Int32.self))
        e.needsSupport = try row[9].decode(Bool.self)
        e.clientUnresponsive = try row[10].decode(Bool.self)
        e.scopeChangeRequested = try row[11].decode(Bool.self)
        e.highlights = try row[12].decode(String.self)
        e.blockers = try row[13].decode(String.self)
        e.submittedAt = Google_Protobuf_Timestamp(epochSeconds: try row[14].decode(Double.self))
        return e
    }

    func submitReport(_ r: Caremesh_Alerts_V1_SubmitEndOfDayReportRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_SubmitEndOfDayReportResponse
    {
        _ = try context.requireCaller()
        let e = r.report
        var v = FieldViolations()
        let pairing = v.uuid(e.pairingID, "report.pairing_id")
        let day = v.date(e.reportDate, "report.report_date")
        v.check(e.hoursWorked.isFinite && (0...24).contains(e.hoursWorked), "report.hours_worked", "must be 0 to 24")
        v.check(e.tasksCompleted <= 1_000, "report.tasks_completed", "must be at most 1 000")
        v.check(e.tasksPending <= 1_000, "report.tasks_pending", "must be at most 1 000")
        v.check((1...5).contains(e.clientSatisfaction), "report.client_satisfaction", "must be 1 to 5")
        v.check((1...5).contains(e.eaWellbeing), "report.ea_wellbeing", "must be 1 to 5")
        v.check(e.highlights.count <= 4_000, "report.highlights", "must be at most 4 000 characters")
        v.check(e.blockers.count <= 4_000, "report.blockers", "must be at most 4 000 characters")
        try v.throwIfAny()
        let hours = (e.hoursWorked * 100).rounded() / 100
        return try await store.withTransaction { c in
            let (ea, start, zone) = try await self.pairingFor(pairing!, context, orRole: Self.admins, c)
            let now = Date()
            let today = LocalDate(now, in: zone)
            guard day! <= today else {
                throw RPCError.invalidArgument(field: "report.report_date", "is after the EA's today (\(today))")
            }
            guard day! >= start else {
                throw RPCError.invalidArgument(field: "report.report_date", "is before the pairing started (\(start))")
            }
            var response = Caremesh_Alerts_V1_SubmitEndOfDayReportResponse()
            for try await row in try await c.query("""
                INSERT INTO end_of_day_reports (pairing_id, ea_id, report_date, hours_worked, tasks_completed, tasks_pending,
                    client_satisfaction, ea_wellbeing, needs_support, client_unresponsive, scope_change_requested, highlights, blockers)
                VALUES (\(pairing!), \(ea), \(day!.description)::date, \(hours), \(Int32(e.tasksCompleted)), \(Int32(e.tasksPending)),
                    \(Int32(e.clientSatisfaction)), \(Int32(e.eaWellbeing)), \(e.needsSupport), \(e.clientUnresponsive),
                    \(e.scopeChangeRequested), \(e.highlights), \(e.blockers))
                ON CONFLICT (pairing_id, report_date) DO UPDATE SET hours_worked = EXCLUDED.hours_worked,
                    tasks_completed = EXCLUDED.tasks_completed, tasks_pending = EXCLUDED.tasks_pending,
                    client_satisfaction = EXCLUDED.client_satisfaction, ea_wellbeing = EXCLUDED.ea_wellbeing,
                    needs_support = EXCLUDED.needs_support, client_unresponsive = EXCLUDED.client_unresponsive,
                    scope_change_requested = EXCLUDED.scope_change_requested, highlights = EXCLUDED.highlights,
                    blockers = EXCLUDED.blockers, submitted_at = now()
                RETURNING \(unescaped: Self.reportColumns), xmax <> 0
                """, logger: self.logger) {
                let a = row.makeRandomAccess()
                response.report = try Self.report(a)
                response.replaced = try a[15].decode(Bool.self)
            }
            response.raised = try await self.rules.evaluate(ea: ea, pairing: .init(id: pairing!, start: start, zone: zone), now: now, on: c)
            return response
        }
    }

    func listReports(_ r: Caremesh_Alerts_V1_ListEndOfDayReportsRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_ListEndOfDayReportsResponse
    {
        var v = FieldViolations()
        let pairing = v.uuid(r.pairingID, "pairing_id")
        let from = v.optionalDate(r.from, "from")
        let through = v.optionalDate(r.through, "through")
        try v.throwIfAny()
        return try await store.withConnection { c in
            let (_, _, zone) = try await self.pairingFor(pairing!, context, orRole: Self.managers, c)
            let last = through ?? LocalDate(Date(), in: zone)
            let first = from ?? last.adding(days: -30)
            var response = Caremesh_Alerts_V1_ListEndOfDayReportsResponse()
            for try await row in try await c.query("""
                SELECT \(unescaped: Self.reportColumns) FROM end_of_day_reports
                WHERE pairing_id = \(pairing!) AND report_date BETWEEN \(first.description)::date AND \(last.description)::date
                ORDER BY report_date DESC LIMIT 400
                """, logger: self.logger) {
                response.reports.append(try Self.report(row.makeRandomAccess()))
            }
            return response
        }
    }

    // MARK: - Start-of-day logs

    static let logColumns = """
        id, ea_id, log_date::text, extract(epoch FROM logged_at)::float8, to_char(expected_show_up_time, 'HH24:MI'),
        was_late, minutes_late
        """

    static func log(_ c: PostgresConnection, _ query: PostgresQuery, logger: Logger) async throws -> Caremesh_Alerts_V1_StartOfDayLog? {
        var out: Caremesh_Alerts_V1_StartOfDayLog?
        for try await (id, ea, date, at, expected, late, minutes) in try await c.query(query, logger: logger)
            .decode((UUID, UUID, String, Double, String, Bool, Int32).self) {
            var l = Caremesh_Alerts_V1_StartOfDayLog()
            l.id = id.text
            l.eaID = ea.text
            l.logDate = date
            l.loggedAt = Google_Protobuf_Timestamp(epochSeconds: at)
            l.expectedShowUpTime = expected
            l.wasLate = late
            l.minutesLate = UInt32(minutes)
            out = l
        }
        return out
    }

    func logStart(_ r: Caremesh_Alerts_V1_LogStartOfDayRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_LogStartOfDayResponse
    {
        let caller = try context.requireCaller()
        let ea = try context.requireSelf(r.eaID, field: "ea_id", orRole: Self.managers)
        let now = Date()
        let loggedAt = r.hasLoggedAt ? r.loggedAt.date : now
        if r.hasLoggedAt {
            guard caller.hasAny(of: Self.managers) else {
                throw RPCError(.permissionDenied, "only admins and coordinators may set logged_at (back-filling a log)")
            }
            var v = FieldViolations()
            v.check(loggedAt <= now.addingTimeInterval(60), "logged_at", "is in the future")
            v.check(loggedAt >= now.addingTimeInterval(-400 * 86_400), "logged_at", "is more than 400 days ago")
            try v.throwIfAny()
        }
        return try await store.withTransaction { c in
            guard let (expectedText, zoneName) = try await c.query("""
                SELECT to_char(expected_show_up_time, 'HH24:MI'), time_zone FROM staff_settings WHERE ea_id = \(ea)
                """, logger: self.logger).decode((String, String).self).first(where: { _ in true }),
                let expected = LocalTime(expectedText), let zone = TimeZone(identifier: zoneName)
            else { throw RPCError(.failedPrecondition, "ea_id: this EA has no staff settings yet") }
            let (day, minutesLate) = Lateness.of(loggedAt: loggedAt, expected: expected, timeZone: zone)
            let minutes = Int32(min(minutesLate, 1_440))
            var response = Caremesh_Alerts_V1_LogStartOfDayResponse()
            if let created = try await Self.log(c, """
                INSERT INTO start_of_day_logs (ea_id, log_date, logged_at, expected_show_up_time, was_late, minutes_late)
                VALUES (\(ea), \(day.description)::date, \(loggedAt), \(expected.description)::time, \(minutes > 0), \(minutes))
                ON CONFLICT (ea_id, log_date) DO NOTHING
                RETURNING \(unescaped: Self.logColumns)
                """, logger: self.logger) {
                response.log = created
                response.created = true
                response.raised = try await self.rules.evaluate(ea: ea, now: now, on: c)
            } else if let first = try await Self.log(c, """
                SELECT \(unescaped: Self.logColumns) FROM start_of_day_logs WHERE ea_id = \(ea) AND log_date = \(day.description)::date
                """, logger: self.logger) {
                response.log = first
            }
            return response
        }
    }

    // MARK: - PTO

    func addPto(_ r: Caremesh_Alerts_V1_AddPtoRequest, _ context: RPCContext) async throws -> Caremesh_Alerts_V1_AddPtoResponse {
        let caller = try context.requireCaller()
        let p = r.pto
        let ea = try context.requireSelf(p.eaID, field: "pto.ea_id", orRole: Self.managers)
        var v = FieldViolations()
        let start = v.date(p.startDate, "pto.start_date")
        let end = v.date(p.endDate, "pto.end_date")
        if let start, let end {
            v.check(end >= start, "pto.end_date", "is before start_date")
            v.check(start.days(to: end) <= 365, "pto.end_date", "is more than 365 days after start_date")
        }
        let reason = Self.ptoReasons[p.reason]
        v.check(reason != nil, "pto.reason", "must be one of \(Self.ptoReasons.keys.map { "\($0)" }.sorted().joined(separator: ", "))")
        try v.throwIfAny()
        let by = try caller.requireUserID()
        do {
            var response = Caremesh_Alerts_V1_AddPtoResponse()
            response.pto = try await store.withTransaction { c in
                guard let saved = try await Self.ptos(c, """
                    INSERT INTO pto_records (ea_id, start_date, end_date, reason, created_by)
                    VALUES (\(ea), \(start!.description)::date, \(end!.description)::date, \(reason!), \(by))
                    RETURNING \(unescaped: Self.ptoColumns)
                    """, logger: self.logger).first else { throw RPCError(.internal, "the insert returned no row") }
                return saved
            }
            return response
        } catch {
            if PSQLError.violation(in: error)?.constraint == "pto_records_ea_id_fkey" {
                throw RPCError(.failedPrecondition, "pto.ea_id: this EA has no staff settings yet")
            }
            throw error
        }
    }

    static let ptoColumns = "id, ea_id, start_date::text, end_date::text, reason, extract(epoch FROM created_at)::float8"

    static func ptos(_ c: PostgresConnection, _ query: PostgresQuery, logger: Logger) async throws -> [Caremesh_Alerts_V1_PtoRecord] {
        var out: [Caremesh_Alerts_V1_PtoRecord] = []
        for try await (id, ea, start, end, reason, created) in try await c.query(query, logger: logger)
            .decode((UUID, UUID, String, String, String, Double).self) {
            var p = Caremesh_Alerts_V1_PtoRecord()
            p.id = id.text
            p.eaID = ea.text
            p.startDate = start
            p.endDate = end
            p.reason = ptoReasons.key(for: reason) ?? .unspecified
            p.createdAt = Google_Protobuf_Timestamp(epochSeconds: created)
            out.append(p)
        }
        return out
    }

    func listPto(_ r: Caremesh_Alerts_V1_ListPtoRequest, _ context: RPCContext) async throws -> Caremesh_Alerts_V1_ListPtoResponse {
        let ea = try context.requireSelf(r.eaID, field: "ea_id", orRole: Self.managers)
        var v = FieldViolations()
        let from = v.optionalDate(r.from, "from")?.description
        let through = v.optionalDate(r.through, "through")?.description
        try v.throwIfAny()
        var response = Caremesh_Alerts_V1_ListPtoResponse()
        response.records = try await store.withConnection { c in
            try await Self.ptos(c, """
                SELECT \(unescaped: Self.ptoColumns) FROM pto_records
                WHERE ea_id = \(ea) AND (\(from)::date IS NULL OR end_date >= \(from)::date)
                  AND (\(through)::date IS NULL OR start_date <= \(through)::date)
                ORDER BY start_date, id LIMIT 1000
                """, logger: self.logger)
        }
        return response
    }

    func deletePto(_ r: Caremesh_Alerts_V1_DeletePtoRequest, _ context: RPCContext) async throws -> Caremesh_Alerts_V1_DeletePtoResponse {
        let caller = try context.requireCaller()
        var v = FieldViolations()
        let id = v.uuid(r.id, "id")
        try v.throwIfAny()
        try await store.withTransaction { c in
            guard let ea = try await c.query("SELECT ea_id FROM pto_records WHERE id = \(id!) FOR UPDATE", logger: self.logger)
                .first(UUID.self) else { throw RPCError(.notFound, "no such PTO record") }
            guard caller.userID == ea || caller.hasAny(of: Self.managers) else {
                throw RPCError(.permissionDenied, "only the EA or an admin or coordinator may remove their PTO")
            }
            try await c.query("DELETE FROM pto_records WHERE id = \(id!)", logger: self.logger)
        }
        return Caremesh_Alerts_V1_DeletePtoResponse()
    }

    // MARK: - Coaching notes

    static let noteColumns = """
        id, note_type, ea_id, pairing_id, content, updated_by, extract(epoch FROM created_at)::float8, extract(epoch FROM updated_at)::float8
        """

    static func notes(_ c: PostgresConnection, _ query: PostgresQuery, logger: Logger) async throws -> [Caremesh_Alerts_V1_CoachingNote] {
        var out: [Caremesh_Alerts_V1_CoachingNote] = []
        for try await (id, type, ea, pairing, content, by, created, updated) in try await c.query(query, logger: logger)
            .decode((UUID, String, UUID?, UUID?, String, UUID, Double, Double).self) {
            var n = Caremesh_Alerts_V1_CoachingNote()
            n.id = id.text
            n.noteType = noteTypes.key(for: type) ?? .unspecified
            n.eaID = ea?.text ?? ""
            n.pairingID = pairing?.text ?? ""
            n.content = content
            n.updatedBy = by.text
            n.createdAt = Google_Protobuf_Timestamp(epochSeconds: created)
            n.updatedAt = Google_Protobuf_Timestamp(epochSeconds: updated)
            out.append(n)
        }
        return out
    }

    func putNote(_ r: Caremesh_Alerts_V1_PutCoachingNoteRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_PutCoachingNoteResponse
    {
        let caller = try context.requireRole(Self.managers)
        let n = r.note
        var v = FieldViolations()
        let type = Self.noteTypes[n.noteType]
        v.check(type != nil, "note.note_type", "must be EA, PAIRING or GENERAL")
        let ea = v.optionalUUID(n.eaID, "note.ea_id")
        let pairing = v.optionalUUID(n.pairingID, "note.pairing_id")
        v.check(n.noteType != .ea || !n.eaID.isEmpty, "note.ea_id", "is required for an EA note")
        v.check(n.noteType == .ea || n.eaID.isEmpty, "note.ea_id", "is only for an EA note")
        v.check(n.noteType != .pairing || !n.pairingID.isEmpty, "note.pairing_id", "is required for a pairing note")
        v.check(n.noteType == .pairing || n.pairingID.isEmpty, "note.pairing_id", "is only for a pairing note")
        v.check(!n.content.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "note.content", "is required")
        v.check(n.content.count <= 20_000, "note.content", "must be at most 20 000 characters")
        try v.throwIfAny()
        let by = try caller.requireUserID()
        do {
            var response = Caremesh_Alerts_V1_PutCoachingNoteResponse()
            response.note = try await store.withTransaction { c in
                guard let saved = try await Self.notes(c, """
                    INSERT INTO coaching_notes (note_type, ea_id, pairing_id, content, updated_by)
                    VALUES (\(type!), \(ea), \(pairing), \(n.content), \(by))
                    ON CONFLICT ON CONSTRAINT coaching_notes_one_per_subject
                    DO UPDATE SET content = EXCLUDED.content, updated_by = EXCLUDED.updated_by
                    RETURNING \(unescaped: Self.noteColumns)
                    """, logger: self.logger).first else { throw RPCError(.internal, "the upsert returned no row") }
                return saved
            }
            return response
        } catch {
            switch PSQLError.violation(in: error)?.constraint {
            case "coaching_notes_ea_id_fkey": throw RPCError(.notFound, "note.ea_id: no EA with staff settings has this id")
            case "coaching_notes_pairing_id_fkey": throw RPCError(.notFound, "note.pairing_id: no such pairing")
            default: throw error
            }
        }
    }

    func listNotes(_ r: Caremesh_Alerts_V1_ListCoachingNotesRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_ListCoachingNotesResponse
    {
        _ = try context.requireRole(Self.managers)
        var v = FieldViolations()
        let type = r.noteType == .unspecified ? nil : Self.noteTypes[r.noteType]
        v.check(r.noteType == .unspecified || type != nil, "note_type", "must be EA, PAIRING or GENERAL")
        let ea = v.optionalUUID(r.eaID, "ea_id")
        let pairing = v.optionalUUID(r.pairingID, "pairing_id")
        try v.throwIfAny()
        var response = Caremesh_Alerts_V1_ListCoachingNotesResponse()
        response.notes = try await store.withConnection { c in
            try await Self.notes(c, """
                SELECT \(unescaped: Self.noteColumns) FROM coaching_notes
                WHERE (\(type)::text IS NULL OR note_type = \(type)) AND (\(ea)::uuid IS NULL OR ea_id = \(ea))
                  AND (\(pairing)::uuid IS NULL OR pairing_id = \(pairing))
                ORDER BY updated_at DESC, id LIMIT 1000
                """, logger: self.logger)
        }
        return response
    }
}

extension FieldViolations {
    /// A "YYYY-MM-DD" date (a real one).
    mutating func date(_ text: String, _ field: String) -> LocalDate? {
        let d = LocalDate(text)
        check(d != nil, field, "must be a date, YYYY-MM-DD")
        return d
    }

    /// Empty is nil (not given); anything else must be a date.
    mutating func optionalDate(_ text: String, _ field: String) -> LocalDate? {
        text.isEmpty ? nil : date(text, field)
    }
}

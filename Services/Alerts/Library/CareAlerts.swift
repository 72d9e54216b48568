import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// Care alerts (seed 000): raising and routing, the calls of each escalation stage, call
/// statuses and ring timeouts moving the alert along its chain (`CareAlertLifecycle` and
/// `EscalationChain` decide; this applies them under the alert's row lock), and the queries.
final class CareAlerts: Sendable {
    let store: Store
    let outbox: Outbox
    let configuration: AlertsConfiguration
    let people: PersonDirectory
    let logger: Logger

    /// The durable ring timer of a stage: payload "<alert id> <step>", unique per `ringKey`.
    static let ringJob = "care-alert-ring"

    static func ringKey(_ id: UUID, _ step: Int, listening: Bool = false) -> String {
        "\(id.uuidString.lowercased()):\(step)" + (listening ? ":listen" : "")
    }

    /// Who may raise a care alert: care staff.
    static let raisers: Set<String> = ["caregiver", "ea", "professional", "coordinator", "admin"]
    /// Who sees every alert and works them.
    static let staff: Set<String> = ["coordinator", "admin"]

    init(store: Store, outbox: Outbox, configuration: AlertsConfiguration, people: PersonDirectory, logger: Logger) {
        self.store = store
        self.outbox = outbox
        self.configuration = configuration
        self.people = people
        self.logger = logger
    }

    // MARK: - Rows

    static let alertTypes: [Caremesh_Alerts_V1_CareAlertType: String] = [
        .medicalConcern: "medical_concern", .medicationIssue: "medication_issue", .behavioralChange: "behavioral_change",
        .safetyConcern: "safety_concern", .familyRequest: "family_request", .equipmentIssue: "equipment_issue", .other: "other",
    ]

    static let callStatuses: [String: Caremesh_Alerts_V1_CallAttemptStatus] = [
        "requested": .requested, "queued": .queued, "ringing": .ringing, "in_progress": .inProgress, "accepted": .accepted,
        "completed": .completed,
        "busy": .busy, "no_answer": .noAnswer, "failed": .failed, "canceled": .canceled, "machine": .machine,
        "timed_out": .timedOut, "ended": .ended,
    ]

    /// Messaging's call statuses as a call attempt stores them.
    static let providerStatuses: [Caremesh_Messaging_V1_CallStatus: String] = [
        .queued: "queued", .ringing: "ringing", .inProgress: "in_progress", .accepted: "accepted", .completed: "completed", .busy: "busy",
        .noAnswer: "no_answer", .failed: "failed", .canceled: "canceled", .machine: "machine",
    ]

    /// An alert row as the desk works with it.
    struct Record: Sendable {
        var alert: Caremesh_Alerts_V1_CareAlert
        var id: UUID
        var state: CareAlertState
        var staff: UUID
        var coordinator: UUID?
        var zone: UUID?
        var step: Int
    }

    static let columns = """
        id, client_id, staff_id, coordinator_id, zone_id, alert_type, voice_message_url, status, escalation_step,
        escalation_level, answered_by, outcome, closed_by, extract(epoch FROM initiated_at)::float8,
        extract(epoch FROM answered_at)::float8, extract(epoch FROM escalated_at)::float8,
        extract(epoch FROM resolved_at)::float8, extract(epoch FROM cancelled_at)::float8
        """

    static func record(_ row: PostgresRandomAccessRow) throws -> Record {
        var a = Caremesh_Alerts_V1_CareAlert()
        let id = try row[0].decode(UUID.self)
        let staff = try row[2].decode(UUID.self)
        let coordinator = try row[3].decode(UUID?.self)
        let zone = try row[4].decode(UUID?.self)
        a.id = id.text
        a.clientID = try row[1].decode(UUID.self).text
        a.staffID = staff.text
        a.coordinatorID = coordinator?.text ?? ""
        a.zoneID = zone?.text ?? ""
        a.alertType = alertTypes.key(for: try row[5].decode(String.self)) ?? .unspecified
        a.voiceMessageURL = try row[6].decode(String?.self) ?? ""
        let state = CareAlertState(rawValue: try row[7].decode(String.self)) ?? .initiated
        a.status = state.proto
        let step = Int(try row[8].decode(Int32.self))
        a.escalationStep = UInt32(step)
        a.escalationLevel = EscalationStage.Level(rawValue: try row[9].decode(String.self))?.proto ?? .unspecified
        a.answeredBy = try row[10].decode(UUID?.self)?.text ?? ""
        a.outcome = try row[11].decode(String?.self) ?? ""
        a.closedBy = try row[12].decode(UUID?.self)?.text ?? ""
        a.initiatedAt = Google_Protobuf_Timestamp(epochSeconds: try row[13].decode(Double.self))
        if let t = try row[14].decode(Double?.self) { a.answeredAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        if let t = try row[15].decode(Double?.self) { a.escalatedAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        if let t = try row[16].decode(Double?.self) { a.resolvedAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        if let t = try row[17].decode(Double?.self) { a.cancelledAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        return Record(alert: a, id: id, state: state, staff: staff, coordinator: coordinator, zone: zone, step: step)
    }

    func one(_ c: PostgresConnection, _ query: PostgresQuery) async throws -> Record? {
        var out: Record?
        for try await row in try await c.query(query, logger: logger) { out = try Self.record(row.makeRandomAccess()) }
        return out
    }

    func all(_ c: PostgresConnection, _ query: PostgresQuery) async throws -> [Record] {
        var out: [Record] = []
        for try await row in try await c.query(query, logger: logger) { out.append(try Self.record(row.makeRandomAccess())) }
        return out
    }

    /// The alert, locked for the rest of the transaction (call statuses, timers and people queue
    /// behind each other); nil if there is none.
    func lockedIfAny(_ c: PostgresConnection, _ id: UUID) async throws -> Record? {
        try await c.run(Prepared<Locked>(id), logger: logger).first.map { try Self.record($0.makeRandomAccess()) }
    }

    /// `lockedIfAny`'s statement, prepared: every call status and action runs it.
    enum Locked: PreparedSQL {
        static let sql = "SELECT \(CareAlerts.columns) FROM care_alerts WHERE id = $1 FOR UPDATE"
        static let types: [PostgresDataType] = [.uuid]
    }

    /// `lockedIfAny`, or `NOT_FOUND`.
    func locked(_ c: PostgresConnection, _ id: UUID) async throws -> Record {
        guard let r = try await lockedIfAny(c, id) else { throw RPCError(.notFound, "no care alert with this id") }
        return r
    }

    static let callColumns = """
        id, alert_id, escalation_step, escalation_level, coordinator_id, phone_number, status,
        extract(epoch FROM requested_at)::float8, extract(epoch FROM updated_at)::float8
        """

    static func call(_ row: PostgresRandomAccessRow) throws -> Caremesh_Alerts_V1_CallAttempt {
        var a = Caremesh_Alerts_V1_CallAttempt()
        a.id = try row[0].decode(UUID.self).text
        a.alertID = try row[1].decode(UUID.self).text
        a.escalationStep = UInt32(try row[2].decode(Int32.self))
        a.escalationLevel = EscalationStage.Level(rawValue: try row[3].decode(String.self))?.proto ?? .unspecified
        a.coordinatorID = try row[4].decode(UUID.self).text
        a.phoneNumber = try row[5].decode(String.self)
        a.status = callStatuses[try row[6].decode(String.self)] ?? .unspecified
        a.requestedAt = Google_Protobuf_Timestamp(epochSeconds: try row[7].decode(Double.self))
        a.updatedAt = Google_Protobuf_Timestamp(epochSeconds: try row[8].decode(Double.self))
        return a
    }

    func calls(_ c: PostgresConnection, _ query: PostgresQuery) async throws -> [Caremesh_Alerts_V1_CallAttempt] {
        var out: [Caremesh_Alerts_V1_CallAttempt] = []
        for try await row in try await c.query(query, logger: logger) { out.append(try Self.call(row.makeRandomAccess())) }
        return out
    }

    /// A request's `id` (the only field a few methods check).
    static func alertID(_ text: String) throws(RPCError) -> UUID {
        var v = FieldViolations()
        let id = v.uuid(text, "id")
        try v.throwIfAny()
        return id!
    }

    /// What `caller` is to `record`.
    static func relation(_ record: Record, _ caller: Caller) -> CareAlertRelation {
        var r: CareAlertRelation = []
        if caller.userID == record.staff { r.insert(.raiser) }
        if caller.has(role: "coordinator") { r.insert(.coordinator) }
        if caller.has(role: "admin") { r.insert(.admin) }
        return r
    }

    // MARK: - Raise

    func raise(_ r: Caremesh_Alerts_V1_RaiseCareAlertRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_RaiseCareAlertResponse
    {
        let me = try context.requireRole(Self.raisers).requireUserID()
        var v = FieldViolations()
        let client = v.uuid(r.clientID, "client_id")
        let type = Self.alertTypes[r.alertType]
        v.check(type != nil, "alert_type", "must be one of \(Self.alertTypes.values.sorted().joined(separator: ", ")) (upper case in the enum)")
        if !r.voiceMessageURL.isEmpty {
            let url = URL(string: r.voiceMessageURL)
            v.check(r.voiceMessageURL.count <= 2_048 && url?.scheme == "https" && url?.host?.isEmpty == false,
                    "voice_message_url", "must be an https URL of at most 2048 characters")
        }
        try v.throwIfAny()
        let voice = r.voiceMessageURL.isEmpty ? nil : r.voiceMessageURL
        let zone = try await clientZone(client!)
        return try await store.withTransaction { c in
            let chain = try await self.chain(c, primary: nil, choose: true, zone: zone)
            let first = chain.next(after: -1)
            guard let record = try await self.one(c, """
                INSERT INTO care_alerts (client_id, staff_id, coordinator_id, zone_id, alert_type, voice_message_url, status,
                                         escalation_step, escalation_level)
                VALUES (\(client!), \(me), \(chain.primary?.coordinatorID), \(zone), \(type!), \(voice),
                        \(first == nil ? "no_answer" : "initiated"), \(first?.step ?? 0), \(first?.stage.level.rawValue ?? "primary"))
                RETURNING \(unescaped: Self.columns)
                """) else { throw RPCError(.internal, "the insert returned no row") }
            var response = Caremesh_Alerts_V1_RaiseCareAlertResponse()
            var raised = Caremesh_Alerts_V1_CareAlertRaised()
            raised.alertID = record.alert.id
            raised.clientID = record.alert.clientID
            raised.staffID = record.alert.staffID
            raised.alertType = r.alertType
            raised.zoneID = record.alert.zoneID
            if let first {
                (response.calls, raised.calls) = try await self.call(c, record, step: first.step, first.stage)
            } else {
                self.logger.warning("care alert raised with nobody to call", metadata: ["alert.id": "\(record.alert.id)"])
            }
            _ = try await self.outbox.append(raised, key: record.alert.id, on: c)
            response.alert = record.alert
            return response
        }
    }

    /// The client's zone (nil: none): from identity's events, or, for a client they have not
    /// announced yet (created a moment ago), from identity itself. A client identity does not
    /// know is refused (`NOT_FOUND` naming client_id): an alert about nobody calls nobody.
    func clientZone(_ client: UUID) async throws -> UUID? {
        let known = try await store.query("SELECT zone_id FROM client_zones WHERE client_id = \(client)")
        if let row = known.first { return try row.decode(UUID?.self) }
        let person = try await people.resolve(client, field: "client_id")
        guard person.record != nil else { throw RPCError.notFound(field: "client_id", "names an account, not a client or patient record") }
        return person.zone
    }

    // MARK: - People's actions

    func acknowledge(_ r: Caremesh_Alerts_V1_AcknowledgeCareAlertRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_AcknowledgeCareAlertResponse
    {
        let caller = try context.requireCaller()
        let id = try Self.alertID(r.id)
        var response = Caremesh_Alerts_V1_AcknowledgeCareAlertResponse()
        response.alert = try await store.withTransaction { c in
            let record = try await self.locked(c, id)
            let mine = try await c.query("SELECT id FROM coordinators WHERE user_id = \(caller.userID)", logger: self.logger)
                .first(UUID.self)
            return try await self.answer(c, record, .acknowledge, by: Self.relation(record, caller), coordinator: mine,
                                         actor: caller.userID).alert
        }
        return response
    }

    func resolve(_ r: Caremesh_Alerts_V1_ResolveCareAlertRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_ResolveCareAlertResponse
    {
        var v = FieldViolations()
        let id = v.uuid(r.id, "id")
        let outcome = r.outcome.trimmingCharacters(in: .whitespacesAndNewlines)
        v.check(!outcome.isEmpty, "outcome", "say how it was resolved")
        v.check(outcome.count <= 2_000, "outcome", "must be at most 2000 characters")
        try v.throwIfAny()
        var response = Caremesh_Alerts_V1_ResolveCareAlertResponse()
        response.alert = try await close(id!, .resolve, outcome: outcome, context, set: "resolved_at = now()")
        return response
    }

    func cancel(_ r: Caremesh_Alerts_V1_CancelCareAlertRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_CancelCareAlertResponse
    {
        var v = FieldViolations()
        let id = v.uuid(r.id, "id")
        v.check(r.reason.count <= 500, "reason", "must be at most 500 characters")
        try v.throwIfAny()
        var response = Caremesh_Alerts_V1_CancelCareAlertResponse()
        let reason = r.reason.trimmingCharacters(in: .whitespacesAndNewlines)
        response.alert = try await close(id!, .cancel, outcome: reason.isEmpty ? nil : reason, context, set: "cancelled_at = now()")
        return response
    }

    /// Resolve or cancel: the lifecycle decides, one UPDATE applies it, live calls are hung up
    /// and the ring timer stops.
    private func close(_ id: UUID, _ action: CareAlertAction, outcome: String?, _ context: RPCContext, set: String) async throws
        -> Caremesh_Alerts_V1_CareAlert
    {
        let caller = try context.requireCaller()
        let me = try caller.requireUserID()
        return try await store.withTransaction { c in
            let record = try await self.locked(c, id)
            guard let to = try CareAlertLifecycle.apply(action, to: record.state, by: Self.relation(record, caller)) else {
                return record.alert
            }
            guard let updated = try await self.one(c, """
                UPDATE care_alerts SET status = \(to.rawValue), outcome = coalesce(\(outcome), outcome), closed_by = \(me),
                    \(unescaped: set)
                WHERE id = \(id) RETURNING \(unescaped: Self.columns)
                """) else { throw RPCError(.internal, "the care alert vanished") }
            try await self.stopCalling(c, record, to: to, actor: me)
            return updated.alert
        }
    }

    // MARK: - Reading

    func get(_ r: Caremesh_Alerts_V1_GetCareAlertRequest, _ context: RPCContext) async throws -> Caremesh_Alerts_V1_GetCareAlertResponse {
        let caller = try context.requireCaller()
        let id = try Self.alertID(r.id)
        return try await store.withConnection { c in
            guard let record = try await self.one(c, "SELECT \(unescaped: Self.columns) FROM care_alerts WHERE id = \(id)") else {
                throw RPCError(.notFound, "no care alert with this id")
            }
            guard !Self.relation(record, caller).isEmpty else {
                throw RPCError(.permissionDenied, "only the caregiver who raised it, coordinators and admins see a care alert")
            }
            var response = Caremesh_Alerts_V1_GetCareAlertResponse()
            response.alert = record.alert
            response.calls = try await self.calls(c, """
                SELECT \(unescaped: Self.callColumns) FROM care_alert_calls WHERE alert_id = \(id)
                ORDER BY escalation_step, requested_at, id
                """)
            return response
        }
    }

    static let openStatuses = CareAlertState.allCases.filter { !$0.isFinal }.map(\.rawValue)
    static let unansweredStatuses = CareAlertState.allCases.filter(\.isUnanswered).map(\.rawValue)

    func dashboard(_ r: Caremesh_Alerts_V1_CoordinatorDashboardRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_CoordinatorDashboardResponse
    {
        let caller = try context.requireRole(Self.staff)
        var v = FieldViolations()
        let named = v.optionalUUID(r.coordinatorID, "coordinator_id")
        let limit = v.limit(r.limit, default: 100)
        try v.throwIfAny()
        return try await store.withConnection { c in
            let coordinator: Caremesh_Alerts_V1_Coordinator
            if let named {
                guard let found = try await Coordinators.one(c, "SELECT \(unescaped: Coordinators.columns) FROM coordinators WHERE id = \(named)",
                                                             logger: self.logger) else {
                    throw RPCError(.notFound, "no coordinator with this id")
                }
                guard found.userID == caller.userID?.text || caller.has(role: "admin") else {
                    throw RPCError(.permissionDenied, "coordinators see their own dashboard; admins see anyone's")
                }
                coordinator = found
            } else {
                guard let mine = try await Coordinators.one(c, """
                    SELECT \(unescaped: Coordinators.columns) FROM coordinators WHERE user_id = \(caller.userID)
                    """, logger: self.logger) else {
                    throw RPCError(.failedPrecondition, "the caller is not a coordinator: name one with coordinator_id")
                }
                coordinator = mine
            }
            let id = UUID(uuidString: coordinator.id)!
            var response = Caremesh_Alerts_V1_CoordinatorDashboardResponse()
            response.coordinator = coordinator
            response.alerts = try await self.all(c, """
                SELECT \(unescaped: Self.columns) FROM care_alerts
                WHERE (coordinator_id = \(id) OR answered_by = \(id)) AND status = ANY(\(Self.openStatuses))
                ORDER BY initiated_at DESC, id DESC LIMIT \(limit)
                """).map(\.alert)
            for try await (status, n) in try await c.query("""
                SELECT status, count(*) FROM care_alerts
                WHERE (coordinator_id = \(id) OR answered_by = \(id)) AND status = ANY(\(Self.openStatuses)) GROUP BY status
                """, logger: self.logger).decode((String, Int64).self) {
                response.openByStatus[status] = UInt32(n)
            }
            return response
        }
    }

    func unanswered(_ r: Caremesh_Alerts_V1_ListUnansweredCareAlertsRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_ListUnansweredCareAlertsResponse
    {
        _ = try context.requireRole(Self.staff)
        var v = FieldViolations()
        let limit = v.limit(r.limit, default: 100)
        v.check(r.olderThanS <= 86_400 * 30, "older_than_s", "must be at most 30 days")
        try v.throwIfAny()
        let olderThan = r.olderThanS == 0 ? 15 : Double(r.olderThanS)
        return try await store.withConnection { c in
            let rows = try await c.query("""
                SELECT \(unescaped: Self.columns), extract(epoch FROM now() - initiated_at)::float8 FROM care_alerts
                WHERE status = ANY(\(Self.unansweredStatuses)) AND initiated_at < now() - make_interval(secs => \(olderThan))
                ORDER BY initiated_at, id LIMIT \(limit)
                """, logger: self.logger)
            var response = Caremesh_Alerts_V1_ListUnansweredCareAlertsResponse()
            for try await row in rows {
                let a = row.makeRandomAccess()
                var u = Caremesh_Alerts_V1_UnansweredCareAlert()
                u.alert = try Self.record(a).alert
                u.waitingS = try a[18].decode(Double.self)
                response.alerts.append(u)
            }
            return response
        }
    }

    func clientHistory(_ r: Caremesh_Alerts_V1_ListClientCareAlertsRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_ListClientCareAlertsResponse
    {
        _ = try context.requireRole(Self.staff)
        var v = FieldViolations()
        let client = v.uuid(r.clientID, "client_id")
        let page = Page(size: r.pageSize, token: r.pageToken, into: &v)
        try v.throwIfAny()
        return try await store.withConnection { c in
            let rows = try await c.query("""
                SELECT \(unescaped: Self.columns), \(unescaped: Page.micros("initiated_at")) FROM care_alerts
                WHERE client_id = \(client!) AND \(after: page, time: "initiated_at", id: "id")
                ORDER BY initiated_at DESC, id DESC LIMIT \(page.limit)
                """, logger: self.logger)
            var response = Caremesh_Alerts_V1_ListClientCareAlertsResponse()
            (response.alerts, response.nextPageToken) = try await page.collect(rows) { row in
                let a = row.makeRandomAccess()
                let record = try Self.record(a)
                return (record.alert, try a[18].decode(Int64.self), record.id)
            }
            return response
        }
    }
}

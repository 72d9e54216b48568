import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// The escalation chain of an alert's zone, the calls of a stage (their rows, the ring timer,
/// the requests for messaging), ending live calls, and the status events.
extension CareAlerts {
    /// `chain`'s statement: `$1` the primary (NULL: choose), `$2` whether to choose the zone's
    /// least busy coordinator, `$3` the zone, `$4` the open statuses. Prepared: planning it on
    /// every raise cost PostgreSQL ~1.4 ms, more than running it.
    enum Chain: PreparedSQL {
        static let sql = """
            WITH RECURSIVE
            first AS (
                SELECT id, phone_number, backup_coordinator_id FROM coordinators
                WHERE id = coalesce($1, CASE WHEN $2 THEN (
                    SELECT k.id FROM coordinators k
                    WHERE k.zone_id = $3 AND k.is_active AND k.tier = 'coordinator'
                    ORDER BY (SELECT count(*) FROM care_alerts a WHERE a.coordinator_id = k.id
                              AND a.status = ANY($4)),
                             k.created_at, k.id
                    LIMIT 1) END)
            ),
            backups (id, depth) AS (
                SELECT backup_coordinator_id, 1 FROM first WHERE backup_coordinator_id IS NOT NULL
                UNION ALL
                SELECT k.backup_coordinator_id, b.depth + 1
                FROM backups b JOIN coordinators k ON k.id = b.id AND NOT k.is_active
                WHERE k.backup_coordinator_id IS NOT NULL AND b.depth < 100
            ),
            policy AS (
                SELECT id, repeat_count FROM escalation_policies
                WHERE zone_id = $3 OR zone_id IS NULL ORDER BY zone_id NULLS LAST LIMIT 1
            )
            SELECT 'primary', 0, 0, 0, id, phone_number FROM first
            UNION ALL (
                SELECT 'backup', b.depth, 0, 0, k.id, k.phone_number
                FROM backups b JOIN coordinators k ON k.id = b.id AND k.is_active ORDER BY b.depth LIMIT 1)
            UNION ALL (
                SELECT 'policy', s.position, s.ring_timeout_s, p.repeat_count, k.id, k.phone_number
                FROM policy p JOIN escalation_steps s ON s.policy_id = p.id
                LEFT JOIN escalation_step_targets t ON t.policy_id = s.policy_id AND t.position = s.position
                LEFT JOIN coordinators k ON k.id = t.coordinator_id AND k.is_active
                ORDER BY s.position, k.created_at, k.id)
            UNION ALL (
                SELECT 'admins', 0, 0, 0, id, phone_number FROM coordinators
                WHERE tier = 'admin' AND is_active ORDER BY created_at, id)
            """
        static let types: [PostgresDataType] = [.uuid, .bool, .uuid, .textArray]
    }

    /// The chain as the data now stands: the primary (`primary`, or with `choose` the least
    /// busy active coordinator of `zone`), the first active backup along their backup chain,
    /// the zone's policy (or the default one) with its active targets, and the on-call admins.
    /// One round trip.
    func chain(_ c: PostgresConnection, primary: UUID?, choose: Bool, zone: UUID?) async throws -> EscalationChain {
        let rows = try await c.run(Prepared<Chain>(primary, choose, zone, Self.openStatuses), logger: logger)
        var chain = EscalationChain(ringTimeoutS: configuration.ringTimeoutSeconds)
        var steps: [Int: EscalationChain.Step] = [:]
        for row in rows {
            let (kind, position, timeout, repeats, id, phone) = try row.decode((String, Int32, Int32, Int32, UUID?, String?).self)
            let target = id.flatMap { id in phone.map { EscalationTarget(coordinatorID: id, phone: $0) } }
            switch kind {
            case "primary": chain.primary = target
            case "backup": chain.backup = target
            case "policy":
                chain.repeatCount = Int(repeats)
                var step = steps[Int(position)] ?? EscalationChain.Step(ringTimeoutS: Int(timeout), targets: [])
                if let target { step.targets.append(target) }
                steps[Int(position)] = step
            default: if let target { chain.admins.append(target) }
            }
        }
        chain.policy = steps.sorted { $0.key < $1.key }.map(\.value)
        return chain
    }

    /// Places the calls of `stage` for `record` (its rows, the ring timer) and returns the
    /// requests for messaging.
    func call(_ c: PostgresConnection, _ record: Record, step: Int, _ stage: EscalationStage) async throws
        -> (attempts: [Caremesh_Alerts_V1_CallAttempt], requests: [Caremesh_Alerts_V1_CallRequest])
    {
        let attempts = try await calls(c, """
            INSERT INTO care_alert_calls (alert_id, escalation_step, escalation_level, coordinator_id, phone_number)
            SELECT \(record.id), \(step), \(stage.level.rawValue), t.coordinator, t.phone
            FROM unnest(\(stage.targets.map(\.coordinatorID))::uuid[], \(stage.targets.map(\.phone))::text[]) AS t(coordinator, phone)
            ON CONFLICT (alert_id, escalation_step, coordinator_id) DO NOTHING
            RETURNING \(unescaped: Self.callColumns)
            """)
        let runAt = Date().addingTimeInterval(Double(stage.ringTimeoutS))
        try await Jobs.schedule(Self.ringJob, payload: Data("\(record.id.text) \(step)".utf8), runAt: runAt,
                                uniqueKey: Self.ringKey(record.id, step), on: c, logger: logger)
        let requests = attempts.map { a in
            var r = Caremesh_Alerts_V1_CallRequest()
            r.callID = a.id
            r.alertID = a.alertID
            r.coordinatorID = a.coordinatorID
            r.to = a.phoneNumber
            r.voiceMessageURL = record.alert.voiceMessageURL
            r.spokenMessage = CareAlertCallScript.message(type: record.alert.alertType, level: stage.level)
            r.acceptPrompt = CareAlertCallScript.acceptPrompt
            r.ringTimeoutS = UInt32(stage.ringTimeoutS)
            r.reference = "care_alert:\(a.alertID)"
            return r
        }
        return (attempts, requests)
    }

    /// The timers of the alert's current stage: its ring timeout and the answer window after it.
    func cancelRingTimers(_ c: PostgresConnection, _ record: Record) async throws {
        for listening in [false, true] {
            try await Jobs.cancel(Self.ringJob, uniqueKey: Self.ringKey(record.id, record.step, listening: listening), on: c, logger: logger)
        }
    }

    /// Ends the alert's calls that could still be answered (all stages, or one), as `status`
    /// ("ended": messaging hangs up; "timed_out": the stage's time passed). Returns their ids.
    func endLiveCalls(_ c: PostgresConnection, _ id: UUID, as status: String, step: Int? = nil) async throws -> [String] {
        let rows = try await c.query("""
            UPDATE care_alert_calls SET status = \(status)
            WHERE alert_id = \(id) AND status = ANY(\(CallProgress.live)) AND (\(step)::int IS NULL OR escalation_step = \(step))
            RETURNING id
            """, logger: logger)
        var ids: [String] = []
        for try await id in rows.decode(UUID.self) { ids.append(id.text) }
        return ids
    }

    /// `CareAlertStatusChanged`, unless the status stays what it was (a further escalation).
    static func statusChanged(_ events: inout PendingEvents, _ before: Record, to: CareAlertState, actor: UUID?,
                              ended: [String]) throws {
        guard to != before.state else { return }
        var e = Caremesh_Alerts_V1_CareAlertStatusChanged()
        e.alertID = before.alert.id
        e.status = to.proto
        e.previousStatus = before.state.proto
        e.actorID = actor?.text ?? ""
        e.endedCallIds = ended
        e.staffID = before.staff.text
        try events.add(e, key: before.alert.id)
    }

    /// The alert stops calling for good (answered, resolved, cancelled): its live calls are hung
    /// up, its stage's ring timer stopped, and the change announced.
    func stopCalling(_ c: PostgresConnection, _ record: Record, to: CareAlertState, actor: UUID?) async throws {
        let ended = try await endLiveCalls(c, record.id, as: "ended")
        try await cancelRingTimers(c, record)
        var events = PendingEvents()
        try Self.statusChanged(&events, record, to: to, actor: actor, ended: ended)
        try await outbox.append(events, on: c)
    }
}

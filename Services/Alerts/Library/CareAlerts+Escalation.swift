import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// Moving an alert along its chain: a stage nobody answered gives way to the next
/// (`escalate`), an answer stops it (`answer`), messaging's call statuses and the stage's ring
/// timer (with the answer window for a pickup) decide which.
extension CareAlerts {
    /// Nobody of the current stage answered: its timer stops, and the next stage with someone to
    /// call is called, or the alert is `no_answer` when the chain is exhausted. `ended`: the
    /// stage's calls just given up.
    func escalate(_ c: PostgresConnection, _ record: Record, ended: [String], _ events: inout PendingEvents) async throws {
        let chain = try await chain(c, primary: record.coordinator, choose: false, zone: record.zone)
        let next = chain.next(after: record.step)
        guard let to = try CareAlertLifecycle.apply(.noAnswer(next: next != nil), to: record.state, by: .system) else { return }
        try await c.query("""
            UPDATE care_alerts SET status = \(to.rawValue), escalation_step = \(next?.step ?? record.step),
                escalation_level = coalesce(\(next?.stage.level.rawValue), escalation_level),
                escalated_at = CASE WHEN \(next != nil) THEN coalesce(escalated_at, now()) ELSE escalated_at END
            WHERE id = \(record.id)
            """, logger: logger)
        try await cancelRingTimers(c, record)
        try Self.statusChanged(&events, record, to: to, actor: nil, ended: next == nil ? ended : [])
        guard let next else {
            logger.warning("care alert unanswered by everyone on its chain", metadata: ["alert.id": "\(record.alert.id)"])
            return
        }
        var e = Caremesh_Alerts_V1_CareAlertEscalated()
        e.alertID = record.alert.id
        e.escalationStep = UInt32(next.step)
        e.escalationLevel = next.stage.level.proto
        e.calls = try await call(c, record, step: next.step, next.stage).requests
        e.endedCallIds = ended
        try events.add(e, key: record.alert.id)
    }

    /// A person answered (`coordinator`, by phone or by acknowledging): escalation stops and the
    /// other calls are hung up.
    func answer(_ c: PostgresConnection, _ record: Record, _ action: CareAlertAction, by who: CareAlertRelation,
                coordinator: UUID?, actor: UUID?) async throws -> Record {
        guard let to = try CareAlertLifecycle.apply(action, to: record.state, by: who) else { return record }
        guard let updated = try await one(c, """
            UPDATE care_alerts SET status = \(to.rawValue), answered_by = \(coordinator), answered_at = now()
            WHERE id = \(record.id) RETURNING \(unescaped: Self.columns)
            """) else { throw RPCError(.internal, "the care alert vanished") }
        try await stopCalling(c, record, to: to, actor: actor)
        return updated
    }

    /// A call status from messaging (`CallStatusChanged`, applied once by the event consumer).
    /// Statuses of calls this service did not place, or of stages the alert has left, change
    /// only the call's own row.
    func callStatus(_ e: Caremesh_Messaging_V1_CallStatusChanged, _ c: PostgresConnection) async throws {
        guard let callID = UUID(uuidString: e.callID), let status = Self.providerStatuses[e.status],
              let alertID = try await c.query("SELECT alert_id FROM care_alert_calls WHERE id = \(callID)", logger: logger)
                .first(UUID.self)
        else { return }
        let record = try await locked(c, alertID)
        var current = "", step = -1
        var coordinator = UUID()
        for try await (s, n, k) in try await c.query("""
            SELECT status, escalation_step, coordinator_id FROM care_alert_calls WHERE id = \(callID) FOR UPDATE
            """, logger: logger).decode((String, Int32, UUID).self) { (current, step, coordinator) = (s, Int(n), k) }
        guard CallProgress.advances(from: current, to: status) else { return }
        try await c.query("UPDATE care_alert_calls SET status = \(status) WHERE id = \(callID)", logger: logger)
        guard step == record.step else { return }
        switch status {
        case "ringing":
            guard let to = try CareAlertLifecycle.apply(.ring, to: record.state, by: .system) else { return }
            try await c.query("UPDATE care_alerts SET status = \(to.rawValue) WHERE id = \(alertID)", logger: logger)
            var events = PendingEvents()
            try Self.statusChanged(&events, record, to: to, actor: nil, ended: [])
            try await outbox.append(events, on: c)
        case "accepted":
            _ = try await answer(c, record, .answer, by: .system, coordinator: coordinator, actor: nil)
        case "queued", "in_progress":
            return
        default:
            // This call failed (a pickup that ended without the key among them); the stage has
            // failed when none of its calls can still be answered.
            let waiting = try await c.query("""
                SELECT 1 FROM care_alert_calls
                WHERE alert_id = \(alertID) AND escalation_step = \(step) AND status = ANY(\(CallProgress.live)) LIMIT 1
                """, logger: logger).hasRows()
            guard !waiting else { return }
            var events = PendingEvents()
            try await escalate(c, record, ended: [], &events)
            try await outbox.append(events, on: c)
        }
    }

    /// The ring timer of a stage: if the alert is still calling that stage, its calls are given
    /// up and the next stage is called; but a coordinator who picked up is first given the
    /// answer window to hear the alert and press 1 (a second timer, "listen"), their stage's
    /// other calls ringing on until the provider's own timeout.
    func ringTimedOut(_ job: Job, _ c: PostgresConnection) async throws {
        let parts = String(decoding: job.payload, as: UTF8.self).split(separator: " ")
        guard (2...3).contains(parts.count), let id = UUID(uuidString: String(parts[0])), let step = Int(parts[1]) else { return }
        guard let record = try await lockedIfAny(c, id), record.state.isCalling, record.step == step
        else { return }
        if parts.count == 2, try await c.query("""
            SELECT 1 FROM care_alert_calls WHERE alert_id = \(id) AND escalation_step = \(step) AND status = 'in_progress' LIMIT 1
            """, logger: logger).hasRows() {
            try await Jobs.schedule(Self.ringJob, payload: Data("\(id.text) \(step) listen".utf8),
                                    runAt: Date().addingTimeInterval(configuration.answerWindow.seconds),
                                    uniqueKey: Self.ringKey(id, step, listening: true), on: c, logger: logger)
            return
        }
        let ended = try await endLiveCalls(c, id, as: "timed_out", step: step)
        var events = PendingEvents()
        try await escalate(c, record, ended: ended, &events)
        try await outbox.append(events, on: c)
    }
}

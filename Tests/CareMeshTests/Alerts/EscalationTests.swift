import AlertsService
import CareMeshContracts
import CareMeshRPC
import CareMeshRouter
import CareMeshStore
import CareMeshTesting
import Foundation
import IdentityService
import Logging
import MessagingService
import PostgresNIO
import SwiftProtobuf
import Testing

/// Escalation through the chain: each stage's calls, answers that stop it, and ring timers
/// that survive a restart.
extension AlertsTests {
    @Test("the full chain with short timers: no answer → backup → policy → admins → no_answer; each stage an event")
    func escalationChain() async throws {
        try await withStack(["ALERTS_RING_TIMEOUT_S": "1"]) { s in
            let admin = try await account(s, "admin")
            let caregiver = try await account(s, "caregiver")
            let zone = UUID()
            let (_, backup) = try await coordinator(s, admin: admin, zone: nil)
            let (_, primary) = try await coordinator(s, admin: admin, zone: zone, backup: backup.id)
            let (_, p1) = try await coordinator(s, admin: admin, zone: nil)
            let (_, p2) = try await coordinator(s, admin: admin, zone: nil)
            let (_, adminLine) = try await coordinator(s, admin: admin, zone: nil, tier: .admin, role: "admin")
            var policy = Caremesh_Alerts_V1_PutEscalationPolicyRequest()
            policy.policy.name = "zone-night"
            policy.policy.zoneID = zone.uuidString
            var step = Caremesh_Alerts_V1_EscalationStep()
            step.ringTimeoutS = 5
            step.coordinatorIds = [p1.id, p2.id]
            policy.policy.steps = [step]
            let saved = try await s.client.call(AlertsMethods.putEscalationPolicy, request: policy, options: admin.auth).policy
            #expect(saved.steps.first?.coordinatorIds.sorted() == [p1.id, p2.id].sorted())

            let client = try await client(s, staff: caregiver, zone: zone)
            let raised = try await raise(s, caregiver, client: client)
            #expect(raised.alert.coordinatorID == primary.id)
            // The primary's phone rings, then they do not answer (messaging says so).
            try await s.callStatus(raised.calls[0].id, .ringing)
            try await s.until(raised.alert.id, is: .ringing, as: caregiver)
            try await s.callStatus(raised.calls[0].id, .noAnswer)
            // → the backup, by event; the backup's ring timeout (1 s) then passes → the policy step.
            let atPolicy = try await TestStack.eventually {
                let got = try await s.alert(raised.alert.id, as: admin)
                guard got.alert.escalationLevel == .policy else { throw RPCError(.unavailable, "at \(got.alert.escalationLevel)") }
                return got
            }
            #expect(atPolicy.alert.status == .escalated)
            #expect(atPolicy.alert.hasEscalatedAt)
            let byStep = Dictionary(grouping: atPolicy.calls, by: \.escalationStep)
            #expect(byStep[0]?.map(\.status) == [.noAnswer])
            #expect(byStep[1]?.map(\.coordinatorID) == [backup.id])
            #expect(byStep[1]?.map(\.status) == [.timedOut])
            #expect(Set(byStep[2]?.map(\.coordinatorID) ?? []) == [p1.id, p2.id])
            // One of the two is busy: the step waits for the other; a machine is not an answer either.
            let policyCalls = byStep[2]!.sorted { $0.coordinatorID < $1.coordinatorID }
            try await s.callStatus(policyCalls[0].id, .busy)
            try await Task.sleep(for: .milliseconds(600))
            #expect(try await s.alert(raised.alert.id, as: admin).alert.escalationLevel == .policy)
            try await s.callStatus(policyCalls[1].id, .machine)
            let atAdmins = try await TestStack.eventually {
                let got = try await s.alert(raised.alert.id, as: admin)
                guard got.alert.escalationLevel == .admins else { throw RPCError(.unavailable, "at \(got.alert.escalationLevel)") }
                return got
            }
            #expect(atAdmins.calls.filter { $0.escalationLevel == .admins }.map(\.coordinatorID) == [adminLine.id])
            // Nobody at all: no_answer (after the admins' 1 s), still open for a coordinator.
            let exhausted = try await s.until(raised.alert.id, is: .noAnswer, as: admin)
            #expect(exhausted.calls.allSatisfy { ![.requested, .queued, .ringing].contains($0.status) })

            let events = try await s.events(raised.alert.id)
            #expect(events.map(\.0) == [
                "CareAlertRaised", "CareAlertStatusChanged", // ringing
                "CareAlertStatusChanged", "CareAlertEscalated", // escalated: the backup
                "CareAlertEscalated", // the policy (the backup's timer; still escalated)
                "CareAlertEscalated", // the admins
                "CareAlertStatusChanged", // no_answer
            ])
            let escalations = try events.filter { $0.0 == "CareAlertEscalated" }.map { try Caremesh_Alerts_V1_CareAlertEscalated(serializedBytes: $0.1) }
            #expect(escalations.map(\.escalationLevel) == [.backup, .policy, .admins])
            #expect(escalations.map { $0.calls.map(\.to).sorted() } == [[backup.phoneNumber], [p1.phoneNumber, p2.phoneNumber].sorted(),
                                                                        [adminLine.phoneNumber]])
            // The timed-out backup call is hung up with the escalation that replaced it.
            #expect(escalations[1].endedCallIds == byStep[1]!.map(\.id))
            #expect(escalations[1].calls.allSatisfy { $0.ringTimeoutS == 5 })
            let last = try Caremesh_Alerts_V1_CareAlertStatusChanged(serializedBytes: events.last!.1)
            #expect(last.status == .noAnswer && last.previousStatus == .escalated)

            // A coordinator takes it and resolves it.
            var resolve = Caremesh_Alerts_V1_ResolveCareAlertRequest()
            resolve.id = raised.alert.id
            resolve.outcome = "Called the family back; client seen by the GP."
            let resolved = try await s.client.call(AlertsMethods.resolveCareAlert, request: resolve, options: admin.auth).alert
            #expect(resolved.status == .resolved && resolved.closedBy == admin.id.uuidString.lowercased())
        }
    }

    @Test("a person answering stops it: no escalation after the ring timeout, late statuses ignored, other calls hung up")
    func answeredStops() async throws {
        try await withStack(["ALERTS_RING_TIMEOUT_S": "1"]) { s in
            let admin = try await account(s, "admin")
            let caregiver = try await account(s, "caregiver")
            let zone = UUID()
            let (_, backup) = try await coordinator(s, admin: admin, zone: nil)
            let (coordinatorAccount, primary) = try await coordinator(s, admin: admin, zone: zone, backup: backup.id)
            let client = try await client(s, staff: caregiver, zone: zone)
            let raised = try await raise(s, caregiver, client: client)
            let call = raised.calls[0].id
            try await s.callStatus(call, .ringing)
            try await s.callStatus(call, .inProgress)
            // A pickup is not an answer: past the ring timeout (1 s) the stage waits the answer
            // window for the key instead of moving on.
            try await Task.sleep(for: .milliseconds(1_500))
            let listening = try await s.alert(raised.alert.id, as: caregiver)
            #expect(listening.alert.status == .ringing && listening.alert.escalationLevel == .primary)
            #expect(listening.calls.map(\.status) == [.inProgress])
            try await s.callStatus(call, .accepted)
            let answered = try await s.until(raised.alert.id, is: .answered, as: caregiver)
            #expect(answered.alert.answeredBy == primary.id)
            #expect(answered.alert.hasAnsweredAt)
            // Late and out-of-order statuses of the same call change nothing.
            try await s.callStatus(call, .ringing)
            try await s.callStatus(call, .noAnswer)
            try await s.callStatus(call, .completed)
            try await Task.sleep(for: .milliseconds(2_500))
            let later = try await s.alert(raised.alert.id, as: caregiver)
            #expect(later.alert.status == .answered)
            #expect(later.alert.escalationLevel == .primary)
            #expect(later.calls.map(\.status) == [.accepted])
            #expect(try await s.count("SELECT count(*) FROM alerts.outbox WHERE type = 'caremesh.alerts.v1.CareAlertEscalated'") == 0)
            // The ring timer ran (a pickup: the answer window began); the window's was cancelled.
            #expect(try await s.count("SELECT count(*) FROM alerts.jobs WHERE kind = 'care-alert-ring' AND state = 'cancelled'") == 1)

            // The caregiver can no longer cancel it; the coordinator resolves it, once.
            var cancel = Caremesh_Alerts_V1_CancelCareAlertRequest()
            cancel.id = raised.alert.id
            #expect(await code { _ = try await s.client.call(AlertsMethods.cancelCareAlert, request: cancel, options: caregiver.auth) }
                    == .failedPrecondition)
            var resolve = Caremesh_Alerts_V1_ResolveCareAlertRequest()
            resolve.id = raised.alert.id
            resolve.outcome = "Medication dose confirmed with the pharmacist."
            #expect(await code { _ = try await s.client.call(AlertsMethods.resolveCareAlert, request: resolve, options: caregiver.auth) }
                    == .permissionDenied)
            let resolved = try await s.client.call(AlertsMethods.resolveCareAlert, request: resolve, options: coordinatorAccount.auth).alert
            #expect(resolved.status == .resolved)
            #expect(resolved.outcome == resolve.outcome)
            #expect(await code { _ = try await s.client.call(AlertsMethods.resolveCareAlert, request: resolve, options: coordinatorAccount.auth) }
                    == .failedPrecondition)

            // Acknowledging in the app (no call answered) also stops it, and hangs up the call.
            let second = try await raise(s, caregiver, client: client)
            var ack = Caremesh_Alerts_V1_AcknowledgeCareAlertRequest()
            ack.id = second.alert.id
            let taken = try await s.client.call(AlertsMethods.acknowledgeCareAlert, request: ack, options: coordinatorAccount.auth).alert
            #expect(taken.status == .answered && taken.answeredBy == primary.id)
            let changed = try await s.events(second.alert.id).filter { $0.0 == "CareAlertStatusChanged" }
                .map { try Caremesh_Alerts_V1_CareAlertStatusChanged(serializedBytes: $0.1) }
            #expect(changed.last?.endedCallIds == second.calls.map(\.id))
            #expect(changed.last?.actorID == coordinatorAccount.id.uuidString.lowercased())

            // The caregiver cancels a third before anyone answers: its call is hung up, its timer stops.
            let third = try await raise(s, caregiver, client: client)
            cancel.id = third.alert.id
            cancel.reason = "pressed by mistake"
            let cancelled = try await s.client.call(AlertsMethods.cancelCareAlert, request: cancel, options: caregiver.auth).alert
            #expect(cancelled.status == .cancelled && cancelled.outcome == "pressed by mistake" && cancelled.hasCancelledAt)
            try await Task.sleep(for: .milliseconds(1_500))
            #expect(try await s.alert(third.alert.id, as: caregiver).calls.map(\.status) == [.ended])
        }
    }

    @Test("ring timers survive a restart: raised under one alerts instance, escalated by the next")
    func timersSurviveRestart() async throws {
        try await withStack(["ALERTS_RING_TIMEOUT_S": "1"], separateAlerts: true) { s in
            let admin = try await account(s, "admin")
            let caregiver = try await account(s, "caregiver")
            let zone = UUID()
            let (raised, backupID) = try await s.withAlerts {
                let (_, backup) = try await coordinator(s, admin: admin, zone: nil)
                _ = try await coordinator(s, admin: admin, zone: zone, backup: backup.id)
                let client = try await client(s, staff: caregiver, zone: zone)
                return (try await raise(s, caregiver, client: client), backup.id)
            }
            // Nothing runs while no alerts instance does; the timer is due meanwhile.
            try await Task.sleep(for: .milliseconds(1_500))
            #expect(try await s.count("SELECT count(*) FROM alerts.care_alerts WHERE status = 'initiated'") == 1)
            try await s.withAlerts {
                let escalated = try await TestStack.eventually {
                    let got = try await s.alert(raised.alert.id, as: admin)
                    guard got.alert.escalationLevel == .backup else { throw RPCError(.unavailable, "not yet") }
                    return got
                }
                #expect(escalated.alert.status == .escalated)
                #expect(escalated.calls.last?.coordinatorID == backupID)
            }
        }
    }
}

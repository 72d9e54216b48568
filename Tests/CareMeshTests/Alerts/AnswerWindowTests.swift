import AlertsService
import CareMeshContracts
import CareMeshRPC
import CareMeshTesting
import Foundation
import Testing

/// Only a keypress answers a care alert by phone: a pickup holds its stage for the answer
/// window past the ring timeout, and a pickup that ends without the key is a call that failed.
extension AlertsTests {
    @Test("a pickup that never presses 1: the stage waits the answer window, then moves on; a pickup that hangs up fails at once")
    func pickupWithoutKey() async throws {
        try await withStack(["ALERTS_RING_TIMEOUT_S": "1", "ALERTS_ANSWER_WINDOW_S": "3"]) { s in
            let admin = try await account(s, "admin")
            let caregiver = try await account(s, "caregiver")
            let zone = UUID()
            let (_, backup) = try await coordinator(s, admin: admin, zone: nil)
            let (_, primary) = try await coordinator(s, admin: admin, zone: zone, backup: backup.id)
            let client = try await client(s, staff: caregiver, zone: zone)
            let raised = try await raise(s, caregiver, client: client)
            #expect(raised.alert.coordinatorID == primary.id)
            // The primary picks up (an answering service, a pocket) and never presses.
            try await s.callStatus(raised.calls[0].id, .inProgress)
            try await Task.sleep(for: .milliseconds(1_800))
            let held = try await s.alert(raised.alert.id, as: admin)
            #expect(held.alert.escalationLevel == .primary && held.alert.status != .answered)
            #expect(held.calls.map(\.status) == [.inProgress])
            // The window (3 s past the 1 s ring timeout) ends: the pickup is given up, on to the backup.
            let atBackup = try await TestStack.eventually(timeout: .seconds(10)) {
                let got = try await s.alert(raised.alert.id, as: admin)
                guard got.alert.escalationLevel == .backup else { throw RPCError(.unavailable, "at \(got.alert.escalationLevel)") }
                return got
            }
            #expect(atBackup.alert.status == .escalated)
            #expect(atBackup.calls.first { $0.escalationStep == 0 }?.status == .timedOut)
            let escalated = try await s.events(raised.alert.id).filter { $0.0 == "CareAlertEscalated" }
                .map { try Caremesh_Alerts_V1_CareAlertEscalated(serializedBytes: $0.1) }
            // Messaging is asked to hang up the primary's call.
            #expect(escalated.first?.endedCallIds == [raised.calls[0].id])
            // The backup picks up and hangs up without the key: not an answer, and nobody is left.
            let backupCall = try #require(atBackup.calls.first { $0.escalationStep == 1 })
            try await s.callStatus(backupCall.id, .inProgress)
            try await s.callStatus(backupCall.id, .completed)
            let exhausted = try await s.until(raised.alert.id, is: .noAnswer, as: admin)
            #expect(!exhausted.alert.hasAnsweredAt)
        }
    }
}

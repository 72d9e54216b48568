import CareMeshContracts
import Foundation
@testable import MessagingService
import SwiftProtobuf
import Testing

/// Who is told what, without I/O: each rule from its event.
@Suite struct NotificationRulesTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    func drafts(_ message: some SwiftProtobuf.Message, age: TimeInterval = 1) throws -> [NotificationRules.Draft] {
        try NotificationRules.drafts(type: type(of: message).protoMessageName, payload: message.serializedData(),
                                     occurred: Self.now.addingTimeInterval(-age), now: Self.now)
    }

    @Test func anOfferTellsEachResponderOnceCriticallyAndNeverMorePHIThanTheKindAndPriority() throws {
        let a = UUID(), b = UUID()
        var e = Caremesh_Dispatch_V1_SosOffered()
        e.sosID = UUID().uuidString
        e.wave = 2
        e.responderIds = [a.uuidString, b.uuidString, a.uuidString, "not-an-id"]
        e.emergencyType = .naturalDisaster
        e.priority = .critical
        e.escalated = true
        let out = try drafts(e)
        #expect(out.map(\.person) == [a, b])
        #expect(out.allSatisfy { $0.kind == .sosOffered && $0.kind.isCritical })
        #expect(out[0].body == "Someone near you needs help (natural disaster, critical priority). Open CareMesh to accept or decline.")
        #expect(out[0].data == ["sos_id": e.sosID, "wave": "2", "emergency_type": "NATURAL_DISASTER", "priority": "CRITICAL", "escalated": "true"])
    }

    @Test func theRequesterHearsOfAcceptanceAndOfWhatOthersDidToTheirSOS() throws {
        let requester = UUID(), volunteer = UUID()
        var accepted = Caremesh_Dispatch_V1_SosAccepted()
        accepted.sosID = "s"
        accepted.requesterID = requester.uuidString
        accepted.responderID = volunteer.uuidString
        let told = try drafts(accepted)
        #expect(told.map(\.person) == [requester] && told[0].kind == .sosAccepted && !told[0].kind.isCritical)

        func changed(_ to: Caremesh_Dispatch_V1_SosStatus, from: Caremesh_Dispatch_V1_SosStatus, by actor: UUID?) throws -> [String] {
            var e = Caremesh_Dispatch_V1_SosStatusChanged()
            e.sosID = "s"
            e.status = to
            e.previousStatus = from
            e.actorID = actor?.uuidString ?? ""
            e.requesterID = requester.uuidString
            return try drafts(e).map(\.title)
        }
        #expect(try changed(.pending, from: .accepted, by: volunteer) == ["Your volunteer dropped out"])
        #expect(try changed(.escalated, from: .pending, by: nil) == ["More help is being asked"])
        #expect(try changed(.resolved, from: .inProgress, by: volunteer) == ["Your SOS is resolved"])
        #expect(try changed(.cancelled, from: .pending, by: UUID()) == ["Your SOS was cancelled"])
        // What the requester did themself, and moves that are not news to them: nothing.
        #expect(try changed(.cancelled, from: .pending, by: requester).isEmpty)
        #expect(try changed(.resolved, from: .inProgress, by: requester).isEmpty)
        #expect(try changed(.accepted, from: .pending, by: volunteer).isEmpty)
        #expect(try changed(.inProgress, from: .accepted, by: volunteer).isEmpty)
        // Other events: nobody.
        #expect(try NotificationRules.drafts(type: Caremesh_Dispatch_V1_SosCreated.protoMessageName, payload: Data(), occurred: Self.now, now: Self.now).isEmpty)
    }

    @Test func aChatMessageTellsTheOtherParticipantsButNeverItsText() throws {
        let sender = UUID(), other = UUID()
        var e = Caremesh_Messaging_V1_ChatMessagePosted()
        e.sosID = "s"
        e.messageID = "m"
        e.senderID = sender.uuidString.lowercased()
        e.number = 7
        e.recipientIds = [other.uuidString.lowercased(), sender.uuidString.lowercased()]
        let out = try drafts(e)
        #expect(out.map(\.person) == [other] && out[0].kind == .chatMessage && !out[0].kind.isCritical)
        #expect(out[0].data == ["sos_id": "s", "message_id": "m", "number": "7"])
    }

    @Test func anAccountsHolderHearsOfALockWhileItLastsAndOfTheirCredentialsWhileTheNewsIsFresh() throws {
        let person = UUID()
        let locked = Caremesh_Identity_V1_AccountLocked.with {
            $0.userID = person.uuidString
            $0.lockedUntil = Google_Protobuf_Timestamp(date: Self.now.addingTimeInterval(900))
        }
        let lock = try #require(try drafts(locked).first)
        #expect(lock.person == person && lock.kind == .accountLocked && lock.kind.isCritical)
        #expect(lock.body == "After several failed sign-ins your CareMesh account is locked for 15 minutes. If this was not you, reset your password.")
        // A lock already over, or a day-old event, tells nobody.
        #expect(try drafts(Caremesh_Identity_V1_AccountLocked.with {
            $0.userID = person.uuidString
            $0.lockedUntil = Google_Protobuf_Timestamp(date: Self.now.addingTimeInterval(-1))
        }).isEmpty)
        #expect(try drafts(locked, age: 86_400).isEmpty)

        let verified = try drafts(Caremesh_Identity_V1_VolunteerVerified.with { $0.userID = person.uuidString; $0.verifiedBy = UUID().uuidString })
        #expect(verified.map(\.kind) == [.credentialUpdated] && verified[0].data == ["change": "verified"] && !verified[0].kind.isCritical)
        let revoked = try drafts(Caremesh_Identity_V1_VerificationRevoked.with { $0.userID = person.uuidString; $0.reason = "complaint from a patient" })
        #expect(revoked[0].title == "Your verification was withdrawn" && !revoked[0].body.contains("complaint"))
        let expired = try drafts(Caremesh_Identity_V1_CredentialExpired.with {
            $0.userID = person.uuidString
            $0.credential = "First aid"
            $0.expiredOn = "2026-12-01"
        })
        #expect(expired[0].body == "Your First aid certification expired on 2026-12-01. Renew it in CareMesh to keep being offered SOS.")
        #expect(expired[0].data == ["change": "expired", "expired_on": "2026-12-01"])
        #expect(try drafts(Caremesh_Identity_V1_VolunteerVerified.with { $0.userID = "nobody" }).isEmpty)
    }

    @Test func alertsNewsReachesTheCoordinatorsTheAssigneeAndTheCaregiver() throws {
        let k1 = UUID(), k2 = UUID(), caregiver = UUID(), coordinator = UUID()
        let raised = try drafts(Caremesh_Alerts_V1_RuleAlertRaised.with {
            $0.alertID = "a1"
            $0.pairingID = "p1"
            $0.severity = .high
            $0.title = "Needs support three days running"
            $0.notifyIds = [k1.uuidString, k2.uuidString, k1.uuidString]
        })
        #expect(raised.map(\.person) == [k1, k2] && raised.allSatisfy { $0.kind == .ruleAlert && !$0.kind.isCritical })
        #expect(raised[0].body == "High alert: Needs support three days running. Open CareMesh to triage it.")
        #expect(raised[0].data == ["alert_id": "a1", "pairing_id": "p1", "severity": "HIGH"])
        let assigned = try drafts(Caremesh_Alerts_V1_RuleAlertAssigned.with { $0.alertID = "a1"; $0.assignedTo = k2.uuidString; $0.severity = .critical })
        #expect(assigned.map(\.person) == [k2] && assigned[0].title == "A rule alert is yours" && assigned[0].body.hasPrefix("Critical alert"))

        func changed(_ status: Caremesh_Alerts_V1_CareAlertStatus, actor: UUID?) throws -> [NotificationRules.Draft] {
            try drafts(Caremesh_Alerts_V1_CareAlertStatusChanged.with {
                $0.alertID = "c1"
                $0.status = status
                $0.staffID = caregiver.uuidString
                $0.actorID = actor?.uuidString ?? ""
            })
        }
        #expect(try changed(.answered, actor: coordinator).map(\.data) == [["alert_id": "c1", "status": "ANSWERED"]])
        #expect(try changed(.escalated, actor: nil).first?.title == "Your care alert is escalated")
        let none = try #require(try changed(.noAnswer, actor: nil).first)
        #expect(none.person == caregiver && none.kind == .careAlertUpdated && none.kind.isCritical && none.body.contains("emergency services"))
        // Ringing, resolved, cancelled: nothing; nor what the caregiver did themselves.
        for status in [Caremesh_Alerts_V1_CareAlertStatus.ringing, .resolved, .cancelled, .initiated] { #expect(try changed(status, actor: nil).isEmpty) }
        #expect(try changed(.answered, actor: caregiver).isEmpty)
        // Stale news of any kind is not told.
        #expect(try drafts(Caremesh_Alerts_V1_CareAlertStatusChanged.with { $0.status = .noAnswer; $0.staffID = caregiver.uuidString }, age: 90_000)
            .isEmpty)
    }
}

import CareMeshContracts
import Foundation
@testable import MessagingService
import SwiftProtobuf
import Testing

/// Who is told what, without I/O: each rule from its event.
@Suite struct NotificationRulesTests {
    func drafts(_ message: some SwiftProtobuf.Message) throws -> [NotificationRules.Draft] {
        try NotificationRules.drafts(type: type(of: message).protoMessageName, payload: message.serializedData())
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
        #expect(try NotificationRules.drafts(type: Caremesh_Dispatch_V1_SosCreated.protoMessageName, payload: Data()).isEmpty)
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
}

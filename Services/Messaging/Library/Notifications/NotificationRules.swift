import CareMeshContracts
import Foundation

/// Who is told what, from other services' events: a pure function of the event, tested
/// without I/O. Each draft is one notification to one person; its text is short and never PHI
/// (the kind of emergency and its priority, never what is wrong with anyone).
enum NotificationRules {
    struct Draft: Sendable, Equatable {
        var person: UUID
        var kind: Caremesh_Messaging_V1_NotificationKind
        var title: String
        var body: String
        var data: [String: String]
    }

    /// The event types that notify someone, by the service that emits them (what messaging's
    /// consumers ask each for).
    static let typesBySource: [String: Set<String>] = [
        "dispatch": [Caremesh_Dispatch_V1_SosOffered.protoMessageName, Caremesh_Dispatch_V1_SosAccepted.protoMessageName,
                     Caremesh_Dispatch_V1_SosStatusChanged.protoMessageName],
        "messaging": [Caremesh_Messaging_V1_ChatMessagePosted.protoMessageName],
        "identity": [Caremesh_Identity_V1_AccountLocked.protoMessageName, Caremesh_Identity_V1_VolunteerVerified.protoMessageName,
                     Caremesh_Identity_V1_VerificationRevoked.protoMessageName, Caremesh_Identity_V1_CredentialExpired.protoMessageName],
        "alerts": [Caremesh_Alerts_V1_RuleAlertRaised.protoMessageName, Caremesh_Alerts_V1_RuleAlertAssigned.protoMessageName,
                   Caremesh_Alerts_V1_CareAlertStatusChanged.protoMessageName],
    ]
    static let types = typesBySource.values.reduce(into: Set<String>()) { $0.formUnion($1) }

    /// News older than this is not told (a consumer starting on an old event log, or catching up
    /// after a long outage, does not email last month's lock or last week's alerts).
    static let staleAfter: TimeInterval = 86_400

    /// The notifications `type`'s event `payload` makes: one per person at most. `occurred` is
    /// when the event committed, `now` the clock.
    static func drafts(type: String, payload: Data, occurred: Date, now: Date) throws -> [Draft] {
        guard now.timeIntervalSince(occurred) < staleAfter else { return [] }
        switch type {
        case Caremesh_Dispatch_V1_SosOffered.protoMessageName:
            return offered(try Caremesh_Dispatch_V1_SosOffered(serializedBytes: payload))
        case Caremesh_Dispatch_V1_SosAccepted.protoMessageName:
            return accepted(try Caremesh_Dispatch_V1_SosAccepted(serializedBytes: payload))
        case Caremesh_Dispatch_V1_SosStatusChanged.protoMessageName:
            return statusChanged(try Caremesh_Dispatch_V1_SosStatusChanged(serializedBytes: payload))
        case Caremesh_Messaging_V1_ChatMessagePosted.protoMessageName:
            return chatPosted(try Caremesh_Messaging_V1_ChatMessagePosted(serializedBytes: payload))
        case _ where typesBySource["identity"]!.contains(type):
            return try account(type: type, payload: payload, now: now)
        case _ where typesBySource["alerts"]!.contains(type):
            return try alerts(type: type, payload: payload)
        default:
            return []
        }
    }

    /// Each responder of the wave: someone near them needs help.
    static func offered(_ e: Caremesh_Dispatch_V1_SosOffered) -> [Draft] {
        let type = e.emergencyType.storedName ?? "OTHER", priority = e.priority.storedName ?? "HIGH"
        let words = { (name: String) in name.lowercased().replacingOccurrences(of: "_", with: " ") }
        var seen = Set<UUID>()
        return e.responderIds.compactMap(UUID.init(uuidString:)).filter { seen.insert($0).inserted }.map { person in
            Draft(person: person, kind: .sosOffered, title: "SOS near you",
                  body: "Someone near you needs help (\(words(type)), \(words(priority)) priority). Open CareMesh to accept or decline.",
                  data: ["sos_id": e.sosID, "wave": "\(e.wave)", "emergency_type": type, "priority": priority,
                         "escalated": e.escalated ? "true" : "false"])
        }
    }

    /// The requester: a volunteer took their SOS.
    static func accepted(_ e: Caremesh_Dispatch_V1_SosAccepted) -> [Draft] {
        guard let requester = UUID(uuidString: e.requesterID) else { return [] }
        return [Draft(person: requester, kind: .sosAccepted, title: "A volunteer is coming",
                      body: "A volunteer accepted your SOS and is on the way. You can chat with them in CareMesh.",
                      data: ["sos_id": e.sosID, "responder_id": e.responderID])]
    }

    /// The requester, when something they did not do happened to their SOS: a volunteer
    /// dropped out, it was escalated, resolved or cancelled by someone else.
    static func statusChanged(_ e: Caremesh_Dispatch_V1_SosStatusChanged) -> [Draft] {
        guard let requester = UUID(uuidString: e.requesterID), e.actorID != e.requesterID else { return [] }
        let taken: Set<Caremesh_Dispatch_V1_SosStatus> = [.accepted, .inProgress]
        let text: (String, String)
        switch e.status {
        case .pending where taken.contains(e.previousStatus):
            text = ("Your volunteer dropped out", "Your volunteer could not continue. We are asking others near you.")
        case .escalated:
            text = ("More help is being asked", "Nobody has accepted yet, so your SOS now goes to more people, professionals included.")
        case .resolved:
            text = ("Your SOS is resolved", "Your SOS was marked resolved. You can rate the help you received in CareMesh.")
        case .cancelled:
            text = ("Your SOS was cancelled", "Your SOS was cancelled. If you still need help, ask again in CareMesh.")
        default:
            return []
        }
        return [Draft(person: requester, kind: .sosUpdated, title: text.0, body: text.1, data: ["sos_id": e.sosID])]
    }

    /// The chat's other participants: a new message (never its text, which may say what is wrong).
    static func chatPosted(_ e: Caremesh_Messaging_V1_ChatMessagePosted) -> [Draft] {
        var seen = Set<UUID>()
        return e.recipientIds.compactMap(UUID.init(uuidString:)).filter { $0.uuidString != e.senderID.uppercased() && seen.insert($0).inserted }
            .map { person in
                Draft(person: person, kind: .chatMessage, title: "New message",
                      body: "You have a new message in the SOS chat. Open CareMesh to read it.",
                      data: ["sos_id": e.sosID, "message_id": e.messageID, "number": "\(e.number)"])
            }
    }
}

import CareMeshContracts
import Foundation

extension NotificationRules {
    /// A rule alert's people (its coordinators when raised, its assignee when assigned), and a
    /// caregiver whose care alert was answered, escalated, or went unanswered by everyone. Never
    /// the client's name or anything about their health: the rule's title and the severity.
    static func alerts(type: String, payload: Data) throws -> [Draft] {
        switch type {
        case Caremesh_Alerts_V1_RuleAlertRaised.protoMessageName:
            let e = try Caremesh_Alerts_V1_RuleAlertRaised(serializedBytes: payload)
            var seen = Set<UUID>()
            return e.notifyIds.compactMap(UUID.init(uuidString:)).filter { seen.insert($0).inserted }.map { person in
                Draft(person: person, kind: .ruleAlert, title: "A rule alert needs a look",
                      body: "\(severity(e.severity)) alert: \(e.title.prefix(150)). Open CareMesh to triage it.",
                      data: ["alert_id": e.alertID, "pairing_id": e.pairingID, "severity": severity(e.severity).uppercased()])
            }
        case Caremesh_Alerts_V1_RuleAlertAssigned.protoMessageName:
            let e = try Caremesh_Alerts_V1_RuleAlertAssigned(serializedBytes: payload)
            guard let person = UUID(uuidString: e.assignedTo) else { return [] }
            return [Draft(person: person, kind: .ruleAlert, title: "A rule alert is yours",
                          body: "\(severity(e.severity)) alert assigned to you: \(e.title.prefix(150)). Open CareMesh to triage it.",
                          data: ["alert_id": e.alertID, "pairing_id": e.pairingID, "severity": severity(e.severity).uppercased(), "assigned": "true"])]
        case Caremesh_Alerts_V1_CareAlertStatusChanged.protoMessageName:
            let e = try Caremesh_Alerts_V1_CareAlertStatusChanged(serializedBytes: payload)
            guard let caregiver = UUID(uuidString: e.staffID), e.actorID.lowercased() != e.staffID.lowercased() else { return [] }
            let text: (title: String, body: String, status: String)
            switch e.status {
            case .answered: text = ("Your care alert was answered", "A coordinator took your care alert.", "ANSWERED")
            case .escalated:
                text = ("Your care alert is escalated", "The first coordinator did not answer; others are being called.", "ESCALATED")
            case .noAnswer:
                text = ("Nobody answered your care alert",
                        "Nobody on the call chain answered your care alert. If the client needs help now, call the emergency services.",
                        "NO_ANSWER")
            default: return []
            }
            return [Draft(person: caregiver, kind: .careAlertUpdated, title: text.title, body: text.body,
                          data: ["alert_id": e.alertID, "status": text.status])]
        default:
            return []
        }
    }

    /// The severity as a word that starts a sentence, and as `data` names it.
    static func severity(_ s: Caremesh_Alerts_V1_RuleSeverity) -> String {
        switch s {
        case .low: "Low"
        case .medium: "Medium"
        case .high: "High"
        case .critical: "Critical"
        default: "A"
        }
    }
}

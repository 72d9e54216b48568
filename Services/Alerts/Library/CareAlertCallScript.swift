import CareMeshContracts

/// What a care-alert call says to the coordinator it rings (`CallRequest.spoken_message`): the
/// alert's type and why they are the one called, never who the client is. It is all the call
/// says when the alert came without a recording, so that one always rings with a message.
/// Then it asks for the key that accepts (`accept_prompt`): only that answers the alert.
public enum CareAlertCallScript {
    public static let acceptPrompt = "Press 1 to take this alert. If you cannot, hang up and the next person is called."

    public static func message(type: Caremesh_Alerts_V1_CareAlertType, level: EscalationStage.Level) -> String {
        let what = CareAlerts.alertTypes[type].map { $0.replacingOccurrences(of: "_", with: " ") } ?? "a concern"
        let why = switch level {
        case .primary: "You are the coordinator on duty for this client's zone."
        case .backup: "You are called as the backup: the coordinator on duty has not answered."
        case .policy: "You are called by the zone's escalation policy: nobody has answered yet."
        case .admins: "You are called as the administrator on call: nobody else has answered."
        }
        return "This is CareMesh with a care alert: \(what). \(why)"
    }
}

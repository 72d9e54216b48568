import SwiftProtobuf

/// An enum with one spelling per case in the database and between services (`storedNames`):
/// the name of a case, and the case of a name (`UNSPECIFIED`, the enum's zero, for one it
/// does not know).
public protocol StoredNamed: SwiftProtobuf.Enum {
    static var storedNames: [Self: String] { get }
}

extension StoredNamed {
    public var storedName: String? { Self.storedNames[self] }

    public init(storedName: String) {
        self = Self.storedNames.first { $0.value == storedName }?.key ?? Self()
    }
}

/// How the shared enums are spelled in the database and between services: one table each,
/// used by the service that owns each and by those that keep projections of it.
extension Caremesh_Identity_V1_Role: StoredNamed {
    /// Lowercase, as in access tokens' `roles` claim and `users.role`.
    public static let storedNames: [Self: String] = [
        .user: "user", .volunteer: "volunteer", .professional: "professional", .caregiver: "caregiver",
        .coordinator: "coordinator", .ea: "ea", .admin: "admin",
    ]
}

extension Caremesh_Identity_V1_Skill: StoredNamed {
    /// Seed 001's skill names, as in `volunteers.skills` and dispatch's `responders.skills`.
    public static let storedNames: [Self: String] = [
        .firstAid: "FIRST_AID", .cpr: "CPR", .firefighting: "FIREFIGHTING", .searchRescue: "SEARCH_RESCUE",
        .counseling: "COUNSELING", .medicalProfessional: "MEDICAL_PROFESSIONAL", .driver: "DRIVER",
        .translator: "TRANSLATOR", .other: "OTHER",
    ]
}

extension Caremesh_Identity_V1_AccessPurpose: StoredNamed {
    /// Why PHI is touched, as audit trails store it (identity's `audit_log`, dispatch's
    /// `appointment_audit`): a closed set, so no caller can put free text (or PHI) there.
    public static let storedNames: [Self: String] = [
        .treatment: "TREATMENT", .emergency: "EMERGENCY", .careCoordination: "CARE_COORDINATION",
        .personRequest: "PERSON_REQUEST", .operations: "OPERATIONS", .compliance: "COMPLIANCE",
    ]
}

extension Caremesh_Dispatch_V1_EmergencyType: StoredNamed {
    /// As in `dispatch.sos_requests.emergency_type` and in what messaging tells people.
    public static let storedNames: [Self: String] = [
        .medical: "MEDICAL", .fire: "FIRE", .accident: "ACCIDENT", .crime: "CRIME",
        .naturalDisaster: "NATURAL_DISASTER", .other: "OTHER",
    ]
}

extension Caremesh_Dispatch_V1_Priority: StoredNamed {
    /// As in `dispatch.sos_requests.priority` and in what messaging tells people.
    public static let storedNames: [Self: String] = [.critical: "CRITICAL", .high: "HIGH", .medium: "MEDIUM", .low: "LOW"]
}

extension Caremesh_Messaging_V1_NotificationKind: StoredNamed {
    /// As in `messaging.notifications.kind`.
    public static let storedNames: [Self: String] = [
        .sosOffered: "SOS_OFFERED", .sosAccepted: "SOS_ACCEPTED", .sosUpdated: "SOS_UPDATED", .chatMessage: "CHAT_MESSAGE", .accountLocked: "ACCOUNT_LOCKED",
        .credentialUpdated: "CREDENTIAL_UPDATED", .ruleAlert: "RULE_ALERT", .careAlertUpdated: "CARE_ALERT_UPDATED",
    ]
}

extension Caremesh_Messaging_V1_DeliveryChannel: StoredNamed {
    /// As in `messaging.notification_deliveries.channel`.
    public static let storedNames: [Self: String] = [.stream: "stream", .push: "push", .sms: "sms", .email: "email"]
}

extension Caremesh_Messaging_V1_PushPlatform: StoredNamed {
    /// As in `messaging.push_devices.platform`.
    public static let storedNames: [Self: String] = [.fcm: "fcm", .apns: "apns"]
}

extension Caremesh_Messaging_V1_DeliveryStatus: StoredNamed {
    /// As in `messaging.notification_deliveries.status`.
    public static let storedNames: [Self: String] = [
        .queued: "queued", .sent: "sent", .delivered: "delivered", .failed: "failed", .read: "read",
    ]
}

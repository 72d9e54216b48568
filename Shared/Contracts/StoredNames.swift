/// How identity's enums are spelled in the database and between services: one table each,
/// used by identity (which owns them) and by the services that keep projections of them.
extension Caremesh_Identity_V1_Role {
    /// Lowercase, as in access tokens' `roles` claim and `users.role`.
    public static let storedNames: [Self: String] = [
        .user: "user", .volunteer: "volunteer", .professional: "professional", .caregiver: "caregiver",
        .coordinator: "coordinator", .ea: "ea", .admin: "admin",
    ]

    public var storedName: String? { Self.storedNames[self] }

    public init(storedName: String) {
        self = Self.storedNames.first { $0.value == storedName }?.key ?? .unspecified
    }
}

extension Caremesh_Identity_V1_Skill {
    /// Seed 001's skill names, as in `volunteers.skills` and dispatch's `responders.skills`.
    public static let storedNames: [Self: String] = [
        .firstAid: "FIRST_AID", .cpr: "CPR", .firefighting: "FIREFIGHTING", .searchRescue: "SEARCH_RESCUE",
        .counseling: "COUNSELING", .medicalProfessional: "MEDICAL_PROFESSIONAL", .driver: "DRIVER",
        .translator: "TRANSLATOR", .other: "OTHER",
    ]

    public var storedName: String? { Self.storedNames[self] }

    public init(storedName: String) {
        self = Self.storedNames.first { $0.value == storedName }?.key ?? .unspecified
    }
}

extension Caremesh_Identity_V1_AccessPurpose {
    /// Why PHI is touched, as audit trails store it (identity's `audit_log`, dispatch's
    /// `appointment_audit`): a closed set, so no caller can put free text (or PHI) there.
    public static let storedNames: [Self: String] = [
        .treatment: "TREATMENT", .emergency: "EMERGENCY", .careCoordination: "CARE_COORDINATION",
        .personRequest: "PERSON_REQUEST", .operations: "OPERATIONS", .compliance: "COMPLIANCE",
    ]

    public var storedName: String? { Self.storedNames[self] }

    public init(storedName: String) {
        self = Self.storedNames.first { $0.value == storedName }?.key ?? .unspecified
    }
}

extension Caremesh_Dispatch_V1_EmergencyType {
    /// As in `dispatch.sos_requests.emergency_type` and in what messaging tells people.
    public static let storedNames: [Self: String] = [
        .medical: "MEDICAL", .fire: "FIRE", .accident: "ACCIDENT", .crime: "CRIME",
        .naturalDisaster: "NATURAL_DISASTER", .other: "OTHER",
    ]

    public var storedName: String? { Self.storedNames[self] }
}

extension Caremesh_Dispatch_V1_Priority {
    /// As in `dispatch.sos_requests.priority` and in what messaging tells people.
    public static let storedNames: [Self: String] = [.critical: "CRITICAL", .high: "HIGH", .medium: "MEDIUM", .low: "LOW"]

    public var storedName: String? { Self.storedNames[self] }
}

import CareMeshContracts
import CareMeshRPC

/// An SOS's status, as stored (`sos_requests.status`).
public enum SosState: String, Sendable, CaseIterable {
    case pending = "PENDING"
    case accepted = "ACCEPTED"
    case inProgress = "IN_PROGRESS"
    case resolved = "RESOLVED"
    case cancelled = "CANCELLED"
    case escalated = "ESCALATED"

    /// Waiting for someone to accept (offers out).
    public var isOpen: Bool { self == .pending || self == .escalated }
    /// Someone has it.
    public var isTaken: Bool { self == .accepted || self == .inProgress }
    public var isFinal: Bool { self == .resolved || self == .cancelled }

    public var proto: Caremesh_Dispatch_V1_SosStatus {
        switch self {
        case .pending: .pending
        case .accepted: .accepted
        case .inProgress: .inProgress
        case .resolved: .resolved
        case .cancelled: .cancelled
        case .escalated: .escalated
        }
    }
}

/// What a caller is to one SOS (several at once: a coordinator may also be its requester).
public struct SosRelation: OptionSet, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// The person who raised it.
    public static let requester = SosRelation(rawValue: 1)
    /// Was offered it and has not declined (an offer withdrawn because someone else accepted counts).
    public static let offered = SosRelation(rawValue: 2)
    /// Accepted it.
    public static let responder = SosRelation(rawValue: 4)
    /// An admin or coordinator.
    public static let staff = SosRelation(rawValue: 8)
}

/// What someone does to an SOS.
public enum SosAction: Sendable, Equatable {
    case accept
    case decline
    case start
    case resolve
    case cancel
    /// The last regular wave passed (the system, not a person).
    case escalate
}

/// The SOS lifecycle as a pure function, tested without I/O:
///
///     PENDING ──accept──▶ ACCEPTED ──start──▶ IN_PROGRESS ──resolve──▶ RESOLVED
///        │  escalate        │   ▲                 │
///        ▼                  │   └ (responder cancels: back to PENDING, or ESCALATED if it was, re-offered)
///     ESCALATED ──accept──▶ ┘
///     any unfinished ──cancel (requester, staff)──▶ CANCELLED
///
/// Who may act is checked before the state, so a stranger learns nothing about an SOS from
/// the refusal (`PERMISSION_DENIED`); an allowed actor at the wrong moment gets
/// `FAILED_PRECONDITION` with the reason.
public enum SosLifecycle {
    public struct Transition: Sendable, Equatable {
        public var to: SosState
        /// The accepted responder withdrew: counts against them, and the SOS is offered again.
        public var responderWithdrew = false
        /// Open offers are withdrawn (someone accepted, or it ended).
        public var closesOffers = false
    }

    /// `wasEscalated`: the SOS has been escalated before (a responder who withdraws hands it
    /// back to ESCALATED, not PENDING, so professionals stay in the offers).
    public static func apply(_ action: SosAction, to state: SosState, by relation: SosRelation,
                             wasEscalated: Bool = false) throws(RPCError) -> Transition {
        switch action {
        case .accept:
            guard relation.contains(.offered) || relation.contains(.responder) else {
                throw RPCError(.permissionDenied, "only a responder it was offered to may accept this SOS")
            }
            guard state.isOpen else { throw refusal(state, "accepted") }
            return Transition(to: .accepted, closesOffers: true)
        case .decline:
            guard relation.contains(.offered) else {
                throw RPCError(.permissionDenied, "only a responder it was offered to may decline this SOS")
            }
            guard state.isOpen else { throw refusal(state, "declined") }
            return Transition(to: state)
        case .start:
            guard relation.contains(.responder) else {
                throw RPCError(.permissionDenied, "only the responder who accepted this SOS may start it")
            }
            guard state == .accepted else { throw refusal(state, "started") }
            return Transition(to: .inProgress)
        case .resolve:
            guard relation.contains(.responder) || relation.contains(.staff) else {
                throw RPCError(.permissionDenied, "only the responder who accepted this SOS, or staff, may resolve it")
            }
            guard state == .inProgress else { throw refusal(state, "resolved") }
            return Transition(to: .resolved)
        case .cancel:
            if relation.contains(.requester) || relation.contains(.staff) {
                guard !state.isFinal else { throw refusal(state, "cancelled") }
                return Transition(to: .cancelled, closesOffers: true)
            }
            guard relation.contains(.responder) else {
                throw RPCError(.permissionDenied, "only the requester, the responder who accepted it, or staff may cancel this SOS")
            }
            guard state.isTaken else { throw refusal(state, "withdrawn from") }
            return Transition(to: wasEscalated ? .escalated : .pending, responderWithdrew: true)
        case .escalate:
            guard state == .pending else { throw refusal(state, "escalated") }
            return Transition(to: .escalated)
        }
    }

    static func refusal(_ state: SosState, _ verb: String) -> RPCError {
        let why = switch state {
        case .pending, .escalated: "nobody has accepted it yet"
        case .accepted: "it is already accepted"
        case .inProgress: "it is already in progress"
        case .resolved: "it is resolved"
        case .cancelled: "it is cancelled"
        }
        return RPCError(.failedPrecondition, "this SOS cannot be \(verb) now: \(why)",
                        details: [RPCError.detail(reason: "SOS_\(state.rawValue)", domain: "dispatch")])
    }
}

/// One wave of offers: how far, to whom, and whether it escalates.
public struct WavePlan: Sendable, Equatable {
    public var wave: Int
    public var radius: Double
    /// Professionals are offered it too.
    public var includesProfessionals: Bool
    /// This wave moves the SOS to ESCALATED (the first after the regular ones).
    public var escalates: Bool

    public init(wave: Int, radius: Double, includesProfessionals: Bool, escalates: Bool) {
        self.wave = wave
        self.radius = radius
        self.includesProfessionals = includesProfessionals
        self.escalates = escalates
    }

    /// Wave `wave` (1-based) under `configuration`; nil once the escalation waves are spent.
    public static func plan(_ wave: Int, _ configuration: DispatchConfiguration) -> WavePlan? {
        let regular = configuration.waveRadii.count
        guard wave >= 1, wave <= regular + configuration.escalationWaves else { return nil }
        if wave <= regular {
            return WavePlan(wave: wave, radius: configuration.waveRadii[wave - 1], includesProfessionals: false, escalates: false)
        }
        return WavePlan(wave: wave, radius: configuration.waveRadii[regular - 1], includesProfessionals: true,
                        escalates: wave == regular + 1)
    }
}

/// The skills preferred for each kind of emergency: responders who have one are offered an
/// SOS before nearer ones who have none, among the nearest candidates (`Matching`).
public enum SkillPreference {
    public static func preferred(for type: Caremesh_Dispatch_V1_EmergencyType) -> [Caremesh_Identity_V1_Skill] {
        switch type {
        case .medical: [.firstAid, .cpr, .medicalProfessional]
        case .fire: [.firefighting, .firstAid]
        case .accident: [.firstAid, .cpr, .medicalProfessional, .driver]
        case .crime: [.counseling, .firstAid]
        case .naturalDisaster: [.searchRescue, .firstAid, .driver]
        case .other, .unspecified, .UNRECOGNIZED: []
        }
    }
}

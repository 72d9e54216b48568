import CareMeshContracts
import CareMeshRPC
import Foundation

/// A care alert's status, as stored (`care_alerts.status`, the seed's enum).
public enum CareAlertState: String, Sendable, CaseIterable {
    case initiated
    case ringing
    case answered
    case noAnswer = "no_answer"
    case escalated
    case resolved
    case cancelled

    public var isFinal: Bool { self == .resolved || self == .cancelled }
    /// Nobody has it yet.
    public var isUnanswered: Bool { self == .initiated || self == .ringing || self == .escalated || self == .noAnswer }
    /// Calls are out (a stage is ringing).
    public var isCalling: Bool { self == .initiated || self == .ringing || self == .escalated }

    public var proto: Caremesh_Alerts_V1_CareAlertStatus {
        switch self {
        case .initiated: .initiated
        case .ringing: .ringing
        case .answered: .answered
        case .noAnswer: .noAnswer
        case .escalated: .escalated
        case .resolved: .resolved
        case .cancelled: .cancelled
        }
    }
}

/// What a caller is to one alert (several at once: an admin may have raised it).
public struct CareAlertRelation: OptionSet, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// The caregiver who raised it.
    public static let raiser = CareAlertRelation(rawValue: 1)
    public static let coordinator = CareAlertRelation(rawValue: 2)
    public static let admin = CareAlertRelation(rawValue: 4)
    /// A call status or a timer.
    public static let system = CareAlertRelation(rawValue: 8)

    public static let staff: CareAlertRelation = [.coordinator, .admin]
}

/// What happens to an alert.
public enum CareAlertAction: Sendable, Equatable {
    /// The current stage's call is ringing.
    case ring
    /// A person answered a call of the current stage.
    case answer
    /// A coordinator or admin takes it without a call.
    case acknowledge
    /// Nobody of the current stage answered (each call failed, or the ring timeout passed);
    /// `next`: the chain has another stage to call.
    case noAnswer(next: Bool)
    case resolve
    case cancel
}

/// The care-alert lifecycle as a pure function, tested without I/O:
///
///     initiated ─ring─▶ ringing ─answer/acknowledge─▶ answered ─resolve─▶ resolved
///        │                 │                                ▲
///        └──────┬──────────┘ no answer, a next stage        │ answer
///               ▼                                           │
///           escalated ─ring─▶ ringing … ────────────────────┘
///               │ no answer, nothing left
///               ▼
///           no_answer (open until resolved)
///     unanswered ─cancel (the caregiver, an admin)─▶ cancelled
///     any open ─resolve (coordinators, admins)─▶ resolved
///
/// People are checked before the state, so a stranger learns nothing from the refusal
/// (`PERMISSION_DENIED`); an allowed person at the wrong moment gets `FAILED_PRECONDITION`.
/// The system's actions never fail: one that no longer applies (a late call status, a
/// timer after an answer) returns nil and changes nothing.
public enum CareAlertLifecycle {
    public static func apply(_ action: CareAlertAction, to state: CareAlertState, by who: CareAlertRelation)
        throws(RPCError) -> CareAlertState?
    {
        switch action {
        case .ring:
            return state == .initiated || state == .escalated ? .ringing : nil
        case .answer:
            return state.isUnanswered ? .answered : nil
        case .noAnswer(let next):
            guard state.isCalling else { return nil }
            return next ? .escalated : .noAnswer
        case .acknowledge:
            guard !who.isDisjoint(with: .staff) else {
                throw RPCError(.permissionDenied, "only coordinators and admins take care alerts")
            }
            if state == .answered { return nil }
            try open(state)
            return .answered
        case .resolve:
            guard !who.isDisjoint(with: .staff) else {
                throw RPCError(.permissionDenied, "only coordinators and admins resolve care alerts")
            }
            try open(state)
            return .resolved
        case .cancel:
            guard !who.isDisjoint(with: [.raiser, .admin]) else {
                throw RPCError(.permissionDenied, "only the caregiver who raised it, or an admin, may cancel a care alert")
            }
            try open(state)
            guard state != .answered else {
                throw RPCError(.failedPrecondition, "a coordinator answered this alert: they resolve it",
                               details: [RPCError.detail(reason: "CARE_ALERT_ANSWERED", domain: "alerts")])
            }
            return .cancelled
        }
    }

    private static func open(_ state: CareAlertState) throws(RPCError) {
        guard !state.isFinal else {
            throw RPCError(.failedPrecondition, "this care alert is already \(state.rawValue)",
                           details: [RPCError.detail(reason: "CARE_ALERT_\(state.rawValue.uppercased())", domain: "alerts")])
        }
    }
}

/// Someone a stage calls.
public struct EscalationTarget: Sendable, Equatable {
    public var coordinatorID: UUID
    public var phone: String

    public init(coordinatorID: UUID, phone: String) {
        self.coordinatorID = coordinatorID
        self.phone = phone
    }
}

/// One stage of the chain: whom it calls at once, and how long they ring.
public struct EscalationStage: Sendable, Equatable {
    public enum Level: String, Sendable {
        case primary, backup, policy, admins

        public var proto: Caremesh_Alerts_V1_EscalationLevel {
            switch self {
            case .primary: .primary
            case .backup: .backup
            case .policy: .policy
            case .admins: .admins
            }
        }
    }

    public var level: Level
    public var targets: [EscalationTarget]
    public var ringTimeoutS: Int
}

/// An alert's escalation chain, as the data now stands; the alert keeps only its position in
/// it (`escalation_step`). Stages, in order:
///
///     0                       the primary coordinator (of the client's zone)
///     1                       their backup (the first active one along the backup chain)
///     2 …                     the policy's steps, the whole list 1 + repeatCount times
///     last                    every on-call admin
///
/// A stage with nobody to call is skipped, and the chain ends after the admins.
public struct EscalationChain: Sendable, Equatable {
    public struct Step: Sendable, Equatable {
        public var ringTimeoutS: Int
        public var targets: [EscalationTarget]

        public init(ringTimeoutS: Int, targets: [EscalationTarget]) {
            self.ringTimeoutS = ringTimeoutS
            self.targets = targets
        }
    }

    public var primary: EscalationTarget?
    public var backup: EscalationTarget?
    public var policy: [Step]
    public var repeatCount: Int
    public var admins: [EscalationTarget]
    /// The ring timeout of the stages that have none of their own.
    public var ringTimeoutS: Int

    public init(primary: EscalationTarget? = nil, backup: EscalationTarget? = nil, policy: [Step] = [], repeatCount: Int = 0,
                admins: [EscalationTarget] = [], ringTimeoutS: Int) {
        self.primary = primary
        self.backup = backup
        self.policy = policy
        self.repeatCount = repeatCount
        self.admins = admins
        self.ringTimeoutS = ringTimeoutS
    }

    /// How many stages there are (empty ones included).
    public var count: Int { 3 + policy.count * (repeatCount + 1) }

    /// The stage at `step`, nil past the end.
    public func stage(_ step: Int) -> EscalationStage? {
        let policyStages = policy.count * (repeatCount + 1)
        switch step {
        case 0: return EscalationStage(level: .primary, targets: primary.map { [$0] } ?? [], ringTimeoutS: ringTimeoutS)
        case 1: return EscalationStage(level: .backup, targets: backup.map { [$0] } ?? [], ringTimeoutS: ringTimeoutS)
        case 2..<(2 + policyStages):
            let s = policy[(step - 2) % policy.count]
            return EscalationStage(level: .policy, targets: s.targets, ringTimeoutS: s.ringTimeoutS)
        case 2 + policyStages: return EscalationStage(level: .admins, targets: admins, ringTimeoutS: ringTimeoutS)
        default: return nil
        }
    }

    /// The first stage after `step` with someone to call (`after: -1` for the first); nil when
    /// the chain is exhausted.
    public func next(after step: Int) -> (step: Int, stage: EscalationStage)? {
        var s = max(step + 1, 0)
        while let stage = stage(s) {
            if !stage.targets.isEmpty { return (s, stage) }
            s += 1
        }
        return nil
    }
}

/// A call attempt's status (as stored) only moves forward: a late "ringing" never overwrites
/// a pickup or an end. A pickup (`in_progress`) is not an answer: only `accepted` (the person
/// pressed 1) is, and a pickup that ends without it (`completed`) is a call that failed.
public enum CallProgress {
    /// Calls that can still be answered: ringing, or picked up and not yet accepted.
    public static let live = ["requested", "queued", "ringing", "in_progress"]

    public static func advances(from current: String, to new: String) -> Bool {
        rank(new) > rank(current)
    }

    static func rank(_ status: String) -> Int {
        switch status {
        case "requested": 0
        case "queued": 1
        case "ringing": 2
        case "in_progress": 3
        default: 4
        }
    }
}

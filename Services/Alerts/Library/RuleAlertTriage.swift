import CareMeshContracts
import Foundation

/// A rule alert's status, as stored (`alerts.status`): open → acknowledged → resolved or
/// dismissed; resolved and dismissed are final.
public enum RuleAlertState: String, Sendable, CaseIterable, ProtoMirror {
    case open, acknowledged, resolved, dismissed

    /// Counted in the pairing's health, and the one alert per rule and pairing.
    public var isOpen: Bool { self == .open || self == .acknowledged }

    /// The stored names of the open statuses and of the closed ones, for queries. (The partial
    /// unique index `alerts_one_open` and the `ON CONFLICT` that names it spell the open ones
    /// out: PostgreSQL matches an index predicate as written.)
    static let openStatuses = allCases.filter(\.isOpen).map(\.rawValue)
    static let closedStatuses = allCases.filter { !$0.isOpen }.map(\.rawValue)

    public var proto: Caremesh_Alerts_V1_RuleAlertStatus {
        switch self {
        case .open: .open
        case .acknowledged: .acknowledged
        case .resolved: .resolved
        case .dismissed: .dismissed
        }
    }
}

/// What a manager does to a rule alert.
public enum RuleAlertAction: Sendable, Equatable {
    case assign, acknowledge, resolve, dismiss
}

public enum RuleAlertTriage {
    /// The status after `action`, or nil when `action` is not allowed from `state` (every
    /// action on a closed alert). Assigning keeps the status; acknowledging twice is no change.
    public static func apply(_ action: RuleAlertAction, to state: RuleAlertState) -> RuleAlertState? {
        guard state.isOpen else { return nil }
        switch action {
        case .assign: return state
        case .acknowledge: return .acknowledged
        case .resolve: return .resolved
        case .dismiss: return .dismissed
        }
    }
}

/// A pairing's health, from its open alerts: red if any is high or critical, yellow if any
/// is low or medium, green when there are none.
public enum PairingHealthLevel: String, Sendable, CaseIterable, ProtoMirror {
    case green, yellow, red

    public static func of(openSeverities: [RuleDefinition.Severity]) -> PairingHealthLevel {
        if openSeverities.contains(where: { $0 == .high || $0 == .critical }) { return .red }
        return openSeverities.isEmpty ? .green : .yellow
    }

    public var proto: Caremesh_Alerts_V1_PairingHealth {
        switch self {
        case .green: .green
        case .yellow: .yellow
        case .red: .red
        }
    }
}

extension RuleDefinition.Severity: ProtoMirror {
    public var proto: Caremesh_Alerts_V1_RuleSeverity {
        switch self {
        case .low: .low
        case .medium: .medium
        case .high: .high
        case .critical: .critical
        }
    }
}

/// An enum of ours with one proto enum value per case: read back from the proto's value (nil
/// for UNSPECIFIED and values it does not know).
public protocol ProtoMirror: CaseIterable {
    associatedtype Proto: Equatable
    var proto: Proto { get }
}

extension ProtoMirror {
    public init?(_ proto: Proto) {
        guard let match = Self.allCases.first(where: { $0.proto == proto }) else { return nil }
        self = match
    }
}

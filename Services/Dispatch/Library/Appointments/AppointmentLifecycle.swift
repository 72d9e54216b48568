import CareMeshContracts
import CareMeshRPC
import Foundation

/// An appointment's status, as stored (`appointments.status`).
public enum AppointmentState: String, Sendable, CaseIterable {
    case pending = "PENDING"
    case confirmed = "CONFIRMED"
    case cancelled = "CANCELLED"
    case completed = "COMPLETED"

    /// Holds its time (the exclusion constraints count it).
    public var isLive: Bool { self == .pending || self == .confirmed }

    public var proto: Caremesh_Dispatch_V1_AppointmentStatus {
        switch self {
        case .pending: .pending
        case .confirmed: .confirmed
        case .cancelled: .cancelled
        case .completed: .completed
        }
    }

    public init?(proto: Caremesh_Dispatch_V1_AppointmentStatus) {
        guard let s = Self.allCases.first(where: { $0.proto == proto }) else { return nil }
        self = s
    }
}

/// What a caller is to one appointment.
public struct AppointmentRelation: OptionSet, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let patient = AppointmentRelation(rawValue: 1)
    public static let practitioner = AppointmentRelation(rawValue: 2)
    /// An admin or coordinator (the front desk).
    public static let staff = AppointmentRelation(rawValue: 4)
}

public enum AppointmentAction: Sendable, Equatable {
    case confirm
    case cancel
    case complete
}

/// The appointment lifecycle as a pure function, tested without I/O:
///
///     PENDING ──confirm──▶ CONFIRMED ──complete (once started)──▶ COMPLETED
///        └──────cancel──────┴──▶ CANCELLED
///
/// Confirming and completing are the practice's (practitioner or staff); anyone party to it may
/// cancel. Repeating what is already done is no change (`nil`), so retries are safe.
public enum AppointmentLifecycle {
    public static func apply(_ action: AppointmentAction, to state: AppointmentState, by relation: AppointmentRelation,
                             startsAt start: Date, now: Date) throws(RPCError) -> AppointmentState? {
        guard !relation.isEmpty else {
            throw RPCError(.permissionDenied, "only the patient, the practitioner and staff may change this appointment")
        }
        let practice = !relation.isDisjoint(with: [.practitioner, .staff])
        switch action {
        case .confirm:
            guard practice else { throw RPCError(.permissionDenied, "only the practitioner or staff confirm appointments") }
            switch state {
            case .pending: return .confirmed
            case .confirmed: return nil
            case .cancelled, .completed: throw refused(state, "confirmed")
            }
        case .cancel:
            switch state {
            case .pending, .confirmed: return .cancelled
            case .cancelled: return nil
            case .completed: throw refused(state, "cancelled")
            }
        case .complete:
            guard practice else { throw RPCError(.permissionDenied, "only the practitioner or staff complete appointments") }
            switch state {
            case .confirmed:
                guard start <= now else {
                    throw RPCError(.failedPrecondition, "an appointment is completed once it has started",
                                   details: [RPCError.detail(reason: "APPOINTMENT_NOT_STARTED", domain: "dispatch")])
                }
                return .completed
            case .completed: return nil
            case .pending, .cancelled: throw refused(state, "completed")
            }
        }
    }

    static func refused(_ state: AppointmentState, _ verb: String) -> RPCError {
        RPCError(.failedPrecondition, "a \(state.rawValue.lowercased()) appointment cannot be \(verb)",
                 details: [RPCError.detail(reason: "APPOINTMENT_\(state.rawValue)", domain: "dispatch")])
    }
}

/// Weekly hours: "HH:MM" wall-clock times and their checks, without I/O.
public enum WeeklyHours {
    /// Minutes since midnight of "HH:MM" (00:00 to 24:00), nil if it is not one.
    public static func minutes(_ text: String) -> Int? {
        guard let m = text.wholeMatch(of: /([01][0-9]|2[0-4]):([0-5][0-9])/), let h = Int(m.1), let min = Int(m.2) else { return nil }
        let total = h * 60 + min
        return total <= 24 * 60 ? total : nil
    }

    /// "HH:MM" of minutes since midnight.
    public static func text(_ minutes: Int) -> String {
        String(format: "%02d:%02d", minutes / 60, minutes % 60)
    }

    public static let maxWindows = 50

    /// The windows as (weekday 1–7, start, end) minutes, or violations of `windows[i]…`
    /// (unknown day, bad time, empty, or overlapping another window of its day).
    public static func validate(_ windows: [Caremesh_Dispatch_V1_AvailabilityWindow], into v: inout FieldViolations)
        -> [(weekday: Int, start: Int, end: Int)]
    {
        v.check(windows.count <= maxWindows, "windows", "has at most \(maxWindows) windows")
        var out: [(weekday: Int, start: Int, end: Int)] = []
        for (i, w) in windows.enumerated() {
            let day = w.weekday.rawValue
            let start = minutes(w.start), end = minutes(w.end)
            v.check((1...7).contains(day), "windows[\(i)].weekday", "must be MONDAY to SUNDAY")
            v.check(start != nil && start! < 24 * 60, "windows[\(i)].start", "must be a time HH:MM from 00:00 to 23:59")
            v.check(end != nil, "windows[\(i)].end", "must be a time HH:MM from 00:01 to 24:00")
            guard (1...7).contains(day), let start, let end, start < 24 * 60 else { continue }
            guard end > start else {
                v.add("windows[\(i)].end", "must be after start")
                continue
            }
            if out.contains(where: { $0.weekday == day && $0.start < end && start < $0.end }) {
                v.add("windows[\(i)]", "overlaps another window of the same day")
                continue
            }
            out.append((day, start, end))
        }
        return out.sorted { ($0.weekday, $0.start) < ($1.weekday, $1.start) }
    }
}

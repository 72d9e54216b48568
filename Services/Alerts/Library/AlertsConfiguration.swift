import CareMeshContracts
import Foundation

/// Alerts' tunables, from the environment (`ALERTS_…`).
public struct AlertsConfiguration: Sendable, Equatable {
    /// How long a coordinator's or admin's phone rings before the alert moves on
    /// (`ALERTS_RING_TIMEOUT_S`, 30). Policy steps carry their own.
    public var ringTimeout: Duration = .seconds(30)
    /// How long a coordinator who picked up has, past the ring timeout, to hear the alert and
    /// press 1 before the stage gives up on them (`ALERTS_ANSWER_WINDOW_S`, 40).
    public var answerWindow: Duration = .seconds(40)
    /// The wall-clock time, in each EA's own time zone, at which their pairings' rules are
    /// evaluated every day (`ALERTS_DAILY_EVALUATION_AT`, "06:00").
    public var dailyEvaluationAt = LocalTime(hour: 6, minute: 0)!

    public init() {}

    public struct BadValue: Error, CustomStringConvertible {
        public let key: String
        public var description: String { "\(key) is not a valid value" }
    }

    public init(environment env: [String: String]) throws(BadValue) {
        if let text = env["ALERTS_RING_TIMEOUT_S"] {
            guard let v = Int(text), (1...3_600).contains(v) else { throw BadValue(key: "ALERTS_RING_TIMEOUT_S") }
            ringTimeout = .seconds(v)
        }
        if let text = env["ALERTS_ANSWER_WINDOW_S"] {
            guard let v = Int(text), (1...600).contains(v) else { throw BadValue(key: "ALERTS_ANSWER_WINDOW_S") }
            answerWindow = .seconds(v)
        }
        if let text = env["ALERTS_DAILY_EVALUATION_AT"] {
            guard let t = LocalTime(text) else { throw BadValue(key: "ALERTS_DAILY_EVALUATION_AT") }
            dailyEvaluationAt = t
        }
    }

    var ringTimeoutSeconds: Int { Int(ringTimeout.components.seconds) }
}

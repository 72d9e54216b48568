import Foundation

/// Alerts' tunables, from the environment (`ALERTS_…`).
public struct AlertsConfiguration: Sendable, Equatable {
    /// How long a coordinator's or admin's phone rings before the alert moves on
    /// (`ALERTS_RING_TIMEOUT_S`, 30). Policy steps carry their own.
    public var ringTimeout: Duration = .seconds(30)

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
    }

    var ringTimeoutSeconds: Int { Int(ringTimeout.components.seconds) }
}

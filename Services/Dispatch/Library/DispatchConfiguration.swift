import Foundation

/// Dispatch's tunables, from the environment (`DISPATCH_…`); the defaults suit a city.
public struct DispatchConfiguration: Sendable, Equatable {
    /// Responders offered an SOS per wave (`DISPATCH_WAVE_SIZE`, 5).
    public var waveSize = 5
    /// The search radius of each regular wave, metres (`DISPATCH_WAVE_RADII_M`, "2000,5000,10000"):
    /// one wave per radius, each taking the next nearest not yet offered.
    public var waveRadii: [Double] = [2_000, 5_000, 10_000]
    /// How long a wave waits for an acceptance before the next (`DISPATCH_WAVE_TIMEOUT_S`, 45).
    public var waveTimeout: Duration = .seconds(45)
    /// Escalation waves (professionals included, the widest radius) after the last regular one,
    /// one per timeout while nobody accepts (`DISPATCH_ESCALATION_WAVES`, 10); then only the board.
    public var escalationWaves = 10
    /// Location fixes older than this are not used for matching (`DISPATCH_LOCATION_MAX_AGE_S`, 1800).
    public var locationMaxAge: Duration = .seconds(1_800)
    /// SOS a person may raise per window (`DISPATCH_SOS_RATE_LIMIT`, 5) and the window
    /// (`DISPATCH_SOS_RATE_WINDOW_S`, 600). Beyond it: RESOURCE_EXHAUSTED and a suspicious
    /// activity at identity.
    public var sosRateLimit = 5
    public var sosRateWindow: Duration = .seconds(600)

    public init() {}

    public struct BadValue: Error, CustomStringConvertible {
        public let key: String
        public var description: String { "\(key) is not a valid value" }
    }

    public init(environment env: [String: String]) throws(BadValue) {
        func int(_ key: String, _ range: ClosedRange<Int>) throws(BadValue) -> Int? {
            guard let text = env[key] else { return nil }
            guard let v = Int(text), range.contains(v) else { throw BadValue(key: key) }
            return v
        }
        if let v = try int("DISPATCH_WAVE_SIZE", 1...100) { waveSize = v }
        if let text = env["DISPATCH_WAVE_RADII_M"] {
            let radii = text.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard !radii.isEmpty, radii.count == text.split(separator: ",").count,
                  radii.allSatisfy({ $0 > 0 && $0 <= 1_000_000 }), radii == radii.sorted()
            else { throw BadValue(key: "DISPATCH_WAVE_RADII_M") }
            waveRadii = radii
        }
        if let v = try int("DISPATCH_WAVE_TIMEOUT_S", 1...3_600) { waveTimeout = .seconds(v) }
        if let v = try int("DISPATCH_ESCALATION_WAVES", 1...1_000) { escalationWaves = v }
        if let v = try int("DISPATCH_LOCATION_MAX_AGE_S", 10...86_400) { locationMaxAge = .seconds(v) }
        if let v = try int("DISPATCH_SOS_RATE_LIMIT", 1...1_000_000) { sosRateLimit = v }
        if let v = try int("DISPATCH_SOS_RATE_WINDOW_S", 1...86_400) { sosRateWindow = .seconds(v) }
    }
}

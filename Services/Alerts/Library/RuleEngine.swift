import CareMeshContracts
import Foundation

/// Any JSON value, decoded strictly (a number is never a boolean).
public enum JSONValue: Sendable, Equatable, Decodable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }
}

/// What a rule is evaluated against: one pairing's recent days, in its staff member's time zone.
public struct PairingFacts: Sendable {
    public struct StartLog: Sendable {
        public var date: LocalDate
        public var minutesLate: Int
        public init(date: LocalDate, minutesLate: Int) {
            self.date = date
            self.minutesLate = minutesLate
        }
    }

    /// An end-of-day report's numbers and flags (the ten fields; text fields are not facts).
    public struct Report: Sendable {
        public var date: LocalDate
        public var hoursWorked: Double
        public var tasksCompleted: Int
        public var tasksPending: Int
        public var clientSatisfaction: Int
        public var eaWellbeing: Int
        public var needsSupport: Bool
        public var clientUnresponsive: Bool
        public var scopeChangeRequested: Bool

        public init(date: LocalDate, hoursWorked: Double = 8, tasksCompleted: Int = 0, tasksPending: Int = 0, clientSatisfaction: Int = 4,
                    eaWellbeing: Int = 4, needsSupport: Bool = false, clientUnresponsive: Bool = false, scopeChangeRequested: Bool = false) {
            self.date = date
            self.hoursWorked = hoursWorked
            self.tasksCompleted = tasksCompleted
            self.tasksPending = tasksPending
            self.clientSatisfaction = clientSatisfaction
            self.eaWellbeing = eaWellbeing
            self.needsSupport = needsSupport
            self.clientUnresponsive = clientUnresponsive
            self.scopeChangeRequested = scopeChangeRequested
        }
    }

    /// The day evaluated (the staff member's today).
    public var asOf: LocalDate
    public var pairingStart: LocalDate
    public var pto: Set<LocalDate>
    public var logs: [StartLog]
    public var reports: [Report]

    public init(asOf: LocalDate, pairingStart: LocalDate, pto: Set<LocalDate> = [], logs: [StartLog] = [], reports: [Report] = []) {
        self.asOf = asOf
        self.pairingStart = pairingStart
        self.pto = pto
        self.logs = logs
        self.reports = reports
    }
}

/// The measures a rule's condition can compare. Each takes its parameters from the rule's
/// thresholds; a window of D days ends on the day evaluated (reports: the day before, since
/// today's is not due yet). PTO days and days before the pairing started never count.
public enum RuleMetric: String, Sendable, CaseIterable {
    /// Start-of-day logs more than `grace_minutes` late.
    case lateStarts = "late_starts"
    /// Working days (Monday to Friday) without an end-of-day report.
    case missingReports = "missing_reports"
    /// Mean client satisfaction (1–5) over the reports of the window (needs `min_reports`).
    case averageSatisfaction = "average_satisfaction"
    /// Mean satisfaction of the previous window minus this window's (a fall is positive).
    case satisfactionDrop = "satisfaction_drop"
    /// Reports that say the EA needs support.
    case needsSupport = "needs_support"
    /// Mean EA wellbeing (1–5) over the window's reports (needs `min_reports`).
    case averageWellbeing = "average_wellbeing"
    /// Mean hours worked per report over the window (needs `min_reports`).
    case averageHours = "average_hours"
    /// Reports that say the client did not respond.
    case clientUnresponsive = "client_unresponsive"

    /// The parameters it takes, with their allowed ranges.
    public var parameters: [String: ClosedRange<Double>] {
        var p: [String: ClosedRange<Double>] = ["window_days": 1...90]
        switch self {
        case .lateStarts: p["grace_minutes"] = 0...240
        case .averageSatisfaction, .satisfactionDrop, .averageWellbeing, .averageHours: p["min_reports"] = 1...60
        case .missingReports, .needsSupport, .clientUnresponsive: break
        }
        return p
    }
}

/// A rule's trigger condition, parsed from its JSON:
///
///     {"metric": "late_starts", "op": ">=", "value": "count",
///      "params": {"window_days": "window_days", "grace_minutes": 10}}
///     {"all": [ …conditions… ]}   {"any": [ …conditions… ]}
///
/// A string names one of the rule's thresholds (so adjusting the threshold adjusts the rule);
/// a number is fixed.
public indirect enum RuleCondition: Sendable, Equatable {
    case compare(metric: RuleMetric, op: Comparison, value: Operand, params: [String: Operand])
    case all([RuleCondition])
    case any([RuleCondition])

    public enum Comparison: String, Sendable { case ge = ">=", gt = ">", le = "<=", lt = "<", eq = "==" }

    public enum Operand: Sendable, Equatable {
        case threshold(String)
        case number(Double)
    }

    public struct Invalid: Error, Equatable, CustomStringConvertible {
        public var description: String
    }

    /// From the condition's JSON text.
    public init(json data: Data) throws(Invalid) {
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: data) else {
            throw Invalid(description: "the condition is not JSON")
        }
        try self.init(value)
    }

    public init(_ json: JSONValue) throws(Invalid) {
        guard case .object(let object) = json else { throw Invalid(description: "a condition must be a JSON object") }
        if let list = object["all"] ?? object["any"] {
            guard object.count == 1, case .array(let items) = list, !items.isEmpty, items.count <= 10 else {
                throw Invalid(description: "\"all\" or \"any\" takes a list of 1 to 10 conditions, alone")
            }
            var parts: [RuleCondition] = []
            for item in items { parts.append(try RuleCondition(item)) }
            self = object["all"] != nil ? .all(parts) : .any(parts)
            return
        }
        guard case .string(let name) = object["metric"], let metric = RuleMetric(rawValue: name) else {
            throw Invalid(description: "\"metric\" must be one of \(RuleMetric.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard case .string(let opText) = object["op"], let op = Comparison(rawValue: opText) else {
            throw Invalid(description: "\"op\" must be one of >=, >, <=, <, ==")
        }
        guard let value = object["value"].flatMap(Self.operand) else {
            throw Invalid(description: "\"value\" must be a number or the name of a threshold")
        }
        var params: [String: Operand] = [:]
        if let raw = object["params"] {
            guard case .object(let given) = raw else { throw Invalid(description: "\"params\" must be an object") }
            for (key, raw) in given {
                guard metric.parameters[key] != nil else { throw Invalid(description: "\(name) takes no parameter \"\(key)\"") }
                guard let operand = Self.operand(raw) else {
                    throw Invalid(description: "parameter \"\(key)\" must be a number or a threshold name")
                }
                params[key] = operand
            }
        }
        guard params["window_days"] != nil else { throw Invalid(description: "\(name) needs params.window_days") }
        let unknown = Set(object.keys).subtracting(["metric", "op", "value", "params"])
        guard unknown.isEmpty else { throw Invalid(description: "unknown keys: \(unknown.sorted().joined(separator: ", "))") }
        self = .compare(metric: metric, op: op, value: value, params: params)
    }

    static func operand(_ raw: JSONValue) -> Operand? {
        switch raw {
        case .string(let s) where !s.isEmpty: .threshold(s)
        case .number(let n): .number(n)
        default: nil
        }
    }

    /// The thresholds the condition names.
    public var thresholdNames: Set<String> {
        switch self {
        case .compare(_, _, let value, let params):
            Set(([value] + Array(params.values)).compactMap { if case .threshold(let n) = $0 { n } else { nil } })
        case .all(let parts), .any(let parts): parts.reduce(into: Set<String>()) { $0.formUnion($1.thresholdNames) }
        }
    }

    static func resolve(_ operand: Operand?, _ thresholds: [String: Double]) -> Double? {
        switch operand {
        case .number(let n): n
        case .threshold(let name): thresholds[name]
        case nil: nil
        }
    }
}

/// One compared measure, as evidence.
public struct RuleFinding: Sendable, Equatable {
    public var metric: RuleMetric
    public var op: RuleCondition.Comparison
    /// nil when there were too few facts to measure (then it does not hold).
    public var measured: Double?
    public var threshold: Double
    public var from: LocalDate
    public var through: LocalDate
    /// The days whose facts counted.
    public var days: [LocalDate]
    public var holds: Bool
}

/// Evaluates conditions against facts: pure, tested table by table without I/O.
public enum RuleEngine {
    /// Whether `condition` holds for `facts` under `thresholds`, and every finding on the way.
    /// A condition on a PTO day never holds (nobody is judged on a day off).
    public static func evaluate(_ condition: RuleCondition, thresholds: [String: Double], facts: PairingFacts)
        -> (fires: Bool, findings: [RuleFinding])
    {
        if facts.pto.contains(facts.asOf) { return (false, []) }
        var findings: [RuleFinding] = []
        let fires = holds(condition, thresholds, facts, &findings)
        return (fires, findings)
    }

    static func holds(_ c: RuleCondition, _ t: [String: Double], _ facts: PairingFacts, _ out: inout [RuleFinding]) -> Bool {
        switch c {
        case .all(let parts): return parts.map { holds($0, t, facts, &out) }.allSatisfy { $0 }
        case .any(let parts): return parts.map { holds($0, t, facts, &out) }.contains(true)
        case .compare(let metric, let op, let value, let params):
            let p = params.compactMapValues { RuleCondition.resolve($0, t) }
            guard let threshold = RuleCondition.resolve(value, t) else { return false }
            let f = measure(metric, p, facts)
            let ok = f.value.map { compare($0, op, threshold) } ?? false
            out.append(RuleFinding(metric: metric, op: op, measured: f.value, threshold: threshold, from: f.from, through: f.through,
                                   days: f.days, holds: ok))
            return ok
        }
    }

    static func compare(_ a: Double, _ op: RuleCondition.Comparison, _ b: Double) -> Bool {
        switch op {
        case .ge: a >= b
        case .gt: a > b
        case .le: a <= b
        case .lt: a < b
        case .eq: abs(a - b) < 1e-9
        }
    }

    /// Days that count in [from, through]: on or after the pairing's start, not PTO.
    static func counted(_ from: LocalDate, _ through: LocalDate, _ facts: PairingFacts) -> [LocalDate] {
        from.through(through).filter { $0 >= facts.pairingStart && !facts.pto.contains($0) }
    }

    static func measure(_ metric: RuleMetric, _ p: [String: Double], _ facts: PairingFacts)
        -> (value: Double?, from: LocalDate, through: LocalDate, days: [LocalDate])
    {
        let window = max(1, Int(p["window_days"] ?? 1))
        let minReports = Int(p["min_reports"] ?? 1)
        // Logs: the window ends today. Reports: it ends yesterday (today's is not due yet).
        let logsFrom = facts.asOf.adding(days: -(window - 1)), logsThrough = facts.asOf
        let reportsThrough = facts.asOf.adding(days: -1), reportsFrom = reportsThrough.adding(days: -(window - 1))
        let reportDays = Set(counted(reportsFrom, reportsThrough, facts))
        let reports = facts.reports.filter { reportDays.contains($0.date) }.sorted { $0.date < $1.date }
        func mean(_ values: [Double]) -> Double? { values.count >= minReports && !values.isEmpty ? values.reduce(0, +) / Double(values.count) : nil }
        switch metric {
        case .lateStarts:
            let days = Set(counted(logsFrom, logsThrough, facts))
            let grace = Int(p["grace_minutes"] ?? 0)
            let late = facts.logs.filter { days.contains($0.date) && $0.minutesLate > grace }.map(\.date).sorted()
            return (Double(late.count), logsFrom, logsThrough, late)
        case .missingReports:
            let reported = Set(facts.reports.map(\.date))
            let missing = reportDays.filter { $0.isWeekday && !reported.contains($0) }.sorted()
            return (Double(missing.count), reportsFrom, reportsThrough, missing)
        case .averageSatisfaction:
            return (mean(reports.map { Double($0.clientSatisfaction) }), reportsFrom, reportsThrough, reports.map(\.date))
        case .averageWellbeing:
            return (mean(reports.map { Double($0.eaWellbeing) }), reportsFrom, reportsThrough, reports.map(\.date))
        case .averageHours:
            return (mean(reports.map(\.hoursWorked)), reportsFrom, reportsThrough, reports.map(\.date))
        case .needsSupport:
            let days = reports.filter(\.needsSupport).map(\.date)
            return (Double(days.count), reportsFrom, reportsThrough, days)
        case .clientUnresponsive:
            let days = reports.filter(\.clientUnresponsive).map(\.date)
            return (Double(days.count), reportsFrom, reportsThrough, days)
        case .satisfactionDrop:
            let earlierThrough = reportsFrom.adding(days: -1), earlierFrom = earlierThrough.adding(days: -(window - 1))
            let earlierDays = Set(counted(earlierFrom, earlierThrough, facts))
            let earlier = facts.reports.filter { earlierDays.contains($0.date) }
            guard let now = mean(reports.map { Double($0.clientSatisfaction) }),
                  let before = mean(earlier.map { Double($0.clientSatisfaction) })
            else { return (nil, earlierFrom, reportsThrough, []) }
            return (before - now, earlierFrom, reportsThrough, (earlier.map(\.date) + reports.map(\.date)).sorted())
        }
    }
}

extension RuleCondition {
    /// What is wrong with this condition under `thresholds`, as sentences (empty when it can
    /// be used): a threshold it names without a value, a threshold it does not use, a value
    /// that is not finite, a parameter outside its metric's range.
    public func problems(thresholds: [String: Double]) -> [String] {
        var out: [String] = []
        for name in thresholdNames.subtracting(thresholds.keys).sorted() { out.append("threshold \"\(name)\" has no value") }
        for name in Set(thresholds.keys).subtracting(thresholdNames).sorted() { out.append("the condition does not use threshold \"\(name)\"") }
        for (name, value) in thresholds.sorted(by: { $0.key < $1.key }) where !value.isFinite {
            out.append("threshold \"\(name)\" must be a finite number")
        }
        func walk(_ c: RuleCondition) {
            switch c {
            case .all(let parts), .any(let parts): parts.forEach(walk)
            case .compare(let metric, _, let value, let params):
                if case .number(let n) = value, !n.isFinite { out.append("\(metric.rawValue): value must be a finite number") }
                for (key, operand) in params.sorted(by: { $0.key < $1.key }) {
                    guard let range = metric.parameters[key], let v = RuleCondition.resolve(operand, thresholds) else { continue }
                    if !range.contains(v) {
                        out.append("\(metric.rawValue).\(key) must be within \(range.lowerBound.formatted())…\(range.upperBound.formatted()), not \(v.formatted())")
                    }
                }
            }
        }
        walk(self)
        return out
    }

    /// How many days before the day evaluated its facts reach back (the longest window, twice
    /// for a comparison with the window before), so that evaluation reads no more than it needs.
    public func lookbackDays(thresholds: [String: Double]) -> Int {
        switch self {
        case .all(let parts), .any(let parts): return parts.map { $0.lookbackDays(thresholds: thresholds) }.max() ?? 1
        case .compare(let metric, _, _, let params):
            let window = Int(min(90, max(1, RuleCondition.resolve(params["window_days"], thresholds) ?? 1)))
            return (metric == .satisfactionDrop ? 2 * window : window) + 1
        }
    }
}

/// An alert's evidence, stored as JSON: the day evaluated, the thresholds in force, and every
/// measure compared (those that held and those that did not).
public struct RuleEvidence: Sendable, Encodable, Equatable {
    public struct Finding: Sendable, Encodable, Equatable {
        public var metric: String
        public var op: String
        public var measured: Double?
        public var threshold: Double
        public var from: String
        public var through: String
        public var days: [String]
        public var holds: Bool
    }

    public var asOf: String
    public var thresholds: [String: Double]
    public var findings: [Finding]
    /// The latest day among the findings that held (the day evaluated when none names one):
    /// an alert once closed is raised again only on facts later than this.
    public var through: LocalDate

    enum CodingKeys: String, CodingKey { case asOf = "as_of", thresholds, findings }

    public init(asOf: LocalDate, thresholds: [String: Double], findings: [RuleFinding]) {
        self.asOf = asOf.description
        self.thresholds = thresholds
        self.findings = findings.map {
            Finding(metric: $0.metric.rawValue, op: $0.op.rawValue, measured: $0.measured, threshold: $0.threshold,
                    from: $0.from.description, through: $0.through.description, days: $0.days.map(\.description), holds: $0.holds)
        }
        through = findings.filter(\.holds).flatMap(\.days).max() ?? asOf
    }

    /// Compact JSON with sorted keys.
    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}

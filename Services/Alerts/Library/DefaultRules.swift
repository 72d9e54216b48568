import Foundation

/// A rule as data (seed 002's `alert_rules` columns): what it watches, when it fires, and what
/// to tell the operations manager.
public struct RuleDefinition: Sendable, Equatable {
    public enum Severity: String, Sendable, CaseIterable {
        case low, medium, high, critical
    }

    public var number: Int
    public var name: String
    /// What kind of problem it finds (lateness, reporting, satisfaction, support, workload, wellbeing, client).
    public var type: String
    public var severity: Severity
    public var enabled: Bool
    /// The condition's JSON (`RuleCondition`).
    public var condition: String
    /// Where its facts come from: `start_of_day_logs`, `end_of_day_reports`, or both.
    public var dataSource: String
    public var rationale: String
    public var title: String
    public var description: String
    public var suggestedAction: String
    /// The thresholds as shipped; an admin adjusts copies of them (a new rule version).
    public var defaultThresholds: [String: Double]
}

/// The rules CareMesh ships with (seeded once; an admin's edits are new versions and are
/// never overwritten).
public enum DefaultRules {
    static func metric(_ name: String, _ op: String, value: String, params: [String: String]) -> String {
        let p = params.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \"\($0.value)\"" }.joined(separator: ", ")
        return #"{"metric": "\#(name)", "op": "\#(op)", "value": "\#(value)", "params": {\#(p)}}"#
    }

    public static let all: [RuleDefinition] = [
        RuleDefinition(
            number: 1, name: "repeated-late-starts", type: "lateness", severity: .medium, enabled: true,
            condition: metric("late_starts", ">=", value: "late_count",
                              params: ["window_days": "window_days", "grace_minutes": "grace_minutes"]),
            dataSource: "start_of_day_logs",
            rationale: "Clients notice a pattern of late starts long before they mention it; catching it early keeps the pairing healthy.",
            title: "Repeated late starts",
            description: "The EA started late several times in the last two weeks.",
            suggestedAction: "Check in with the EA about their morning schedule; adjust the expected show-up time if it no longer fits.",
            defaultThresholds: ["late_count": 3, "window_days": 14, "grace_minutes": 10]),
        RuleDefinition(
            number: 2, name: "missing-end-of-day-report", type: "reporting", severity: .low, enabled: true,
            condition: metric("missing_reports", ">=", value: "missing_count", params: ["window_days": "window_days"]),
            dataSource: "end_of_day_reports",
            rationale: "End-of-day reports are how the client and the team see the work; a missing one hides problems.",
            title: "Missing end-of-day report",
            description: "A working day went by without an end-of-day report.",
            suggestedAction: "Remind the EA to file yesterday's report.",
            defaultThresholds: ["missing_count": 1, "window_days": 1]),
        RuleDefinition(
            number: 3, name: "falling-client-satisfaction", type: "satisfaction", severity: .high, enabled: true,
            condition: metric("satisfaction_drop", ">=", value: "drop", params: ["window_days": "window_days", "min_reports": "min_reports"]),
            dataSource: "end_of_day_reports",
            rationale: "A falling trend predicts churn better than any single low score.",
            title: "Client satisfaction is falling",
            description: "Average client satisfaction this week is well below the week before.",
            suggestedAction: "Call the client to hear what changed; review the EA's recent reports together.",
            defaultThresholds: ["drop": 1, "window_days": 7, "min_reports": 3]),
        RuleDefinition(
            number: 4, name: "repeated-needs-support", type: "support", severity: .high, enabled: true,
            condition: metric("needs_support", ">=", value: "support_count", params: ["window_days": "window_days"]),
            dataSource: "end_of_day_reports",
            rationale: "An EA who asks for support more than once a week is stuck; unanswered, it becomes attrition.",
            title: "EA repeatedly needs support",
            description: "The EA flagged that they need support several times this week.",
            suggestedAction: "Schedule a coaching session this week and add a coaching note.",
            defaultThresholds: ["support_count": 2, "window_days": 7]),
        RuleDefinition(
            number: 5, name: "low-client-satisfaction", type: "satisfaction", severity: .critical, enabled: true,
            condition: metric("average_satisfaction", "<=", value: "satisfaction", params: ["window_days": "window_days", "min_reports": "min_reports"]),
            dataSource: "end_of_day_reports",
            rationale: "A client this unhappy for two weeks is at risk of leaving.",
            title: "Low client satisfaction",
            description: "Average client satisfaction over the last two weeks is low.",
            suggestedAction: "Escalate to the account lead; consider re-pairing.",
            defaultThresholds: ["satisfaction": 2.5, "window_days": 14, "min_reports": 5]),
        RuleDefinition(
            number: 6, name: "sustained-overtime", type: "workload", severity: .medium, enabled: true,
            condition: metric("average_hours", ">=", value: "hours", params: ["window_days": "window_days", "min_reports": "min_reports"]),
            dataSource: "end_of_day_reports",
            rationale: "Long days week after week burn EAs out and hide scope creep.",
            title: "Sustained overtime",
            description: "The EA has averaged long days this week.",
            suggestedAction: "Review the client's scope and the EA's hours; agree on priorities.",
            defaultThresholds: ["hours": 10, "window_days": 7, "min_reports": 3]),
        RuleDefinition(
            number: 7, name: "low-ea-wellbeing", type: "wellbeing", severity: .medium, enabled: true,
            condition: metric("average_wellbeing", "<=", value: "wellbeing", params: ["window_days": "window_days", "min_reports": "min_reports"]),
            dataSource: "end_of_day_reports",
            rationale: "How the EA feels about the work is the earliest sign of a pairing going wrong.",
            title: "Low EA wellbeing",
            description: "The EA has rated their day poorly most of this week.",
            suggestedAction: "Talk with the EA one to one; note what you agree in a coaching note.",
            defaultThresholds: ["wellbeing": 2, "window_days": 7, "min_reports": 3]),
        RuleDefinition(
            number: 8, name: "client-unresponsive", type: "client", severity: .medium, enabled: true,
            condition: metric("client_unresponsive", ">=", value: "unresponsive_count", params: ["window_days": "window_days"]),
            dataSource: "end_of_day_reports",
            rationale: "An EA waiting on an unresponsive client cannot do the work the client will later judge.",
            title: "Client unresponsive",
            description: "The EA reported several days this week on which the client did not respond.",
            suggestedAction: "Reach out to the client to re-establish a daily touchpoint.",
            defaultThresholds: ["unresponsive_count": 3, "window_days": 7]),
    ]
}

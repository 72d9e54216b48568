import AlertsService
import CareMeshContracts
import Foundation
import Testing

/// Local days and lateness across daylight-saving changes, and the rule engine, table by table
/// without I/O.
@Suite struct RuleEngineTests {
    static func instant(_ iso: String) -> Date { ISO8601DateFormatter().date(from: iso)! }
    static func day(_ text: String) -> LocalDate { LocalDate(text)! }
    static let paris = TimeZone(identifier: "Europe/Paris")!
    static let newYork = TimeZone(identifier: "America/New_York")!

    @Test("local dates: parsing only real days, arithmetic across months and years, ISO weekdays")
    func localDates() {
        #expect(LocalDate("2026-02-29") == nil)
        #expect(LocalDate("2028-02-29") != nil)
        #expect(LocalDate("2026-13-01") == nil)
        #expect(LocalDate("26-01-01") == nil)
        #expect(Self.day("2026-12-31").adding(days: 1) == Self.day("2027-01-01"))
        #expect(Self.day("2026-03-01").adding(days: -1) == Self.day("2026-02-28"))
        #expect(Self.day("2026-03-25").days(to: Self.day("2026-04-02")) == 8)
        #expect(Self.day("2026-11-23").isoWeekday == 1) // a Monday
        #expect(Self.day("2026-11-22").isoWeekday == 7)
        #expect(!Self.day("2026-11-21").isWeekday)
        #expect(Self.day("2026-03-28").through(Self.day("2026-03-30")).map(\.description) == ["2026-03-28", "2026-03-29", "2026-03-30"])
    }

    /// (time zone, expected show-up, logged at (UTC), local day, minutes late)
    static let latenessCases: [(TimeZone, String, String, String, Int)] = [
        // Paris, 09:00: the week before and after the spring change (UTC+1 → UTC+2). A fixed
        // offset would call one of these 65 minutes late or 55 early.
        (paris, "09:00", "2026-03-27T08:05:00Z", "2026-03-27", 5),
        (paris, "09:00", "2026-03-30T07:05:00Z", "2026-03-30", 5),
        // And around the autumn change (UTC+2 → UTC+1): both on time.
        (paris, "09:00", "2026-10-23T07:00:00Z", "2026-10-23", 0),
        (paris, "09:00", "2026-10-26T08:00:00Z", "2026-10-26", 0),
        (paris, "09:00", "2026-10-26T07:30:00Z", "2026-10-26", 0), // early is not late
        // 02:30 does not exist on 29 March in Paris: due when the clock reaches it (03:00).
        (paris, "02:30", "2026-03-29T01:10:00Z", "2026-03-29", 10),
        // New York, 08:30, across its own changes (8 March and 1 November 2026).
        (newYork, "08:30", "2026-03-06T13:45:00Z", "2026-03-06", 15),
        (newYork, "08:30", "2026-03-09T12:45:00Z", "2026-03-09", 15),
        (newYork, "08:30", "2026-11-02T13:31:00Z", "2026-11-02", 1),
        // The local day, not the UTC day: 23:30 in New York is 04:30 UTC the next day.
        (newYork, "22:00", "2026-11-03T04:30:00Z", "2026-11-02", 90),
    ]

    @Test("lateness is wall-clock time in the staff member's time zone, right across DST", arguments: 0..<latenessCases.count)
    func lateness(_ i: Int) {
        let (zone, expected, logged, day, minutes) = Self.latenessCases[i]
        let found = Lateness.of(loggedAt: Self.instant(logged), expected: LocalTime(expected)!, timeZone: zone)
        #expect(found.date == Self.day(day))
        #expect(found.minutesLate == minutes)
    }

    @Test("the daily run is at the same wall-clock time every day, whatever the clocks did")
    func nextDailyRun() {
        let six = LocalTime("06:00")!
        // Saturday 28 March 07:00 Paris (CET) → Sunday 29 March 06:00 CEST = 04:00 UTC.
        #expect(Lateness.next(six, after: Self.instant("2026-03-28T06:00:00Z"), in: Self.paris) == Self.instant("2026-03-29T04:00:00Z"))
        // Before 06:00 the same day.
        #expect(Lateness.next(six, after: Self.instant("2026-10-25T03:00:00Z"), in: Self.paris) == Self.instant("2026-10-25T05:00:00Z"))
        #expect(LocalTime("24:00") == nil && LocalTime("9:00") == nil && LocalTime("09:60") == nil)
    }

    // MARK: - Rules

    static func condition(_ json: String) throws -> RuleCondition { try RuleCondition(json: Data(json.utf8)) }

    static let lateStarts = #"{"metric": "late_starts", "op": ">=", "value": "count", "params": {"window_days": "window_days", "grace_minutes": "grace_minutes"}}"#

    @Test("late starts: more than the grace, inside the window, PTO days and days before the pairing not counted")
    func lateStartsRule() throws {
        let rule = try Self.condition(Self.lateStarts)
        #expect(rule.thresholdNames == ["count", "window_days", "grace_minutes"])
        let thresholds = ["count": 3.0, "window_days": 14, "grace_minutes": 10]
        let asOf = Self.day("2026-11-20")
        var facts = PairingFacts(asOf: asOf, pairingStart: Self.day("2026-10-01"), logs: [
            .init(date: asOf, minutesLate: 15),
            .init(date: asOf.adding(days: -2), minutesLate: 11),
            .init(date: asOf.adding(days: -3), minutesLate: 10), // within the grace
            .init(date: asOf.adding(days: -13), minutesLate: 40),
            .init(date: asOf.adding(days: -14), minutesLate: 90), // outside the 14 days
        ])
        var result = RuleEngine.evaluate(rule, thresholds: thresholds, facts: facts)
        #expect(result.fires)
        #expect(result.findings.first?.measured == 3)
        #expect(result.findings.first?.days == [asOf.adding(days: -13), asOf.adding(days: -2), asOf])
        #expect(result.findings.first?.from == asOf.adding(days: -13))
        // A PTO day in the window does not count against them …
        facts.pto = [asOf.adding(days: -2)]
        result = RuleEngine.evaluate(rule, thresholds: thresholds, facts: facts)
        #expect(!result.fires && result.findings.first?.measured == 2)
        // … nor before the pairing began; and on a PTO day nothing is evaluated at all.
        facts.pto = []
        facts.pairingStart = asOf.adding(days: -5)
        #expect(RuleEngine.evaluate(rule, thresholds: thresholds, facts: facts).findings.first?.measured == 2)
        facts.pairingStart = Self.day("2026-10-01")
        facts.pto = [asOf]
        result = RuleEngine.evaluate(rule, thresholds: thresholds, facts: facts)
        #expect(!result.fires && result.findings.isEmpty)
        // Adjusting a threshold adjusts the rule.
        facts.pto = []
        #expect(!RuleEngine.evaluate(rule, thresholds: ["count": 4, "window_days": 14, "grace_minutes": 10], facts: facts).fires)
        #expect(RuleEngine.evaluate(rule, thresholds: ["count": 4, "window_days": 14, "grace_minutes": 5], facts: facts).fires)
    }

    @Test("missing reports: weekdays of the window up to yesterday, without weekends, PTO or days before the pairing")
    func missingReportsRule() throws {
        let rule = try Self.condition(#"{"metric": "missing_reports", "op": ">=", "value": 2, "params": {"window_days": 7}}"#)
        // Friday 20 November 2026: the window is Fri 13 … Thu 19 (5 weekdays).
        let asOf = Self.day("2026-11-20")
        let reported = ["2026-11-13", "2026-11-16", "2026-11-17"].map(Self.day)
        var facts = PairingFacts(asOf: asOf, pairingStart: Self.day("2026-01-01"), reports: reported.map { .init(date: $0) })
        var result = RuleEngine.evaluate(rule, thresholds: [:], facts: facts)
        #expect(result.fires)
        #expect(result.findings.first?.days == ["2026-11-18", "2026-11-19"].map(Self.day))
        // A report today does not stand for yesterday's; a weekend report does not count as missing either way.
        facts.reports.append(.init(date: asOf))
        #expect(RuleEngine.evaluate(rule, thresholds: [:], facts: facts).findings.first?.measured == 2)
        facts.pto = [Self.day("2026-11-19")]
        result = RuleEngine.evaluate(rule, thresholds: [:], facts: facts)
        #expect(!result.fires && result.findings.first?.measured == 1)
        facts.pto = []
        facts.pairingStart = Self.day("2026-11-19")
        #expect(RuleEngine.evaluate(rule, thresholds: [:], facts: facts).findings.first?.measured == 1)
    }

    @Test("falling satisfaction compares two windows and needs enough reports in each; all/any combine")
    func satisfactionRules() throws {
        let drop = try Self.condition(#"{"metric": "satisfaction_drop", "op": ">=", "value": "drop", "params": {"window_days": 7, "min_reports": 2}}"#)
        let asOf = Self.day("2026-11-20")
        let earlier = (8...14).map { PairingFacts.Report(date: asOf.adding(days: -$0), clientSatisfaction: $0 % 2 == 0 ? 5 : 4) }
        let recent = (1...7).map { PairingFacts.Report(date: asOf.adding(days: -$0), clientSatisfaction: 3, needsSupport: $0 <= 2) }
        var facts = PairingFacts(asOf: asOf, pairingStart: Self.day("2026-01-01"), reports: earlier + recent)
        var result = RuleEngine.evaluate(drop, thresholds: ["drop": 1], facts: facts)
        #expect(result.fires)
        let measured = try #require(result.findings.first?.measured)
        #expect(abs(measured - (4.571_428 - 3)) < 0.001)
        #expect(!RuleEngine.evaluate(drop, thresholds: ["drop": 2], facts: facts).fires)
        // Too few earlier reports to compare: no finding holds.
        facts.reports = recent + [earlier[0]]
        result = RuleEngine.evaluate(drop, thresholds: ["drop": 1], facts: facts)
        #expect(!result.fires && result.findings.first?.measured == nil)

        facts.reports = earlier + recent
        let both = try Self.condition("""
            {"all": [\(#"{"metric": "needs_support", "op": ">=", "value": 2, "params": {"window_days": 7}}"#),
                     \(#"{"metric": "average_satisfaction", "op": "<=", "value": 3, "params": {"window_days": 7, "min_reports": 3}}"#)]}
            """)
        result = RuleEngine.evaluate(both, thresholds: [:], facts: facts)
        #expect(result.fires && result.findings.count == 2)
        let either = try Self.condition("""
            {"any": [\(#"{"metric": "needs_support", "op": ">=", "value": 5, "params": {"window_days": 7}}"#),
                     \(#"{"metric": "average_hours", "op": ">=", "value": 10, "params": {"window_days": 7}}"#)]}
            """)
        #expect(!RuleEngine.evaluate(either, thresholds: [:], facts: facts).fires)
    }

    @Test("conditions that are not the language are refused with the reason")
    func badConditions() {
        let bad = [
            "[]", "not json", #"{"metric": "mood", "op": ">=", "value": 1, "params": {"window_days": 7}}"#,
            #"{"metric": "late_starts", "op": "=>", "value": 1, "params": {"window_days": 7}}"#,
            #"{"metric": "late_starts", "op": ">=", "value": true, "params": {"window_days": 7}}"#,
            #"{"metric": "late_starts", "op": ">=", "value": 1, "params": {"window_days": 7, "min_reports": 2}}"#,
            #"{"metric": "late_starts", "op": ">=", "value": 1}"#,
            #"{"metric": "late_starts", "op": ">=", "value": 1, "params": {"window_days": 7}, "extra": 1}"#,
            #"{"all": []}"#,
        ]
        for text in bad {
            #expect(throws: RuleCondition.Invalid.self, "\(text)") { try RuleCondition(json: Data(text.utf8)) }
        }
    }
}

/// The rules CareMesh ships with: each parses, names only thresholds it ships, keeps its
/// parameters in their ranges, and fires on the pattern it describes but not on a good week.
@Suite struct DefaultRulesTests {
    @Test("every shipped rule is a valid condition over its own thresholds")
    func valid() throws {
        #expect(DefaultRules.all.count >= 6)
        #expect(Set(DefaultRules.all.map(\.number)).count == DefaultRules.all.count)
        #expect(Set(DefaultRules.all.map(\.name)).count == DefaultRules.all.count)
        for rule in DefaultRules.all {
            let condition = try RuleCondition(json: Data(rule.condition.utf8))
            #expect(condition.problems(thresholds: rule.defaultThresholds) == [], "\(rule.name)")
        }
    }

    @Test("a good week fires nothing; each rule fires on its own pattern")
    func patterns() throws {
        let asOf = LocalDate("2026-11-20")! // a Friday
        let days = (1...14).map { asOf.adding(days: -$0) }
        let good = PairingFacts(asOf: asOf, pairingStart: LocalDate("2026-01-01")!,
                                logs: days.map { .init(date: $0, minutesLate: 0) },
                                reports: days.map { .init(date: $0, hoursWorked: 8, clientSatisfaction: 5, eaWellbeing: 4) })
        func fires(_ number: Int, _ facts: PairingFacts) throws -> Bool {
            let rule = DefaultRules.all.first { $0.number == number }!
            return RuleEngine.evaluate(try RuleCondition(json: Data(rule.condition.utf8)), thresholds: rule.defaultThresholds, facts: facts).fires
        }
        for rule in DefaultRules.all { #expect(try !fires(rule.number, good), "\(rule.name)") }

        var late = good
        for i in 0..<3 { late.logs[i].minutesLate = 25 }
        #expect(try fires(1, late))
        var missing = good
        missing.reports.removeAll { $0.date == asOf.adding(days: -1) }
        #expect(try fires(2, missing))
        var falling = good
        for i in 0..<7 { falling.reports[i].clientSatisfaction = 3 }
        #expect(try fires(3, falling))
        var support = good
        for i in 0..<2 { support.reports[i].needsSupport = true }
        #expect(try fires(4, support))
        var unhappy = good
        for i in 0..<14 { unhappy.reports[i].clientSatisfaction = 2 }
        #expect(try fires(5, unhappy))
        var overtime = good
        for i in 0..<7 { overtime.reports[i].hoursWorked = 11 }
        #expect(try fires(6, overtime))
        var tired = good
        for i in 0..<7 { tired.reports[i].eaWellbeing = 1 }
        #expect(try fires(7, tired))
        var silent = good
        for i in 0..<3 { silent.reports[i].clientUnresponsive = true }
        #expect(try fires(8, silent))
    }
}

/// What a condition may be used with, how far back it reads, the evidence it leaves, and the
/// triage of the alerts it raises, without I/O.
@Suite struct RuleUseTests {
    static let late = RuleCondition.compare(metric: .lateStarts, op: .ge, value: .threshold("count"),
                                            params: ["window_days": .threshold("days"), "grace_minutes": .number(10)])

    @Test("a condition's problems name missing, unused, non-finite and out-of-range thresholds")
    func problems() {
        #expect(Self.late.problems(thresholds: ["count": 3, "days": 14]) == [])
        #expect(Self.late.problems(thresholds: ["count": 3]) == ["threshold \"days\" has no value"])
        #expect(Self.late.problems(thresholds: ["count": 3, "days": 14, "extra": 1]) == ["the condition does not use threshold \"extra\""])
        #expect(Self.late.problems(thresholds: ["count": .infinity, "days": 14]) == ["threshold \"count\" must be a finite number"])
        #expect(Self.late.problems(thresholds: ["count": 3, "days": 91]).first?.hasPrefix("late_starts.window_days must be within 1") == true)
        let fixed = RuleCondition.compare(metric: .averageSatisfaction, op: .le, value: .number(2),
                                          params: ["window_days": .number(7), "min_reports": .number(0)])
        #expect(fixed.problems(thresholds: [:]).count == 1)
    }

    @Test("evaluation reads back the longest window, twice for a comparison with the window before")
    func lookback() {
        #expect(Self.late.lookbackDays(thresholds: ["days": 14]) == 15)
        let drop = RuleCondition.compare(metric: .satisfactionDrop, op: .ge, value: .number(1), params: ["window_days": .number(7)])
        #expect(RuleCondition.any([Self.late, drop]).lookbackDays(thresholds: ["days": 3]) == 15)
        #expect(RuleCondition.all([Self.late]).lookbackDays(thresholds: ["days": 500]) == 91)
    }

    @Test("evidence keeps every finding and is dated by the latest day among those that held")
    func evidence() throws {
        let asOf = LocalDate("2026-11-20")!
        let facts = PairingFacts(asOf: asOf, pairingStart: LocalDate("2026-01-01")!,
                                 logs: [.init(date: LocalDate("2026-11-17")!, minutesLate: 30), .init(date: LocalDate("2026-11-18")!, minutesLate: 40),
                                        .init(date: LocalDate("2026-11-19")!, minutesLate: 5)])
        let thresholds = ["count": 2.0, "days": 7]
        let (fires, findings) = RuleEngine.evaluate(Self.late, thresholds: thresholds, facts: facts)
        #expect(fires)
        let e = RuleEvidence(asOf: asOf, thresholds: thresholds, findings: findings)
        #expect(e.through == LocalDate("2026-11-18")!)
        let json = try JSONSerialization.jsonObject(with: Data(e.json.utf8)) as? [String: Any]
        #expect(json?["as_of"] as? String == "2026-11-20")
        let first = (json?["findings"] as? [[String: Any]])?.first
        #expect(first?["days"] as? [String] == ["2026-11-17", "2026-11-18"])
        #expect(first?["measured"] as? Double == 2)
        // Nothing held: dated by the day evaluated.
        #expect(RuleEvidence(asOf: asOf, thresholds: [:], findings: []).through == asOf)
    }

    @Test("triage: open and acknowledged alerts move on; resolved and dismissed are final")
    func triage() {
        #expect(RuleAlertTriage.apply(.acknowledge, to: .open) == .acknowledged)
        #expect(RuleAlertTriage.apply(.acknowledge, to: .acknowledged) == .acknowledged)
        #expect(RuleAlertTriage.apply(.assign, to: .open) == .open)
        #expect(RuleAlertTriage.apply(.assign, to: .acknowledged) == .acknowledged)
        #expect(RuleAlertTriage.apply(.resolve, to: .open) == .resolved)
        #expect(RuleAlertTriage.apply(.dismiss, to: .acknowledged) == .dismissed)
        for closed in [RuleAlertState.resolved, .dismissed] {
            for action in [RuleAlertAction.assign, .acknowledge, .resolve, .dismiss] {
                #expect(RuleAlertTriage.apply(action, to: closed) == nil)
            }
        }
    }

    @Test("a pairing's health follows its most severe open alert")
    func health() {
        #expect(PairingHealthLevel.of(openSeverities: []) == .green)
        #expect(PairingHealthLevel.of(openSeverities: [.low]) == .yellow)
        #expect(PairingHealthLevel.of(openSeverities: [.low, .medium]) == .yellow)
        #expect(PairingHealthLevel.of(openSeverities: [.low, .high]) == .red)
        #expect(PairingHealthLevel.of(openSeverities: [.critical]) == .red)
    }
}

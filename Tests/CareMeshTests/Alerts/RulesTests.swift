import AlertsService
import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import CareMeshTesting
import Foundation
import PostgresNIO
import SwiftProtobuf
import Testing

/// The rules engine (seed 002) through the router on PostgreSQL: rules as versioned data,
/// reports and logs evaluated as they arrive and daily, lateness in the EA's time zone, PTO,
/// one open alert per rule and pairing under concurrent submissions, triage and pairing
/// health, and bad input refused with nothing written.
extension AlertsTests {
    struct EA: Sendable {
        let account: TestAccount
        let zone: TimeZone
        let expected: LocalTime
        var id: String { account.id.uuidString.lowercased() }
        var today: LocalDate { LocalDate(Date(), in: zone) }
    }

    /// A new EA account with work settings (put by `admin`).
    func ea(_ s: Stack, admin: Account, zone: String = "Europe/Paris", expected: String = "09:00") async throws -> EA {
        let person = try await account(s, "ea")
        var r = Caremesh_Alerts_V1_PutStaffSettingsRequest()
        r.settings.eaID = person.id.uuidString
        r.settings.expectedShowUpTime = expected
        r.settings.timeZone = zone
        _ = try await s.client.call(AlertsMethods.putStaffSettings, request: r, options: admin.auth)
        return EA(account: person, zone: TimeZone(identifier: zone)!, expected: LocalTime(expected)!)
    }

    func pairing(_ s: Stack, admin: Account, _ ea: EA, client: String, start: LocalDate) async throws -> Caremesh_Alerts_V1_Pairing {
        var r = Caremesh_Alerts_V1_CreatePairingRequest()
        r.eaID = ea.id
        r.clientID = client
        r.startDate = start.description
        return try await s.client.call(AlertsMethods.createPairing, request: r, options: admin.auth).pairing
    }

    /// Logs `ea`'s start of `day` at their expected time plus `minutesLate` (wall clock in
    /// their zone), back-filled by `admin`.
    @discardableResult
    func logStart(_ s: Stack, admin: Account, _ ea: EA, _ day: LocalDate, minutesLate: Int) async throws
        -> Caremesh_Alerts_V1_LogStartOfDayResponse {
        var r = Caremesh_Alerts_V1_LogStartOfDayRequest()
        r.eaID = ea.id
        r.loggedAt = Google_Protobuf_Timestamp(date: ea.expected.on(day, in: ea.zone).addingTimeInterval(Double(minutesLate * 60)))
        return try await s.client.call(AlertsMethods.logStartOfDay, request: r, options: admin.auth)
    }

    func report(_ s: Stack, _ ea: EA, _ pairing: Caremesh_Alerts_V1_Pairing, _ day: LocalDate,
                _ edit: (inout Caremesh_Alerts_V1_EndOfDayReport) -> Void = { _ in }) async throws
        -> Caremesh_Alerts_V1_SubmitEndOfDayReportResponse {
        var r = Caremesh_Alerts_V1_SubmitEndOfDayReportRequest()
        r.report.pairingID = pairing.id
        r.report.reportDate = day.description
        r.report.hoursWorked = 8
        r.report.tasksCompleted = 5
        r.report.tasksPending = 2
        r.report.clientSatisfaction = 4
        r.report.eaWellbeing = 4
        r.report.highlights = "Inbox zero; travel booked."
        edit(&r.report)
        return try await s.client.call(AlertsMethods.submitEndOfDayReport, request: r, options: ea.account.auth)
    }

    func ruleAlerts(_ s: Stack, _ manager: Account, pairing: String, statuses: [Caremesh_Alerts_V1_RuleAlertStatus] = [])
        async throws -> [Caremesh_Alerts_V1_RuleAlert] {
        var r = Caremesh_Alerts_V1_ListRuleAlertsRequest()
        r.pairingID = pairing
        r.statuses = statuses
        return try await s.client.call(AlertsMethods.listRuleAlerts, request: r, options: manager.auth).alerts
    }

    func rule(_ s: Stack, _ admin: Account, named name: String) async throws -> Caremesh_Alerts_V1_AlertRule {
        let rules = try await s.client.call(AlertsMethods.listAlertRules, request: Caremesh_Alerts_V1_ListAlertRulesRequest(),
                                            options: admin.auth).rules
        return try #require(rules.first { $0.name == name })
    }

    func setRule(_ s: Stack, _ admin: Account, _ id: String, _ edit: (inout Caremesh_Alerts_V1_UpdateAlertRuleRequest) -> Void)
        async throws -> Caremesh_Alerts_V1_AlertRule {
        var r = Caremesh_Alerts_V1_UpdateAlertRuleRequest()
        r.id = id
        edit(&r)
        return try await s.client.call(AlertsMethods.updateAlertRule, request: r, options: admin.auth).rule
    }

    func pairingHealth(_ s: Stack, _ manager: Account, _ pairing: Caremesh_Alerts_V1_Pairing) async throws -> Caremesh_Alerts_V1_PairingHealth {
        var r = Caremesh_Alerts_V1_ListPairingsRequest()
        r.eaID = pairing.eaID
        r.clientID = pairing.clientID
        return try #require(try await s.client.call(AlertsMethods.listPairings, request: r, options: manager.auth).pairings.first).healthStatus
    }

    @Test("rules are seeded data; an edit is a new version, alerts keep the version that fired; bad edits change nothing")
    func ruleVersions() async throws {
        try await withStack { s in
            let admin = try await account(s, "admin")
            let coordinator = try await account(s, "coordinator")
            let rules = try await s.client.call(AlertsMethods.listAlertRules, request: Caremesh_Alerts_V1_ListAlertRulesRequest(),
                                                options: coordinator.auth).rules
            #expect(rules.map(\.ruleNumber) == DefaultRules.all.map { UInt32($0.number) })
            #expect(rules.allSatisfy { $0.version == 1 && $0.thresholds == $0.defaultThresholds && $0.enabled })
            let late = try await rule(s, admin, named: "repeated-late-starts")
            #expect(late.thresholds == ["late_count": 3, "window_days": 14, "grace_minutes": 10])
            #expect(late.severity == .medium)

            let v2 = try await setRule(s, admin, late.id) { $0.thresholds = ["late_count": 2]; $0.severity = .high }
            #expect(v2.version == 2)
            #expect(v2.thresholds == ["late_count": 2, "window_days": 14, "grace_minutes": 10])
            #expect(v2.defaultThresholds == late.defaultThresholds)
            #expect(v2.severity == .high)
            // Nothing changed: no new version.
            #expect(try await setRule(s, admin, late.id) { $0.thresholds = ["late_count": 2] }.version == 2)
            var old = Caremesh_Alerts_V1_GetAlertRuleRequest()
            old.id = late.id
            old.version = 1
            let v1 = try await s.client.call(AlertsMethods.getAlertRule, request: old, options: admin.auth).rule
            #expect(v1.version == 1 && v1.thresholds["late_count"] == 3 && v1.severity == .medium)

            // Bad edits: a threshold the condition does not use, a parameter out of range, a
            // condition that is not the language. Nothing is written.
            #expect(await violations { _ = try await setRule(s, admin, late.id) { $0.thresholds = ["late_cuont": 2] } } == ["thresholds"])
            #expect(await violations { _ = try await setRule(s, admin, late.id) { $0.thresholds = ["window_days": 365] } } == ["thresholds"])
            #expect(await violations {
                _ = try await setRule(s, admin, late.id) { $0.triggerCondition = #"{"metric": "vibes", "op": ">", "value": 1}"# }
            } == ["trigger_condition"])
            #expect(try await rule(s, admin, named: "repeated-late-starts").version == 2)
            #expect(try await s.count("SELECT count(*) FROM alerts.alert_rule_versions WHERE rule_id = \(UUID(uuidString: late.id)!)") == 2)
            // Only admins edit; EAs do not read rules.
            #expect(await code { _ = try await setRule(s, coordinator, late.id) { $0.enabled = false } } == .permissionDenied)
            let someone = try await ea(s, admin: admin)
            #expect(await code {
                _ = try await s.client.call(AlertsMethods.listAlertRules, request: Caremesh_Alerts_V1_ListAlertRulesRequest(),
                                            options: someone.account.auth)
            } == .permissionDenied)

            // A new rule gets the next number; its name is unique.
            var create = Caremesh_Alerts_V1_CreateAlertRuleRequest()
            create.rule.name = "scope-creep"
            create.rule.ruleType = "workload"
            create.rule.severity = .low
            create.rule.enabled = true
            create.rule.dataSource = "end_of_day_reports"
            create.rule.alertTitle = "Average day too long"
            create.rule.triggerCondition = #"{"metric": "average_hours", "op": ">", "value": "hours", "params": {"window_days": 5}}"#
            create.rule.defaultThresholds = ["hours": 9]
            let created = try await s.client.call(AlertsMethods.createAlertRule, request: create, options: admin.auth).rule
            #expect(created.ruleNumber == UInt32(DefaultRules.all.count + 1) && created.version == 1 && created.thresholds == ["hours": 9])
            #expect(await code { _ = try await s.client.call(AlertsMethods.createAlertRule, request: create, options: admin.auth) } == .alreadyExists)

            // An alert raised under v2 still names v2 after the rule moves to v3.
            let client = try await client(s, staff: admin, zone: nil)
            let today = someone.today
            let p = try await pairing(s, admin: admin, someone, client: client, start: today.adding(days: -30))
            for back in 1...2 { try await logStart(s, admin: admin, someone, today.adding(days: -back), minutesLate: 30) }
            let fired = try await ruleAlerts(s, coordinator, pairing: p.id).filter { $0.ruleName == "repeated-late-starts" }
            #expect(fired.count == 1)
            #expect(fired.first?.ruleVersion == 2 && fired.first?.severity == .high)
            _ = try await setRule(s, admin, late.id) { $0.thresholds = ["late_count": 5] }
            #expect(try await ruleAlerts(s, coordinator, pairing: p.id).first { $0.ruleName == "repeated-late-starts" }?.ruleVersion == 2)
        }
    }

    /// (name, days back that were late by 25 min, days back on PTO, fires)
    static let latenessTable: [(String, [Int], [Int], Bool)] = [
        ("three late starts in the window", [1, 3, 5], [], true),
        ("two late starts", [1, 3], [], false),
        ("a late day on PTO does not count", [1, 3, 5], [3], false),
        ("late starts before the window do not count", [1, 15, 16], [], false),
    ]

    @Test("late starts are measured in the EA's zone across DST; PTO days never count", arguments: 0..<latenessTable.count)
    func lateStarts(_ index: Int) async throws {
        let (name, late, pto, fires) = Self.latenessTable[index]
        try await withStack { s in
            let admin = try await account(s, "admin")
            let client = try await client(s, staff: admin, zone: nil)
            let ea = try await self.ea(s, admin: admin, zone: "America/New_York", expected: "08:30")
            let today = ea.today
            let p = try await pairing(s, admin: admin, ea, client: client, start: today.adding(days: -40))
            for back in pto {
                var r = Caremesh_Alerts_V1_AddPtoRequest()
                r.pto.eaID = ea.id
                r.pto.startDate = today.adding(days: -back).description
                r.pto.endDate = r.pto.startDate
                r.pto.reason = .sick
                _ = try await s.client.call(AlertsMethods.addPto, request: r, options: ea.account.auth)
            }
            for back in 1...16 {
                let log = try await logStart(s, admin: admin, ea, today.adding(days: -back), minutesLate: late.contains(back) ? 25 : 0)
                #expect(log.created && log.log.logDate == today.adding(days: -back).description)
                #expect(log.log.minutesLate == (late.contains(back) ? 25 : 0), "\(name)")
                #expect(log.log.expectedShowUpTime == "08:30")
            }
            let alerts = try await ruleAlerts(s, admin, pairing: p.id).filter { $0.ruleName == "repeated-late-starts" }
            #expect(alerts.count == (fires ? 1 : 0), "\(name)")
            if let alert = alerts.first {
                let evidence = try JSONSerialization.jsonObject(with: Data(alert.evidence.utf8)) as? [String: Any]
                let finding = (evidence?["findings"] as? [[String: Any]])?.first
                #expect(finding?["days"] as? [String] == late.sorted(by: >).map { today.adding(days: -$0).description })
                #expect(finding?["measured"] as? Double == 3)
            }
        }
    }

    @Test("lateness through the router is wall-clock time in the EA's zone on both sides of a DST change")
    func latenessAcrossDst() async throws {
        // (zone, expected, logged at (UTC), local day, minutes late): a fixed offset would be
        // an hour wrong on one side of each change.
        let table: [(String, String, String, String, UInt32)] = [
            ("Europe/Paris", "09:00", "2026-03-27T08:05:00Z", "2026-03-27", 5),
            ("Europe/Paris", "09:00", "2026-03-30T07:05:00Z", "2026-03-30", 5),
            ("Europe/Paris", "09:00", "2026-10-26T08:00:00Z", "2026-10-26", 0),
            ("America/New_York", "08:30", "2026-03-06T13:30:00Z", "2026-03-06", 0),
            ("America/New_York", "08:30", "2026-03-09T12:45:00Z", "2026-03-09", 15),
            ("America/New_York", "08:30", "2026-11-02T14:00:00Z", "2026-11-02", 30),
        ]
        try await withStack { s in
            let admin = try await account(s, "admin")
            var eas: [String: EA] = [:]
            for zone in Set(table.map(\.0)) { eas[zone] = try await ea(s, admin: admin, zone: zone, expected: zone == "Europe/Paris" ? "09:00" : "08:30") }
            for (zone, _, at, day, late) in table {
                var r = Caremesh_Alerts_V1_LogStartOfDayRequest()
                r.eaID = eas[zone]!.id
                r.loggedAt = Google_Protobuf_Timestamp(date: ISO8601DateFormatter().date(from: at)!)
                let log = try await s.client.call(AlertsMethods.logStartOfDay, request: r, options: admin.auth)
                #expect(log.log.logDate == day && log.log.minutesLate == late && log.log.wasLate == (late > 0), "\(zone) \(at)")
            }
            // A second log of the same local day is not a second start.
            var again = Caremesh_Alerts_V1_LogStartOfDayRequest()
            again.eaID = eas["Europe/Paris"]!.id
            again.loggedAt = Google_Protobuf_Timestamp(date: ISO8601DateFormatter().date(from: "2026-03-30T15:00:00Z")!)
            let second = try await s.client.call(AlertsMethods.logStartOfDay, request: again, options: admin.auth)
            #expect(!second.created && second.log.minutesLate == 5)
            // Only managers back-fill; an EA logs now.
            let paris = eas["Europe/Paris"]!
            #expect(await code { _ = try await s.client.call(AlertsMethods.logStartOfDay, request: again, options: paris.account.auth) }
                == .permissionDenied)
            let now = try await s.client.call(AlertsMethods.logStartOfDay, request: Caremesh_Alerts_V1_LogStartOfDayRequest(),
                                              options: paris.account.auth)
            #expect(now.created && now.log.logDate == paris.today.description)
        }
    }

    @Test("concurrent reports and logs never duplicate an alert; triage and health; a closed alert returns only on later facts")
    func concurrentSubmissionsAndTriage() async throws {
        try await withStack { s in
            let admin = try await account(s, "admin")
            let coordinator = try await account(s, "coordinator")
            let client = try await client(s, staff: admin, zone: nil)
            let ea = try await self.ea(s, admin: admin)
            let today = ea.today
            let p = try await pairing(s, admin: admin, ea, client: client, start: today.adding(days: -20))
            // Only the support rule, so health is its doing alone.
            for rule in DefaultRules.all where rule.name != "repeated-needs-support" {
                _ = try await setRule(s, admin, try await self.rule(s, admin, named: rule.name).id) { $0.enabled = false }
            }
            #expect(try await pairingHealth(s, coordinator, p) == .green)

            // Seven days of reports (up to the day before yesterday) at once, all asking for
            // support, each sent three times.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for back in 2...8 {
                    for _ in 0..<3 {
                        group.addTask { _ = try await report(s, ea, p, today.adding(days: -back)) { $0.needsSupport = true } }
                    }
                }
                for _ in 0..<5 { group.addTask { _ = try await logStart(s, admin: admin, ea, today.adding(days: -1), minutesLate: 0) } }
                try await group.waitForAll()
            }
            #expect(try await s.count("SELECT count(*) FROM alerts.end_of_day_reports WHERE pairing_id = \(UUID(uuidString: p.id)!)") == 7)
            #expect(try await s.count("SELECT count(*) FROM alerts.start_of_day_logs WHERE ea_id = \(ea.account.id)") == 1)
            let open = try await ruleAlerts(s, coordinator, pairing: p.id)
            #expect(open.count == 1)
            let alert = try #require(open.first)
            #expect(alert.ruleName == "repeated-needs-support" && alert.severity == .high && alert.status == .open)
            #expect(alert.eaID == ea.id && alert.clientID == client)
            #expect(try await s.count("SELECT count(*) FROM alerts.outbox WHERE type LIKE '%RuleAlertRaised' AND key = \(p.id)") == 1)
            #expect(try await pairingHealth(s, coordinator, p) == .red)

            // Triage: assign, acknowledge, resolve with notes (required).
            var assign = Caremesh_Alerts_V1_AssignRuleAlertRequest()
            assign.id = alert.id
            assign.assignedTo = coordinator.id.uuidString
            #expect(try await s.client.call(AlertsMethods.assignRuleAlert, request: assign, options: coordinator.auth).alert.assignedTo
                == coordinator.id.uuidString.lowercased())
            var ack = Caremesh_Alerts_V1_AcknowledgeRuleAlertRequest()
            ack.id = alert.id
            let acked = try await s.client.call(AlertsMethods.acknowledgeRuleAlert, request: ack, options: coordinator.auth).alert
            #expect(acked.status == .acknowledged && acked.hasAcknowledgedAt)
            #expect(await code { _ = try await s.client.call(AlertsMethods.acknowledgeRuleAlert, request: ack, options: ea.account.auth) }
                == .permissionDenied)
            // The list's filters: assignee, EA and rule; severity; a status that is none.
            var filter = Caremesh_Alerts_V1_ListRuleAlertsRequest()
            filter.assignedTo = coordinator.id.uuidString
            filter.eaID = ea.id
            filter.ruleID = alert.ruleID
            #expect(try await s.client.call(AlertsMethods.listRuleAlerts, request: filter, options: admin.auth).alerts.map(\.id) == [alert.id])
            filter.severities = [.low, .medium]
            #expect(try await s.client.call(AlertsMethods.listRuleAlerts, request: filter, options: admin.auth).alerts.isEmpty)
            filter.severities = []
            filter.assignedTo = admin.id.uuidString
            #expect(try await s.client.call(AlertsMethods.listRuleAlerts, request: filter, options: admin.auth).alerts.isEmpty)
            filter.statuses = [.unspecified]
            #expect(await violations { _ = try await s.client.call(AlertsMethods.listRuleAlerts, request: filter, options: admin.auth) }
                == ["statuses"])
            var resolve = Caremesh_Alerts_V1_ResolveRuleAlertRequest()
            resolve.id = alert.id
            #expect(await violations { _ = try await s.client.call(AlertsMethods.resolveRuleAlert, request: resolve, options: coordinator.auth) }
                == ["notes"])
            resolve.notes = "Coaching session booked for Tuesday."
            let resolved = try await s.client.call(AlertsMethods.resolveRuleAlert, request: resolve, options: coordinator.auth).alert
            #expect(resolved.status == .resolved && resolved.notes == resolve.notes && resolved.hasResolvedAt)
            #expect(await code { _ = try await s.client.call(AlertsMethods.resolveRuleAlert, request: resolve, options: coordinator.auth) }
                == .failedPrecondition)
            #expect(try await pairingHealth(s, coordinator, p) == .green)
            #expect(try await ruleAlerts(s, coordinator, pairing: p.id, statuses: [.resolved]).map(\.id) == [alert.id])

            // The same facts again raise nothing; a later day's support request does.
            _ = try await report(s, ea, p, today.adding(days: -2)) { $0.needsSupport = true }
            #expect(try await ruleAlerts(s, coordinator, pairing: p.id).isEmpty)
            #expect(try await s.count("SELECT count(*) FROM alerts.alerts WHERE pairing_id = \(UUID(uuidString: p.id)!)") == 1)
            _ = try await report(s, ea, p, today.adding(days: -1)) { $0.needsSupport = true }
            let again = try await ruleAlerts(s, coordinator, pairing: p.id)
            #expect(again.count == 1 && again.first?.id != alert.id)

            // An override holds until cleared; clearing follows the open alerts again.
            var override = Caremesh_Alerts_V1_SetPairingHealthRequest()
            override.pairingID = p.id
            override.healthStatus = .green
            let overridden = try await s.client.call(AlertsMethods.setPairingHealth, request: override, options: coordinator.auth).pairing
            #expect(overridden.healthStatus == .green && overridden.healthStatusOverride)
            override.healthStatus = .unspecified
            let cleared = try await s.client.call(AlertsMethods.setPairingHealth, request: override, options: coordinator.auth).pairing
            #expect(cleared.healthStatus == .red && !cleared.healthStatusOverride)
            var dismiss = Caremesh_Alerts_V1_DismissRuleAlertRequest()
            dismiss.id = again[0].id
            _ = try await s.client.call(AlertsMethods.dismissRuleAlert, request: dismiss, options: admin.auth)
            #expect(try await pairingHealth(s, coordinator, p) == .green)
        }
    }

    @Test("the daily evaluation is a durable timer at the EA's local time; it raises what the day shows and re-arms")
    func dailyEvaluation() async throws {
        try await withStack { s in
            let admin = try await account(s, "admin")
            let client = try await client(s, staff: admin, zone: nil)
            let ea = try await self.ea(s, admin: admin, zone: "Asia/Tokyo")
            let armed = try await s.sql("""
                SELECT extract(epoch FROM run_at)::float8 FROM alerts.jobs
                WHERE kind = 'rules-daily' AND unique_key = \(ea.id) AND state = 'scheduled'
                """).map { try $0.decode(Double.self) }
            #expect(armed.count == 1)
            let expected = Lateness.next(LocalTime(hour: 6, minute: 0)!, after: Date(), in: ea.zone).timeIntervalSince1970
            #expect(abs((armed.first ?? 0) - expected) < 1)

            let today = ea.today
            let p = try await pairing(s, admin: admin, ea, client: client, start: today.adding(days: -20))
            // Late starts logged while the rule is off raise nothing; the daily run, once it
            // is on again, does.
            let late = try await rule(s, admin, named: "repeated-late-starts")
            _ = try await setRule(s, admin, late.id) { $0.enabled = false }
            for back in 1...3 { try await logStart(s, admin: admin, ea, today.adding(days: -back), minutesLate: 45) }
            #expect(try await ruleAlerts(s, admin, pairing: p.id).filter { $0.ruleName == late.name }.isEmpty)
            _ = try await setRule(s, admin, late.id) { $0.enabled = true }
            _ = try await s.sql("UPDATE alerts.jobs SET run_at = now() WHERE kind = 'rules-daily' AND unique_key = \(ea.id) AND state = 'scheduled'")
            let fired = try await TestStack.eventually {
                let found = try await ruleAlerts(s, admin, pairing: p.id).filter { $0.ruleName == late.name }
                guard !found.isEmpty else { throw RPCError(.unavailable, "not yet evaluated") }
                return found
            }
            #expect(fired.count == 1 && fired.first?.ruleVersion == 3)
            // Re-armed for the next 06:00 in Tokyo.
            let next = try await s.sql("""
                SELECT extract(epoch FROM run_at)::float8 FROM alerts.jobs
                WHERE kind = 'rules-daily' AND unique_key = \(ea.id) AND state = 'scheduled'
                """).map { try $0.decode(Double.self) }
            #expect(next.count == 1)
            #expect(abs((next.first ?? 0) - Lateness.next(LocalTime(hour: 6, minute: 0)!, after: Date(), in: ea.zone).timeIntervalSince1970) < 1)

            // A daily job that failed for good is armed again when an alerts instance starts.
            _ = try await s.sql("UPDATE alerts.jobs SET state = 'failed', finished_at = now() WHERE kind = 'rules-daily' AND unique_key = \(ea.id) AND state = 'scheduled'")
            #expect(try await s.count("SELECT count(*) FROM alerts.jobs WHERE kind = 'rules-daily' AND state = 'scheduled'") == 0)
            try await s.withAlerts {}
            #expect(try await s.count("""
                SELECT count(*) FROM alerts.jobs WHERE kind = 'rules-daily' AND unique_key = \(ea.id) AND state = 'scheduled'
                """) == 1)
        }
    }

    @Test("bad input is INVALID_ARGUMENT naming the field, other people's records are PERMISSION_DENIED, and nothing is written")
    func badStaffInput() async throws {
        try await withStack { s in
            let admin = try await account(s, "admin")
            let coordinator = try await account(s, "coordinator")
            let client = try await client(s, staff: admin, zone: nil)

            var settings = Caremesh_Alerts_V1_PutStaffSettingsRequest()
            settings.settings.eaID = UUID().uuidString
            settings.settings.expectedShowUpTime = "9am"
            settings.settings.timeZone = "Mars/Olympus"
            settings.settings.healthcareEligibilityDate = "2026-02-30"
            #expect(await violations { _ = try await s.client.call(AlertsMethods.putStaffSettings, request: settings, options: admin.auth) }
                == ["settings.expected_show_up_time", "settings.time_zone", "settings.healthcare_eligibility_date"])
            #expect(await code { _ = try await s.client.call(AlertsMethods.putStaffSettings, request: settings, options: coordinator.auth) }
                == .permissionDenied)
            #expect(try await s.count("SELECT count(*) FROM alerts.staff_settings") == 0)

            // Pairing: the EA needs settings, the client must be known, one pairing per EA and client.
            var create = Caremesh_Alerts_V1_CreatePairingRequest()
            create.eaID = UUID().uuidString
            create.clientID = client
            create.startDate = "2026-11-01"
            #expect(await code { _ = try await s.client.call(AlertsMethods.createPairing, request: create, options: admin.auth) }
                == .failedPrecondition)
            let ea = try await self.ea(s, admin: admin)
            let other = try await self.ea(s, admin: admin)
            create.eaID = ea.id
            create.clientID = UUID().uuidString
            #expect(await code { _ = try await s.client.call(AlertsMethods.createPairing, request: create, options: admin.auth) } == .notFound)
            create.clientID = client
            create.startDate = "yesterday"
            #expect(await violations { _ = try await s.client.call(AlertsMethods.createPairing, request: create, options: admin.auth) }
                == ["start_date"])
            let p = try await pairing(s, admin: admin, ea, client: client, start: ea.today.adding(days: -10))
            #expect(await code { _ = try await pairing(s, admin: admin, ea, client: client, start: ea.today) } == .alreadyExists)

            // Reports: every field named; a future day or one before the pairing; someone else's pairing.
            #expect(await violations {
                _ = try await report(s, ea, p, ea.today) {
                    $0.hoursWorked = 25
                    $0.clientSatisfaction = 0
                    $0.eaWellbeing = 6
                    $0.tasksPending = 5_000
                    $0.blockers = String(repeating: "x", count: 4_001)
                }
            } == ["report.hours_worked", "report.client_satisfaction", "report.ea_wellbeing", "report.tasks_pending", "report.blockers"])
            #expect(await violations { _ = try await report(s, ea, p, ea.today.adding(days: 2)) } == ["report.report_date"])
            #expect(await violations { _ = try await report(s, ea, p, ea.today.adding(days: -11)) } == ["report.report_date"])
            #expect(await code { _ = try await report(s, other, p, ea.today) } == .permissionDenied)
            #expect(try await s.count("SELECT count(*) FROM alerts.end_of_day_reports") == 0)
            let filed = try await report(s, ea, p, ea.today) { $0.scopeChangeRequested = true }
            #expect(!filed.replaced && filed.report.scopeChangeRequested && filed.report.highlights == "Inbox zero; travel booked.")
            let corrected = try await report(s, ea, p, ea.today) { $0.hoursWorked = 7.25 }
            #expect(corrected.replaced && corrected.report.hoursWorked == 7.25 && corrected.report.id == filed.report.id)
            var list = Caremesh_Alerts_V1_ListEndOfDayReportsRequest()
            list.pairingID = p.id
            #expect(try await s.client.call(AlertsMethods.listEndOfDayReports, request: list, options: coordinator.auth).reports.count == 1)
            #expect(await code { _ = try await s.client.call(AlertsMethods.listEndOfDayReports, request: list, options: other.account.auth) }
                == .permissionDenied)

            // PTO: dates in order; an EA records their own only.
            var pto = Caremesh_Alerts_V1_AddPtoRequest()
            pto.pto.eaID = ea.id
            pto.pto.startDate = "2026-12-24"
            pto.pto.endDate = "2026-12-20"
            #expect(await violations { _ = try await s.client.call(AlertsMethods.addPto, request: pto, options: ea.account.auth) }
                == ["pto.end_date", "pto.reason"])
            pto.pto.endDate = "2027-01-02"
            pto.pto.reason = .vacation
            #expect(await code { _ = try await s.client.call(AlertsMethods.addPto, request: pto, options: other.account.auth) } == .permissionDenied)
            #expect(try await s.count("SELECT count(*) FROM alerts.pto_records") == 0)
            let added = try await s.client.call(AlertsMethods.addPto, request: pto, options: ea.account.auth).pto
            var listPto = Caremesh_Alerts_V1_ListPtoRequest()
            listPto.eaID = ea.id
            listPto.from = "2027-01-01"
            #expect(try await s.client.call(AlertsMethods.listPto, request: listPto, options: coordinator.auth).records.map(\.id) == [added.id])
            var delete = Caremesh_Alerts_V1_DeletePtoRequest()
            delete.id = added.id
            #expect(await code { _ = try await s.client.call(AlertsMethods.deletePto, request: delete, options: other.account.auth) }
                == .permissionDenied)
            _ = try await s.client.call(AlertsMethods.deletePto, request: delete, options: ea.account.auth)
            #expect(try await s.count("SELECT count(*) FROM alerts.pto_records") == 0)

            // Coaching notes: one per type and subject.
            var note = Caremesh_Alerts_V1_PutCoachingNoteRequest()
            note.note.noteType = .pairing
            note.note.eaID = ea.id
            note.note.content = "Keep the Monday check-in."
            #expect(await violations { _ = try await s.client.call(AlertsMethods.putCoachingNote, request: note, options: coordinator.auth) }
                == ["note.ea_id", "note.pairing_id"])
            note.note.eaID = ""
            note.note.pairingID = p.id
            let first = try await s.client.call(AlertsMethods.putCoachingNote, request: note, options: coordinator.auth).note
            note.note.content = "Monday and Thursday check-ins."
            let second = try await s.client.call(AlertsMethods.putCoachingNote, request: note, options: admin.auth).note
            #expect(first.id == second.id && second.content == "Monday and Thursday check-ins." && second.updatedBy == admin.id.uuidString.lowercased())
            #expect(await code { _ = try await s.client.call(AlertsMethods.putCoachingNote, request: note, options: ea.account.auth) } == .permissionDenied)
            var notes = Caremesh_Alerts_V1_ListCoachingNotesRequest()
            notes.pairingID = p.id
            #expect(try await s.client.call(AlertsMethods.listCoachingNotes, request: notes, options: coordinator.auth).notes.count == 1)
            #expect(try await s.count("SELECT count(*) FROM alerts.coaching_notes") == 1)
        }
    }
}

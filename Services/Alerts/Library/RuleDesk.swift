import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf
import Synchronization

/// Alert rules over staff reports (seed 002): the rules as data with their versions, their
/// evaluation against a pairing's facts (when a report or log arrives, and daily per EA at a
/// local time), and the triage of the alerts they raise.
final class RuleDesk: Sendable {
    let store: Store
    let outbox: Outbox
    let configuration: AlertsConfiguration
    let logger: Logger
    /// Rules already parsed, by id (each with the version it is).
    let parsed = Mutex<[UUID: ActiveRule]>([:])

    /// The durable daily evaluation of one EA's pairings (payload and unique key: the EA's id).
    static let dailyJob = "rules-daily"
    static let managers: Set<String> = ["admin", "coordinator"]
    static let admins: Set<String> = ["admin"]
    static let dataSources: Set<String> = ["start_of_day_logs", "end_of_day_reports", "start_of_day_logs,end_of_day_reports"]

    init(store: Store, outbox: Outbox, configuration: AlertsConfiguration, logger: Logger) {
        self.store = store
        self.outbox = outbox
        self.configuration = configuration
        self.logger = logger
    }

    // MARK: - Rules

    /// Before the service serves (on the host's start-up connection): inserts the shipped rules
    /// once (a rule already there, perhaps edited by an admin, is left as it is), and arms the
    /// daily evaluation of every EA who has none (say it failed for good, or the settings came
    /// from a restore), so that no EA silently drops out of it.
    static func prepare(on connection: PostgresConnection, configuration: AlertsConfiguration, logger: Logger) async throws {
        try await connection.withTransaction(logger: logger) { c in
            var unarmed: [(UUID, String)] = []
            for try await row in try await c.query("""
                SELECT ea_id, time_zone FROM staff_settings s
                WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE kind = \(dailyJob) AND unique_key = s.ea_id::text
                                  AND state = 'scheduled')
                """, logger: logger).decode((UUID, String).self) { unarmed.append(row) }
            let now = Date()
            for (ea, zone) in unarmed {
                guard let zone = TimeZone(identifier: zone) else { continue }
                try await armDaily(ea, zone: zone, at: configuration.dailyEvaluationAt, after: now, c, logger: logger)
            }
            for rule in DefaultRules.all {
                let thresholds = Self.json(rule.defaultThresholds)
                try await c.query("""
                    INSERT INTO alert_rules (rule_number, name, rule_type, severity, is_enabled, trigger_condition, data_source,
                        business_rationale, alert_title, alert_description, suggested_action, adjustable_thresholds, default_thresholds)
                    VALUES (\(rule.number), \(rule.name), \(rule.type), \(rule.severity.rawValue), \(rule.enabled),
                        \(rule.condition)::jsonb, \(rule.dataSource), \(rule.rationale), \(rule.title), \(rule.description),
                        \(rule.suggestedAction), \(thresholds)::jsonb, \(thresholds)::jsonb)
                    ON CONFLICT DO NOTHING
                    """, logger: logger)
            }
        }
    }

    static func json(_ thresholds: [String: Double]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return (try? encoder.encode(thresholds)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    static func thresholds(_ text: String) -> [String: Double] {
        (try? JSONDecoder().decode([String: Double].self, from: Data(text.utf8))) ?? [:]
    }

    /// The columns of a rule, the same for the rule in force (`alert_rules r`) and for one of
    /// its versions (`v`, joined to `r` for the rule's number).
    static func ruleColumns(_ t: String, updated: String) -> String {
        """
        r.id, r.rule_number, \(t).name, \(t).rule_type, \(t).severity, \(t).is_enabled, \(t).trigger_condition::text, \(t).data_source,
        \(t).business_rationale, \(t).alert_title, \(t).alert_description, \(t).suggested_action, \(t).adjustable_thresholds::text,
        \(t).default_thresholds::text, \(t).version, extract(epoch FROM \(t).\(updated))::float8
        """
    }

    /// The rule in force, read from `table` (`alert_rules`, or a CTE of rows just written).
    static func ruleSelect(from table: String = "alert_rules") -> String {
        "SELECT \(ruleColumns("r", updated: "updated_at")) FROM \(table) r"
    }

    static func rule(_ row: PostgresRandomAccessRow) throws -> Caremesh_Alerts_V1_AlertRule {
        var r = Caremesh_Alerts_V1_AlertRule()
        r.id = try row[0].decode(UUID.self).text
        r.ruleNumber = UInt32(try row[1].decode(Int32.self))
        r.name = try row[2].decode(String.self)
        r.ruleType = try row[3].decode(String.self)
        r.severity = RuleDefinition.Severity(rawValue: try row[4].decode(String.self))?.proto ?? .unspecified
        r.enabled = try row[5].decode(Bool.self)
        r.triggerCondition = try row[6].decode(String.self)
        r.dataSource = try row[7].decode(String.self)
        r.businessRationale = try row[8].decode(String.self)
        r.alertTitle = try row[9].decode(String.self)
        r.alertDescription = try row[10].decode(String.self)
        r.suggestedAction = try row[11].decode(String.self)
        r.thresholds = thresholds(try row[12].decode(String.self))
        r.defaultThresholds = thresholds(try row[13].decode(String.self))
        r.version = UInt32(try row[14].decode(Int32.self))
        r.updatedAt = Google_Protobuf_Timestamp(epochSeconds: try row[15].decode(Double.self))
        return r
    }

    static func rules(_ c: PostgresConnection, _ query: PostgresQuery, logger: Logger) async throws -> [Caremesh_Alerts_V1_AlertRule] {
        var out: [Caremesh_Alerts_V1_AlertRule] = []
        for try await row in try await c.query(query, logger: logger) { out.append(try rule(row.makeRandomAccess())) }
        return out
    }

    func listRules(_ r: Caremesh_Alerts_V1_ListAlertRulesRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_ListAlertRulesResponse
    {
        _ = try context.requireRole(Self.managers)
        var response = Caremesh_Alerts_V1_ListAlertRulesResponse()
        response.rules = try await store.withConnection { c in
            try await Self.rules(c, "\(unescaped: Self.ruleSelect()) ORDER BY r.rule_number", logger: self.logger)
        }
        return response
    }

    func getRule(_ r: Caremesh_Alerts_V1_GetAlertRuleRequest, _ context: RPCContext) async throws -> Caremesh_Alerts_V1_GetAlertRuleResponse {
        _ = try context.requireRole(Self.managers)
        var v = FieldViolations()
        let id = v.uuid(r.id, "id")
        try v.throwIfAny()
        let found = try await store.withConnection { c in
            r.version == 0
                ? try await Self.rules(c, "\(unescaped: Self.ruleSelect()) WHERE r.id = \(id!)", logger: self.logger)
                : try await Self.rules(c, """
                    SELECT \(unescaped: Self.ruleColumns("v", updated: "created_at"))
                    FROM alert_rule_versions v JOIN alert_rules r ON r.id = v.rule_id
                    WHERE v.rule_id = \(id!) AND v.version = \(Int32(clamping: r.version))
                    """, logger: self.logger)
        }
        guard let rule = found.first else { throw RPCError(.notFound, r.version == 0 ? "no such rule" : "no such rule version") }
        var response = Caremesh_Alerts_V1_GetAlertRuleResponse()
        response.rule = rule
        return response
    }

    /// The checks a rule's text fields share between creating and editing.
    static func checkTexts(_ v: inout FieldViolations, title: String, description: String, action: String, rationale: String,
                           prefix: String, titleRequired: Bool) {
        v.check(!titleRequired || !title.isEmpty, "\(prefix)alert_title", "is required")
        v.check(title.count <= 200, "\(prefix)alert_title", "must be at most 200 characters")
        v.check(description.count <= 2_000, "\(prefix)alert_description", "must be at most 2 000 characters")
        v.check(action.count <= 2_000, "\(prefix)suggested_action", "must be at most 2 000 characters")
        v.check(rationale.count <= 2_000, "\(prefix)business_rationale", "must be at most 2 000 characters")
    }

    /// A condition from its JSON, or nil with the reason added as a violation of `field`.
    static func parseCondition(_ v: inout FieldViolations, _ json: String, field: String) -> RuleCondition? {
        do {
            return try RuleCondition(json: Data(json.utf8))
        } catch {
            v.add(field, error.description)
            return nil
        }
    }

    func createRule(_ r: Caremesh_Alerts_V1_CreateAlertRuleRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_CreateAlertRuleResponse
    {
        let caller = try context.requireRole(Self.admins)
        let k = r.rule
        var v = FieldViolations()
        v.check(k.name.wholeMatch(of: /[a-z0-9][a-z0-9-]{0,62}/) != nil, "rule.name", "must be 1 to 63 lower-case letters, digits and dashes")
        v.check(k.ruleType.wholeMatch(of: /[a-z][a-z_]{0,31}/) != nil, "rule.rule_type", "must be 1 to 32 lower-case letters and underscores")
        let severity = RuleDefinition.Severity(k.severity)
        v.check(severity != nil, "rule.severity", "must be LOW, MEDIUM, HIGH or CRITICAL")
        v.check(Self.dataSources.contains(k.dataSource), "rule.data_source",
                "must be one of \(Self.dataSources.sorted().joined(separator: " | "))")
        Self.checkTexts(&v, title: k.alertTitle, description: k.alertDescription, action: k.suggestedAction,
                        rationale: k.businessRationale, prefix: "rule.", titleRequired: true)
        let defaults = k.defaultThresholds.isEmpty ? k.thresholds : k.defaultThresholds
        if let condition = Self.parseCondition(&v, k.triggerCondition, field: "rule.trigger_condition") {
            for problem in condition.problems(thresholds: defaults) { v.add("rule.default_thresholds", problem) }
        }
        try v.throwIfAny()
        let thresholds = Self.json(defaults)
        do {
            var response = Caremesh_Alerts_V1_CreateAlertRuleResponse()
            response.rule = try await store.withTransaction { c in
                try await c.lockForTransaction("alerts.alert_rules.number", logger: self.logger)
                let created = try await Self.rules(c, """
                    WITH r AS (
                        INSERT INTO alert_rules (rule_number, name, rule_type, severity, is_enabled, trigger_condition, data_source,
                            business_rationale, alert_title, alert_description, suggested_action, adjustable_thresholds,
                            default_thresholds, changed_by)
                        SELECT coalesce(max(rule_number), 0) + 1, \(k.name), \(k.ruleType), \(severity!.rawValue), \(k.enabled),
                            \(k.triggerCondition)::jsonb, \(k.dataSource), \(k.businessRationale), \(k.alertTitle), \(k.alertDescription),
                            \(k.suggestedAction), \(thresholds)::jsonb, \(thresholds)::jsonb, \(caller.userID)
                        FROM alert_rules
                        RETURNING *)
                    \(unescaped: Self.ruleSelect(from: "r"))
                    """, logger: self.logger)
                guard let rule = created.first else { throw RPCError(.internal, "the insert returned no row") }
                return rule
            }
            return response
        } catch {
            if PSQLError.violation(in: error)?.constraint == "alert_rules_name_key" {
                throw RPCError(.alreadyExists, "a rule named \(k.name) exists")
            }
            throw error
        }
    }

    func updateRule(_ r: Caremesh_Alerts_V1_UpdateAlertRuleRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_UpdateAlertRuleResponse
    {
        let caller = try context.requireRole(Self.admins)
        var v = FieldViolations()
        let id = v.uuid(r.id, "id")
        let severity = r.severity == .unspecified ? nil : RuleDefinition.Severity(r.severity)
        v.check(r.severity == .unspecified || severity != nil, "severity", "must be LOW, MEDIUM, HIGH or CRITICAL")
        Self.checkTexts(&v, title: r.alertTitle, description: r.alertDescription, action: r.suggestedAction, rationale: "",
                        prefix: "", titleRequired: false)
        try v.throwIfAny()
        var response = Caremesh_Alerts_V1_UpdateAlertRuleResponse()
        response.rule = try await store.withTransaction { c in
            guard let current = try await Self.rules(c, "\(unescaped: Self.ruleSelect()) WHERE r.id = \(id!) FOR UPDATE",
                                                     logger: self.logger).first
            else { throw RPCError(.notFound, "no such rule") }
            let conditionText = r.triggerCondition.isEmpty ? current.triggerCondition : r.triggerCondition
            var v = FieldViolations()
            var thresholds = current.thresholds
            if let condition = Self.parseCondition(&v, conditionText, field: "trigger_condition") {
                // A new condition keeps only the thresholds in force that it still names.
                if !r.triggerCondition.isEmpty { thresholds = thresholds.filter { condition.thresholdNames.contains($0.key) } }
                thresholds.merge(r.thresholds) { $1 }
                for problem in condition.problems(thresholds: thresholds) { v.add("thresholds", problem) }
            }
            try v.throwIfAny()
            let title = r.alertTitle.isEmpty ? current.alertTitle : r.alertTitle
            let description = r.alertDescription.isEmpty ? current.alertDescription : r.alertDescription
            let action = r.suggestedAction.isEmpty ? current.suggestedAction : r.suggestedAction
            let enabled = r.hasEnabled ? r.enabled : current.enabled
            let severityText = severity?.rawValue
            let updated = try await Self.rules(c, """
                WITH r AS (
                    UPDATE alert_rules SET is_enabled = \(enabled), severity = coalesce(\(severityText), severity),
                        trigger_condition = \(conditionText)::jsonb, adjustable_thresholds = \(Self.json(thresholds))::jsonb,
                        alert_title = \(title), alert_description = \(description), suggested_action = \(action),
                        changed_by = \(caller.userID)
                    WHERE id = \(id!) RETURNING *)
                \(unescaped: Self.ruleSelect(from: "r"))
                """, logger: self.logger)
            guard let rule = updated.first else { throw RPCError(.internal, "the update returned no row") }
            return rule
        }
        return response
    }

    // MARK: - Evaluation

    /// A rule in force, ready to evaluate.
    struct ActiveRule: Sendable {
        var id: UUID
        var version: Int32
        var name: String
        var title: String
        var severity: RuleDefinition.Severity
        var condition: RuleCondition
        var thresholds: [String: Double]
    }

    /// The enabled rules as they are now. A rule's condition and thresholds are parsed once per
    /// version (`parsed`); the query still runs every time, so an edit counts from the next
    /// evaluation on.
    func activeRules(_ c: PostgresConnection) async throws -> [ActiveRule] {
        var out: [ActiveRule] = []
        let rows = try await c.query("""
            SELECT id, version, name, alert_title, severity, trigger_condition::text, adjustable_thresholds::text
            FROM alert_rules WHERE is_enabled ORDER BY rule_number
            """, logger: logger)
        for try await (id, version, name, title, severity, condition, thresholds)
            in rows.decode((UUID, Int32, String, String, String, String, String).self) {
            if let known = parsed.withLock({ $0[id] }), known.version == version {
                out.append(known)
                continue
            }
            guard let severity = RuleDefinition.Severity(rawValue: severity),
                  let condition = try? RuleCondition(json: Data(condition.utf8))
            else {
                logger.error("alert rule cannot be evaluated", metadata: ["rule_id": "\(id.text)", "version": "\(version)"])
                continue
            }
            let rule = ActiveRule(id: id, version: version, name: name, title: title, severity: severity, condition: condition,
                                  thresholds: Self.thresholds(thresholds))
            parsed.withLock { $0[id] = rule }
            out.append(rule)
        }
        return out
    }

    /// One pairing to evaluate, as its caller already read it.
    struct KnownPairing: Sendable {
        var id: UUID
        var start: LocalDate
        /// The EA's time zone.
        var zone: TimeZone
    }

    /// Evaluates every enabled rule for the pairings of `ea` (or only `pairing`, which the
    /// caller has read) as of the EA's today at `now`, in the caller's transaction: raises what
    /// fires (at most one open alert per rule and pairing; a closed one again only on later
    /// facts), stores the evidence, announces each alert and updates the pairings' health.
    /// Evaluations of one EA are serialized, so each sees everything committed before it.
    func evaluate(ea: UUID, pairing known: KnownPairing? = nil, now: Date, on c: PostgresConnection) async throws
        -> [Caremesh_Alerts_V1_RuleAlert]
    {
        try await c.lockForTransaction("alerts.rules.ea:\(ea.text)", logger: logger)
        var pairings: [(id: UUID, start: LocalDate)] = known.map { [($0.id, $0.start)] } ?? []
        var zone = known?.zone
        if known == nil {
            for try await (id, start, tz) in try await c.query("""
                SELECT p.id, p.start_date::text, s.time_zone FROM pairings p JOIN staff_settings s ON s.ea_id = p.ea_id
                WHERE p.ea_id = \(ea) ORDER BY p.id
                """, logger: logger).decode((UUID, String, String).self) {
                guard let start = LocalDate(start) else { continue }
                pairings.append((id, start))
                zone = TimeZone(identifier: tz)
            }
        }
        guard let zone, !pairings.isEmpty else { return [] }
        let rules = try await activeRules(c)
        guard !rules.isEmpty else { return [] }
        let asOf = LocalDate(now, in: zone)
        let lookback = rules.map { $0.condition.lookbackDays(thresholds: $0.thresholds) }.max() ?? 1
        let from = asOf.adding(days: -lookback)
        let (fromText, asOfText) = (from.description, asOf.description)

        var pto = Set<LocalDate>()
        for try await (start, end) in try await c.query("""
            SELECT greatest(start_date, \(fromText)::date)::text, least(end_date, \(asOfText)::date)::text FROM pto_records
            WHERE ea_id = \(ea) AND end_date >= \(fromText)::date AND start_date <= \(asOfText)::date
            """, logger: logger).decode((String, String).self) {
            if let s = LocalDate(start), let e = LocalDate(end) { pto.formUnion(s.through(e)) }
        }
        var logs: [PairingFacts.StartLog] = []
        for try await (day, late) in try await c.query("""
            SELECT log_date::text, minutes_late FROM start_of_day_logs
            WHERE ea_id = \(ea) AND log_date BETWEEN \(fromText)::date AND \(asOfText)::date
            """, logger: logger).decode((String, Int32).self) {
            if let d = LocalDate(day) { logs.append(.init(date: d, minutesLate: Int(late))) }
        }
        var reports: [UUID: [PairingFacts.Report]] = [:]
        for try await row in try await c.query("""
            SELECT pairing_id, report_date::text, hours_worked::float8, tasks_completed, tasks_pending, client_satisfaction::int4,
                   ea_wellbeing::int4, needs_support, client_unresponsive, scope_change_requested
            FROM end_of_day_reports WHERE ea_id = \(ea) AND report_date BETWEEN \(fromText)::date AND \(asOfText)::date
            """, logger: logger) {
            let (pairing, day, hours, done, pending, satisfaction, wellbeing, support, unresponsive, scope)
                = try row.decode((UUID, String, Double, Int32, Int32, Int32, Int32, Bool, Bool, Bool).self)
            guard let d = LocalDate(day) else { continue }
            reports[pairing, default: []].append(.init(
                date: d, hoursWorked: hours, tasksCompleted: Int(done), tasksPending: Int(pending), clientSatisfaction: Int(satisfaction),
                eaWellbeing: Int(wellbeing), needsSupport: support, clientUnresponsive: unresponsive, scopeChangeRequested: scope))
        }

        var raised: [Caremesh_Alerts_V1_RuleAlert] = []
        for pairing in pairings {
            let facts = PairingFacts(asOf: asOf, pairingStart: pairing.start, pto: pto, logs: logs, reports: reports[pairing.id] ?? [])
            var any = false
            for rule in rules {
                let (fires, findings) = RuleEngine.evaluate(rule.condition, thresholds: rule.thresholds, facts: facts)
                guard fires else { continue }
                let evidence = RuleEvidence(asOf: asOf, thresholds: rule.thresholds, findings: findings)
                guard let alert = try await Self.alerts(c, """
                    WITH a AS (
                        INSERT INTO alerts (pairing_id, rule_id, rule_version, severity, evidence, evidence_through)
                        SELECT \(pairing.id), \(rule.id), \(rule.version), \(rule.severity.rawValue), \(evidence.json)::jsonb,
                               \(evidence.through.description)::date
                        WHERE NOT EXISTS (SELECT 1 FROM alerts WHERE rule_id = \(rule.id) AND pairing_id = \(pairing.id)
                                          AND status = ANY(\(RuleAlertState.closedStatuses))
                                          AND evidence_through >= \(evidence.through.description)::date)
                        ON CONFLICT (rule_id, pairing_id) WHERE status IN ('open', 'acknowledged') DO NOTHING
                        RETURNING *)
                    \(unescaped: Self.alertSelect(from: "a"))
                    """, logger: logger).first else { continue }
                var event = Caremesh_Alerts_V1_RuleAlertRaised()
                event.alertID = alert.id
                event.pairingID = alert.pairingID
                event.eaID = alert.eaID
                event.ruleID = alert.ruleID
                event.ruleVersion = alert.ruleVersion
                event.severity = alert.severity
                event.title = alert.title
                event.notifyIds = try await Self.coordinators(of: pairing.id, c, logger: logger).map(\.text)
                _ = try await outbox.append(event, key: alert.pairingID, on: c)
                raised.append(alert)
                any = true
            }
            if any { try await Self.refreshHealth(pairing.id, c, logger: logger) }
        }
        return raised
    }

    /// Sets a pairing's health from its open alerts, unless overridden.
    static func refreshHealth(_ pairing: UUID, _ c: PostgresConnection, logger: Logger) async throws {
        var severities: [RuleDefinition.Severity] = []
        for try await s in try await c.query("""
            SELECT severity FROM alerts WHERE pairing_id = \(pairing) AND status = ANY(\(RuleAlertState.openStatuses))
            """, logger: logger).decode(String.self) {
            if let s = RuleDefinition.Severity(rawValue: s) { severities.append(s) }
        }
        let health = PairingHealthLevel.of(openSeverities: severities).rawValue
        try await c.query("""
            UPDATE pairings SET health_status = \(health)
            WHERE id = \(pairing) AND NOT health_status_override AND health_status <> \(health)
            """, logger: logger)
    }

    /// The daily evaluation of one EA's pairings; arms the next one at the configured local
    /// time in the EA's time zone.
    func daily(_ job: Job, _ c: PostgresConnection) async throws {
        guard let ea = UUID(uuidString: String(decoding: job.payload, as: UTF8.self)) else { return }
        guard let zone = try await c.query("SELECT time_zone FROM staff_settings WHERE ea_id = \(ea)", logger: logger)
            .first(String.self).flatMap(TimeZone.init(identifier:)) else { return }
        let now = Date()
        _ = try await evaluate(ea: ea, now: now, on: c)
        try await Self.armDaily(ea, zone: zone, at: configuration.dailyEvaluationAt, after: now, c, logger: logger)
    }

    /// (Re-)arms an EA's daily evaluation: the next time the wall clock in `zone` reads `at`.
    static func armDaily(_ ea: UUID, zone: TimeZone, at: LocalTime, after now: Date, _ c: PostgresConnection, logger: Logger) async throws {
        try await Jobs.cancel(dailyJob, uniqueKey: ea.text, on: c, logger: logger)
        try await Jobs.schedule(dailyJob, payload: Data(ea.text.utf8), runAt: Lateness.next(at, after: now, in: zone),
                                uniqueKey: ea.text, on: c, logger: logger)
    }

    // MARK: - Alerts and triage

    static func alertSelect(from table: String) -> String {
        """
        SELECT a.id, a.pairing_id, p.ea_id, p.client_id, a.rule_id, a.rule_version, v.name, v.alert_title, a.severity, a.status,
               a.assigned_to, extract(epoch FROM a.detected_at)::float8, extract(epoch FROM a.acknowledged_at)::float8,
               extract(epoch FROM a.resolved_at)::float8, a.evidence::text, a.notes, \(Page.micros("a.detected_at"))
        FROM \(table) a JOIN pairings p ON p.id = a.pairing_id
             JOIN alert_rule_versions v ON v.rule_id = a.rule_id AND v.version = a.rule_version
        """
    }

    /// An alert and its page key.
    static func alert(_ row: PostgresRandomAccessRow) throws -> (row: Caremesh_Alerts_V1_RuleAlert, micros: Int64, id: UUID) {
        var a = Caremesh_Alerts_V1_RuleAlert()
        let id = try row[0].decode(UUID.self)
        a.id = id.text
        a.pairingID = try row[1].decode(UUID.self).text
        a.eaID = try row[2].decode(UUID.self).text
        a.clientID = try row[3].decode(UUID.self).text
        a.ruleID = try row[4].decode(UUID.self).text
        a.ruleVersion = UInt32(try row[5].decode(Int32.self))
        a.ruleName = try row[6].decode(String.self)
        a.title = try row[7].decode(String.self)
        a.severity = RuleDefinition.Severity(rawValue: try row[8].decode(String.self))?.proto ?? .unspecified
        a.status = RuleAlertState(rawValue: try row[9].decode(String.self))?.proto ?? .unspecified
        a.assignedTo = try row[10].decode(UUID?.self)?.text ?? ""
        a.detectedAt = Google_Protobuf_Timestamp(epochSeconds: try row[11].decode(Double.self))
        if let t = try row[12].decode(Double?.self) { a.acknowledgedAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        if let t = try row[13].decode(Double?.self) { a.resolvedAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        a.evidence = try row[14].decode(String.self)
        a.notes = try row[15].decode(String.self)
        return (a, try row[16].decode(Int64.self), id)
    }

    static func alerts(_ c: PostgresConnection, _ query: PostgresQuery, logger: Logger) async throws -> [Caremesh_Alerts_V1_RuleAlert] {
        var out: [Caremesh_Alerts_V1_RuleAlert] = []
        for try await row in try await c.query(query, logger: logger) { out.append(try alert(row.makeRandomAccess()).row) }
        return out
    }

    func listAlerts(_ r: Caremesh_Alerts_V1_ListRuleAlertsRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_ListRuleAlertsResponse
    {
        _ = try context.requireRole(Self.managers)
        var v = FieldViolations()
        let statuses = r.statuses.map(RuleAlertState.init)
        v.check(!statuses.contains(nil), "statuses", "must be OPEN, ACKNOWLEDGED, RESOLVED or DISMISSED")
        let severities = r.severities.map(RuleDefinition.Severity.init)
        v.check(!severities.contains(nil), "severities", "must be LOW, MEDIUM, HIGH or CRITICAL")
        let pairing = v.optionalUUID(r.pairingID, "pairing_id")
        let ea = v.optionalUUID(r.eaID, "ea_id")
        let assignee = v.optionalUUID(r.assignedTo, "assigned_to")
        let rule = v.optionalUUID(r.ruleID, "rule_id")
        let page = Page(size: r.pageSize, token: r.pageToken, into: &v)
        try v.throwIfAny()
        let statusTexts = statuses.isEmpty ? RuleAlertState.openStatuses : statuses.compactMap { $0?.rawValue }
        let severityTexts = severities.isEmpty ? RuleDefinition.Severity.allCases.map(\.rawValue) : severities.compactMap { $0?.rawValue }
        return try await store.withConnection { c in
            let rows = try await c.query("""
                \(unescaped: Self.alertSelect(from: "alerts"))
                WHERE a.status = ANY(\(statusTexts)) AND a.severity = ANY(\(severityTexts))
                  AND (\(pairing)::uuid IS NULL OR a.pairing_id = \(pairing)) AND (\(ea)::uuid IS NULL OR p.ea_id = \(ea))
                  AND (\(assignee)::uuid IS NULL OR a.assigned_to = \(assignee)) AND (\(rule)::uuid IS NULL OR a.rule_id = \(rule))
                  AND \(after: page, time: "a.detected_at", id: "a.id")
                ORDER BY a.detected_at DESC, a.id DESC LIMIT \(page.limit)
                """, logger: self.logger)
            var response = Caremesh_Alerts_V1_ListRuleAlertsResponse()
            (response.alerts, response.nextPageToken) = try await page.collect(rows) { try Self.alert($0.makeRandomAccess()) }
            return response
        }
    }

    /// The pairing's coordinators: the active coordinators of its client's zone (who look at its
    /// alerts until one is assigned).
    static func coordinators(of pairing: UUID, _ c: PostgresConnection, logger: Logger) async throws -> [UUID] {
        try await c.query("""
            SELECT k.user_id FROM pairings p JOIN client_zones z ON z.client_id = p.client_id
            JOIN coordinators k ON k.zone_id = z.zone_id AND k.is_active AND k.tier = 'coordinator'
            WHERE p.id = \(pairing) ORDER BY k.user_id
            """, logger: logger).collect().map { try $0.decode(UUID.self) }
    }

    /// Assign, acknowledge, resolve or dismiss (`RuleAlertTriage` says what may follow what).
    func triage(_ idText: String, _ action: RuleAlertAction, assignee assigneeText: String = "", notes: String = "",
                _ context: RPCContext) async throws -> Caremesh_Alerts_V1_RuleAlertResponse {
        _ = try context.requireRole(Self.managers)
        var v = FieldViolations()
        let id = v.uuid(idText, "id")
        let assignee = action == .assign ? v.optionalUUID(assigneeText, "assigned_to") : nil
        v.check(action != .resolve || !notes.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "notes",
                "is required: say what was done")
        v.check(notes.count <= 4_000, "notes", "must be at most 4 000 characters")
        try v.throwIfAny()
        var response = Caremesh_Alerts_V1_RuleAlertResponse()
        response.alert = try await store.withTransaction { c in
            guard let (statusText, pairing) = try await c.query(
                "SELECT status, pairing_id FROM alerts WHERE id = \(id!) FOR UPDATE", logger: self.logger
            ).decode((String, UUID).self).first(where: { _ in true }), let status = RuleAlertState(rawValue: statusText)
            else { throw RPCError(.notFound, "no such alert") }
            guard let next = RuleAlertTriage.apply(action, to: status) else {
                throw RPCError(.failedPrecondition, "the alert is \(status.rawValue); it can no longer change")
            }
            let notesValue: String? = notes.isEmpty ? nil : notes
            guard let alert = try await Self.alerts(c, """
                WITH a AS (
                    UPDATE alerts SET status = \(next.rawValue),
                        assigned_to = CASE WHEN \(action == .assign) THEN \(assignee) ELSE assigned_to END,
                        acknowledged_at = CASE WHEN \(next.rawValue) = 'acknowledged' THEN coalesce(acknowledged_at, now())
                                               ELSE acknowledged_at END,
                        resolved_at = CASE WHEN \(next.isOpen) THEN NULL ELSE now() END,
                        notes = coalesce(\(notesValue), notes)
                    WHERE id = \(id!) RETURNING *)
                \(unescaped: Self.alertSelect(from: "a"))
                """, logger: self.logger).first else { throw RPCError(.internal, "the update returned no row") }
            if !next.isOpen { try await Self.refreshHealth(pairing, c, logger: self.logger) }
            if action == .assign, let assignee, assignee.text != context.caller?.userID?.text {
                let event = Caremesh_Alerts_V1_RuleAlertAssigned.with {
                    $0.alertID = alert.id
                    $0.pairingID = alert.pairingID
                    $0.assignedTo = assignee.text
                    $0.assignedBy = context.caller?.userID?.text ?? ""
                    $0.severity = alert.severity
                    $0.title = alert.title
                }
                _ = try await self.outbox.append(event, key: alert.pairingID, on: c)
            }
            return alert
        }
        return response
    }
}

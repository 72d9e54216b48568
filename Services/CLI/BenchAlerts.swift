import AlertsService
import ArgumentParser
import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Histogram
import IdentityService
import PostgresNIO
import Synchronization
import ZMQ

/// `caremesh bench alerts`: care alerts raised through a running stack's router at a fixed
/// rate; how long until each one's call request is out (its `CareAlertRaised`, with the calls,
/// read back through the router by a consumer long-polling alerts' outbox, as messaging does).
struct AlertsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alerts",
        abstract: "Care alerts: raise → call requested p50/p99 (through the outbox) at a fixed rate; through the router.",
        discussion: """
            Needs a running stack (caremesh up, release build recommended). It puts --zones zones of two \
            coordinators each (the second the first's backup) and --clients clients spread over them straight \
            into alerts' tables (ids derived from 'caremesh-bench-…', so re-runs reuse them), registers \
            caregivers and an admin at identity (roles given in identity's database, as `caremesh identity \
            grant-role` does), then raises alerts open loop at --rate. Two figures per alert: the RaiseCareAlert \
            call itself, and raise → its CareAlertRaised event (with the call requests) delivered to a consumer \
            long-polling Events.Pull on alerts through the router: what messaging waits on before it dials. \
            Latencies count from each raise's scheduled start. The bench's alerts are cancelled afterwards and \
            their ring timers with them.
            """
    )

    @OptionGroup var router: RouterOptions
    @Option(help: "Alerts raised per second.") var rate = 50.0
    @Option(help: "Zones (two coordinators each).") var zones = 20
    @Option(help: "Clients, spread over the zones.") var clients = 1_000
    @Option(help: "Caregiver accounts to register.") var caregivers = 16
    @Option(help: "Warm-up seconds.") var warmup = 2.0
    @Option(help: "Measured seconds.") var duration = 10.0
    @Option(help: "What to measure: care (raise → call requested), rules (report evaluation throughput) or both.")
    var part = "both"
    @Option(help: "Rules: EAs, each paired with one client, with 14 days of reports and logs.") var eas = 200
    @Option(help: "Rules: reports in flight at once (closed loop).") var concurrency = 16

    func validate() throws {
        if !["care", "rules", "both"].contains(part) { throw ValidationError("--part must be care, rules or both") }
        if eas < 1 || eas > clients { throw ValidationError("--eas must be between 1 and --clients") }
        if concurrency < 1 || concurrency > 1_000 { throw ValidationError("--concurrency must be between 1 and 1000") }
        if !(rate > 0 && rate <= 10_000) { throw ValidationError("--rate must be between 0 and 10000") }
        if zones < 1 || clients < 1 || caregivers < 1 { throw ValidationError("--zones, --clients and --caregivers must be at least 1") }
        if !(warmup >= 0 && duration > 0) { throw ValidationError("--warmup must be at least 0 and --duration more than 0") }
    }

    func run() async throws {
        print(machineLine())
        let logger = cliLogger("caremesh.bench")
        let layout = StackLayout()
        let alertsDB = try LocalDatabase.url(for: AlertsService.name, layout: layout)
        let identityDB = try LocalDatabase.url(for: IdentityService.name, layout: layout)
        let client = RPCClient(configuration: try router.clientConfiguration(), logger: logger)
        defer { client.close() }

        // Coordinators (zone z: coordinator 2z+1 backed up by 2z+2) and clients in their zones.
        try await Store.withSingleConnection(alertsDB, timeout: .seconds(10), logger: logger) { conn in
            try await conn.query("""
                INSERT INTO coordinators (id, user_id, zone_id, phone_number, tier)
                SELECT md5('caremesh-bench-coordinator-' || i)::uuid, md5('caremesh-bench-coordinator-user-' || i)::uuid,
                       md5('caremesh-bench-zone-' || ((i - 1) / 2))::uuid, '+4420' || lpad(i::text, 8, '0'), 'coordinator'
                FROM generate_series(1, \(2 * zones)) i
                ON CONFLICT (user_id) DO UPDATE SET is_active = true
                """, logger: logger)
            try await conn.query("""
                UPDATE coordinators k SET backup_coordinator_id = md5('caremesh-bench-coordinator-' || (i + 1))::uuid
                FROM generate_series(1, \(2 * zones), 2) i
                WHERE k.id = md5('caremesh-bench-coordinator-' || i)::uuid AND k.backup_coordinator_id IS NULL
                """, logger: logger)
            try await conn.query("""
                INSERT INTO client_zones (client_id, kind, zone_id)
                SELECT md5('caremesh-bench-client-' || i)::uuid, 'client', md5('caremesh-bench-zone-' || (i % \(zones)))::uuid
                FROM generate_series(1, \(clients)) i
                ON CONFLICT (client_id) DO UPDATE SET zone_id = EXCLUDED.zone_id
                """, logger: logger)
            try await conn.query("VACUUM (ANALYZE) coordinators, client_zones, care_alerts, care_alert_calls, jobs, outbox", logger: logger)
        }

        // People: caregivers who raise, an admin who reads the outbox (as a service would).
        let run = UInt32.random(in: 0...UInt32.max)
        let password = "bench passphrase \(run)"
        let emails = (0...caregivers).map { "bench-alerts-\(run)-\($0)@example.org" }
        _ = try await registerBenchAccounts(client, emails: emails, password: password, concurrency: 32)
        try await Store.withSingleConnection(identityDB, timeout: .seconds(10), logger: logger) { conn in
            try await conn.query("""
                UPDATE users SET role = CASE WHEN email = \(emails[0]) THEN 'admin' ELSE 'caregiver' END WHERE email = ANY(\(emails))
                """, logger: logger)
        }
        var tokens: [CallOptions] = []
        for email in emails {
            var login = Caremesh_Identity_V1_LoginRequest()
            login.email = email
            login.password = password
            let session = try await client.call(IdentityMethods.login, request: login, options: .init(timeout: .seconds(60))).session
            tokens.append(CallOptions(metadata: ["authorization": "Bearer \(session.accessToken)"]))
        }
        let admin = tokens[0], raisers = Array(tokens.dropFirst())
        if part != "care" { try await rules(client, admin: admin, alertsDB: alertsDB, logger: logger) }
        guard part != "rules" else { return }
        let clientIDs = try await Store.withSingleConnection(alertsDB, timeout: .seconds(10), logger: logger) { conn in
            try await conn.query("SELECT md5('caremesh-bench-client-' || i)::uuid FROM generate_series(1, \(clients)) i", logger: logger)
                .collect().map { try $0.decode(UUID.self).uuidString }
        }

        // The consumer: from the outbox's end now, every CareAlertRaised as it is delivered.
        let seen = Seen()
        let after = try await Store.withSingleConnection(alertsDB, timeout: .seconds(10), logger: logger) { conn in
            try await conn.query("SELECT coalesce(max(seq), 0) FROM outbox", logger: logger).first(Int64.self) ?? 0
        }
        let consumer = Task {
            var cursor = after
            while !Task.isCancelled {
                var r = Caremesh_Events_V1_PullEventsRequest()
                r.after = cursor
                r.limit = 1_000
                r.waitMs = 1_000
                guard let response = try? await client.call(EventsMethods.pull, service: AlertsService.name, request: r,
                                                            options: CallOptions(timeout: .seconds(5), metadata: admin.metadata))
                else { continue }
                let now = monotonicNanos()
                for event in response.events {
                    cursor = max(cursor, event.seq)
                    guard event.type == Caremesh_Alerts_V1_CareAlertRaised.protoMessageName,
                          let e = try? Caremesh_Alerts_V1_CareAlertRaised(serializedBytes: event.payload), !e.calls.isEmpty
                    else { continue }
                    seen.delivered(e.alertID, at: now)
                }
            }
        }

        let processes = StackProcesses(layout: layout, names: ["router", "alerts"])
        let types: [Caremesh_Alerts_V1_CareAlertType] = [.medicalConcern, .medicationIssue, .safetyConcern, .behavioralChange]
        let result = await FixedRate(rate: rate, warmup: warmup, duration: duration, processes: processes).runTimed { i, due, counted in
            var r = Caremesh_Alerts_V1_RaiseCareAlertRequest()
            r.clientID = clientIDs[i % clientIDs.count]
            r.alertType = types[i % types.count]
            r.voiceMessageURL = "https://voice.example.org/bench/\(i).mp3"
            let raised = try await client.call(AlertsMethods.raiseCareAlert, request: r, options: raisers[i % raisers.count])
            if counted { seen.raised(raised.alert.id, due: due) }
        }
        print(result.line("alerts raise (RaiseCareAlert call, open loop)", String(format: "rate=%.0f zones=%d", rate, zones)))

        // Every counted alert's event, or a miss after 5 s.
        let deadline = monotonicNanos() + 5_000_000_000
        while seen.missing > 0 && monotonicNanos() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        consumer.cancel()
        let (histogram, missing) = seen.latencies()
        var delivered = Load.Result(histogram: histogram, errors: missing, duration: duration)
        delivered.cpu = result.cpu
        print(delivered.line("alerts raise → call requested (CareAlertRaised delivered through Events.Pull)",
                             String(format: "rate=%.0f", rate)))
        if let placed = try await placedLatencies(seen.raisedIDs, alertsDB: alertsDB, layout: layout, logger: logger) {
            var rung = Load.Result(histogram: placed.histogram, errors: placed.missing, duration: duration)
            rung.cpu = result.cpu
            print(rung.line("alerts raise → provider asked to ring (care_alerts.initiated_at → voice_calls.placed_at)",
                            String(format: "rate=%.0f", rate)))
        }

        // Close the bench's alerts and stop their ring timers (they would escalate during a later run).
        try await Store.withSingleConnection(alertsDB, timeout: .seconds(10), logger: logger) { conn in
            try await conn.query("""
                WITH closed AS (
                    UPDATE care_alerts SET status = 'cancelled', cancelled_at = now(), closed_by = staff_id, outcome = 'bench'
                    WHERE client_id IN (SELECT md5('caremesh-bench-client-' || i)::uuid FROM generate_series(1, \(clients)) i)
                      AND status NOT IN ('resolved', 'cancelled', 'answered') RETURNING id)
                UPDATE jobs SET state = 'cancelled', finished_at = now()
                WHERE kind = 'care-alert-ring' AND state = 'scheduled'
                  AND split_part(unique_key, ':', 1) IN (SELECT id::text FROM closed)
                """, logger: logger)
        }
    }

    /// Rule evaluation throughput: end-of-day reports submitted back to back by `concurrency`
    /// callers (an admin, who may file for any EA), each evaluated against every enabled rule
    /// over its pairing's last weeks in the transaction that stores it.
    func rules(_ client: RPCClient, admin: CallOptions, alertsDB: DatabaseURL, logger: Logger) async throws {
        let pairings = try await Store.withSingleConnection(alertsDB, timeout: .seconds(30), logger: logger) { conn in
            try await conn.query("""
                INSERT INTO staff_settings (ea_id, expected_show_up_time, time_zone)
                SELECT md5('caremesh-bench-ea-' || i)::uuid, '09:00', 'Europe/Paris' FROM generate_series(1, \(eas)) i
                ON CONFLICT (ea_id) DO NOTHING
                """, logger: logger)
            try await conn.query("""
                INSERT INTO pairings (ea_id, client_id, start_date)
                SELECT md5('caremesh-bench-ea-' || i)::uuid, md5('caremesh-bench-client-' || i)::uuid, current_date - 60
                FROM generate_series(1, \(eas)) i
                ON CONFLICT (ea_id, client_id) DO NOTHING
                """, logger: logger)
            // Two weeks of history: reports with varied satisfaction and a support request now and
            // then, and a start-of-day log each day, on time.
            try await conn.query("""
                INSERT INTO end_of_day_reports (pairing_id, ea_id, report_date, hours_worked, tasks_completed, tasks_pending,
                    client_satisfaction, ea_wellbeing, needs_support, client_unresponsive, scope_change_requested)
                SELECT p.id, p.ea_id, current_date - d, 7 + (d % 3), 5, 2, 3 + (d % 3), 4, d % 9 = 0, false, false
                FROM pairings p, generate_series(2, 15) d
                WHERE p.ea_id IN (SELECT md5('caremesh-bench-ea-' || i)::uuid FROM generate_series(1, \(eas)) i)
                ON CONFLICT (pairing_id, report_date) DO NOTHING
                """, logger: logger)
            try await conn.query("""
                INSERT INTO start_of_day_logs (ea_id, log_date, logged_at, expected_show_up_time, was_late, minutes_late)
                SELECT s.ea_id, current_date - d, (current_date - d) + time '08:00' + (d % 4) * interval '10 minutes',
                       '09:00', false, 0
                FROM staff_settings s, generate_series(1, 15) d
                WHERE s.ea_id IN (SELECT md5('caremesh-bench-ea-' || i)::uuid FROM generate_series(1, \(eas)) i)
                ON CONFLICT (ea_id, log_date) DO NOTHING
                """, logger: logger)
            try await conn.query("VACUUM (ANALYZE) staff_settings, pairings, end_of_day_reports, start_of_day_logs, alerts", logger: logger)
            return try await conn.query("""
                SELECT p.id FROM pairings p
                WHERE p.ea_id IN (SELECT md5('caremesh-bench-ea-' || i)::uuid FROM generate_series(1, \(eas)) i) ORDER BY p.id
                """, logger: logger).collect().map { try $0.decode(UUID.self).uuidString }
        }
        let yesterday = LocalDate(Date().addingTimeInterval(-86_400), in: TimeZone(identifier: "Europe/Paris")!).description
        let processes = StackProcesses(layout: StackLayout(), names: ["router", "alerts"])
        let counter = Atomic<Int>(0)
        let result = await Load(concurrency: concurrency, warmup: warmup, duration: duration, processes: processes).run { _ in
            let n = counter.add(1, ordering: .relaxed).newValue
            var r = Caremesh_Alerts_V1_SubmitEndOfDayReportRequest()
            r.report.pairingID = pairings[n % pairings.count]
            r.report.reportDate = yesterday
            r.report.hoursWorked = Double(6 + n % 6)
            r.report.tasksCompleted = UInt32(n % 12)
            r.report.tasksPending = UInt32(n % 5)
            r.report.clientSatisfaction = UInt32(1 + n % 5)
            r.report.eaWellbeing = UInt32(1 + (n / 5) % 5)
            r.report.needsSupport = n % 7 == 0
            r.report.highlights = "Bench report \(n)."
            _ = try await client.call(AlertsMethods.submitEndOfDayReport, request: r, options: admin)
        }
        let enabled = try await client.call(AlertsMethods.listAlertRules, request: Caremesh_Alerts_V1_ListAlertRulesRequest(),
                                            options: admin).rules.filter(\.enabled).count
        print(result.line("alerts rules (SubmitEndOfDayReport, each evaluated in its transaction; closed loop)",
                          "concurrency=\(concurrency) eas=\(eas) rules=\(enabled)"))
    }

    /// When each counted alert was due and when its event was delivered.
    /// Raise → the provider took the first stage's first call, per counted alert, both read
    /// from the one PostgreSQL clock (alerts' `initiated_at`, messaging's `placed_at`); nil when
    /// messaging's database cannot be read. Waits up to 5 s; an alert whose call was not
    /// recorded as placed by then counts as an error.
    func placedLatencies(_ alerts: [UUID], alertsDB: DatabaseURL, layout: StackLayout, logger: Logger) async throws
        -> (histogram: Histogram<UInt64>, missing: Int)?
    {
        guard !alerts.isEmpty, let messagingDB = try? LocalDatabase.url(for: "messaging", layout: layout) else { return nil }
        let calls = try await Store.withSingleConnection(alertsDB, timeout: .seconds(10), logger: logger) { conn in
            try await conn.query("""
                SELECT c.alert_id, c.id, extract(epoch FROM a.initiated_at)::float8 FROM care_alert_calls c JOIN care_alerts a ON a.id = c.alert_id
                WHERE c.alert_id = ANY(\(alerts)::uuid[])
                  AND c.escalation_step = (SELECT min(escalation_step) FROM care_alert_calls x WHERE x.alert_id = c.alert_id)
                """, logger: logger).collect().map { try $0.decode((UUID, UUID, Double).self) }
        }
        var placed: [UUID: Double] = [:]
        let deadline = monotonicNanos() + 5_000_000_000
        repeat {
            placed = try await Store.withSingleConnection(messagingDB, timeout: .seconds(10), logger: logger) { conn in
                var out: [UUID: Double] = [:]
                for try await (id, at) in try await conn.query("""
                    SELECT id, extract(epoch FROM placed_at)::float8 FROM voice_calls WHERE id = ANY(\(calls.map(\.1))::uuid[]) AND placed_at IS NOT NULL
                    """, logger: logger).decode((UUID, Double).self) { out[id] = at }
                return out
            }
            if placed.count == calls.count { break }
            try await Task.sleep(for: .milliseconds(200))
        } while monotonicNanos() < deadline
        var first: [UUID: Double] = [:], raisedAt: [UUID: Double] = [:]
        for (alert, call, initiated) in calls {
            raisedAt[alert] = initiated
            if let at = placed[call] { first[alert] = min(first[alert] ?? at, at) }
        }
        var h = Load.histogram()
        for (alert, initiated) in raisedAt {
            if let at = first[alert] { _ = h.record(UInt64(max(0, at - initiated) * 1_000_000_000)) }
        }
        return (h, raisedAt.count - first.count)
    }

    final class Seen: Sendable {
        struct State {
            var due: [String: UInt64] = [:]
            var delivered: [String: UInt64] = [:]
        }
        let state = Mutex(State())

        func raised(_ id: String, due: UInt64) { state.withLock { $0.due[id] = due } }
        func delivered(_ id: String, at: UInt64) { state.withLock { $0.delivered[id] = at } }

        var missing: Int { state.withLock { s in s.due.keys.filter { s.delivered[$0] == nil }.count } }
        var raisedIDs: [UUID] { state.withLock { $0.due.keys.compactMap(UUID.init(uuidString:)) } }

        func latencies() -> (Histogram<UInt64>, missing: Int) {
            state.withLock { s in
                var h = Load.histogram()
                var missing = 0
                for (id, due) in s.due {
                    if let at = s.delivered[id] { _ = h.record(at > due ? at - due : 0) } else { missing += 1 }
                }
                return (h, missing)
            }
        }
    }
}

import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO

/// The alerts service: a worker of MDP service "alerts" that owns schema `alerts`: care alerts
/// with their calls and escalation (coordinators, backups, policies), fed by identity's events
/// (clients' zones, deactivated users) and messaging's (call statuses).
public enum AlertsService {
    /// The MDP service name, and the name of its schema.
    public static let name = AlertsMethods.serviceName!

    /// The schema's own migrations (after the platform's).
    public static let migrations: [Migration] = AlertsMigrations.all

    /// Store, migrations, outbox, jobs, the event consumers and worker, configured from the
    /// environment (`ALERTS_DATABASE_URL` or `DATABASE_URL`; `AlertsConfiguration`;
    /// `ALERTS_SERVICE_SECRET` to sign in to the router as a service; `WorkerConfiguration` for
    /// the bus).
    public static func make(environment: [String: String] = ProcessInfo.processInfo.environment,
                            logger: Logger = Logger(label: "caremesh.alerts")) async throws -> ServiceHost {
        let configuration = try AlertsConfiguration(environment: environment)
        let client = try RPCClient.forService(name, environment: environment, logger: logger)
        let host = try await ServiceHost.make(service: name, migrations: migrations, environment: environment, logger: logger) { store, outbox in
            let desk = CareAlerts(store: store, outbox: outbox, configuration: configuration, people: PersonDirectory(client: client), logger: logger)
            let rules = RuleDesk(store: store, outbox: outbox, configuration: configuration, logger: logger)
            return ServiceHost.Parts(
                handlers: handlers(configuration: configuration, store: store, desk: desk, rules: rules, logger: logger),
                jobs: [CareAlerts.ringJob: { job, c in try await desk.ringTimedOut(job, c) },
                       RuleDesk.dailyJob: { job, c in try await rules.daily(job, c) }],
                background: [
                    ClientLifetime(client),
                    EventConsumer(source: "identity", store: store, client: client, logger: logger) { event, c in
                        try await applyIdentity(event, c, logger: logger)
                    },
                    // Only calls: messaging's SMS status events (two per SMS) just move the cursor.
                    EventConsumer(source: "messaging", types: [Caremesh_Messaging_V1_CallStatusChanged.protoMessageName], store: store,
                                  client: client, logger: logger) { event, c in
                        try await desk.callStatus(try Caremesh_Messaging_V1_CallStatusChanged(serializedBytes: Data(event.payload)), c)
                    },
                ],
                prepare: [{ c in try await RuleDesk.prepare(on: c, configuration: configuration, logger: logger) }])
        }
        return host
    }

    static func handlers(configuration: AlertsConfiguration, store: Store, desk: CareAlerts, rules: RuleDesk, logger: Logger) -> RPCHandlers {
        var h = RPCHandlers()
        h.register(AlertsMethods.raiseCareAlert) { r, ctx in try await desk.raise(r, ctx) }
        h.register(AlertsMethods.getCareAlert) { r, ctx in try await desk.get(r, ctx) }
        h.register(AlertsMethods.acknowledgeCareAlert) { r, ctx in try await desk.acknowledge(r, ctx) }
        h.register(AlertsMethods.resolveCareAlert) { r, ctx in try await desk.resolve(r, ctx) }
        h.register(AlertsMethods.cancelCareAlert) { r, ctx in try await desk.cancel(r, ctx) }
        h.register(AlertsMethods.coordinatorDashboard) { r, ctx in try await desk.dashboard(r, ctx) }
        h.register(AlertsMethods.listUnansweredCareAlerts) { r, ctx in try await desk.unanswered(r, ctx) }
        h.register(AlertsMethods.listClientCareAlerts) { r, ctx in try await desk.clientHistory(r, ctx) }
        let coordinators = Coordinators(store: store, logger: logger)
        h.register(AlertsMethods.putCoordinator) { r, ctx in try await coordinators.put(r, ctx) }
        h.register(AlertsMethods.listCoordinators) { r, ctx in try await coordinators.list(r, ctx) }
        h.register(AlertsMethods.putEscalationPolicy) { r, ctx in try await coordinators.putPolicy(r, ctx) }
        h.register(AlertsMethods.listEscalationPolicies) { r, ctx in try await coordinators.listPolicies(r, ctx) }
        h.register(AlertsMethods.listAlertRules) { r, ctx in try await rules.listRules(r, ctx) }
        h.register(AlertsMethods.getAlertRule) { r, ctx in try await rules.getRule(r, ctx) }
        h.register(AlertsMethods.createAlertRule) { r, ctx in try await rules.createRule(r, ctx) }
        h.register(AlertsMethods.updateAlertRule) { r, ctx in try await rules.updateRule(r, ctx) }
        h.register(AlertsMethods.listRuleAlerts) { r, ctx in try await rules.listAlerts(r, ctx) }
        h.register(AlertsMethods.assignRuleAlert) { r, ctx in try await rules.triage(r.id, .assign, assignee: r.assignedTo, ctx) }
        h.register(AlertsMethods.acknowledgeRuleAlert) { r, ctx in try await rules.triage(r.id, .acknowledge, ctx) }
        h.register(AlertsMethods.resolveRuleAlert) { r, ctx in try await rules.triage(r.id, .resolve, notes: r.notes, ctx) }
        h.register(AlertsMethods.dismissRuleAlert) { r, ctx in try await rules.triage(r.id, .dismiss, notes: r.notes, ctx) }
        let records = StaffRecords(store: store, rules: rules, configuration: configuration, logger: logger)
        h.register(AlertsMethods.putStaffSettings) { r, ctx in try await records.putSettings(r, ctx) }
        h.register(AlertsMethods.getStaffSettings) { r, ctx in try await records.getSettings(r, ctx) }
        h.register(AlertsMethods.createPairing) { r, ctx in try await records.createPairing(r, ctx) }
        h.register(AlertsMethods.listPairings) { r, ctx in try await records.listPairings(r, ctx) }
        h.register(AlertsMethods.setPairingHealth) { r, ctx in try await records.setHealth(r, ctx) }
        h.register(AlertsMethods.submitEndOfDayReport) { r, ctx in try await records.submitReport(r, ctx) }
        h.register(AlertsMethods.listEndOfDayReports) { r, ctx in try await records.listReports(r, ctx) }
        h.register(AlertsMethods.logStartOfDay) { r, ctx in try await records.logStart(r, ctx) }
        h.register(AlertsMethods.addPto) { r, ctx in try await records.addPto(r, ctx) }
        h.register(AlertsMethods.listPto) { r, ctx in try await records.listPto(r, ctx) }
        h.register(AlertsMethods.deletePto) { r, ctx in try await records.deletePto(r, ctx) }
        h.register(AlertsMethods.putCoachingNote) { r, ctx in try await records.putNote(r, ctx) }
        h.register(AlertsMethods.listCoachingNotes) { r, ctx in try await records.listNotes(r, ctx) }
        return h
    }

    /// Identity's events: a client's zone (routing), a deactivated user stops receiving calls.
    static func applyIdentity(_ event: Event, _ c: PostgresConnection, logger: Logger) async throws {
        let payload = Data(event.payload)
        switch event.type {
        case Caremesh_Identity_V1_PersonZoneChanged.protoMessageName:
            let e = try Caremesh_Identity_V1_PersonZoneChanged(serializedBytes: payload)
            guard let id = UUID(uuidString: e.personID) else { return }
            let kind = e.kind == .client ? "client" : "patient"
            let zone = UUID(uuidString: e.zoneID)
            try await c.query("""
                INSERT INTO client_zones (client_id, kind, zone_id) VALUES (\(id), \(kind), \(zone))
                ON CONFLICT (client_id) DO UPDATE SET kind = EXCLUDED.kind, zone_id = EXCLUDED.zone_id, updated_at = now()
                """, logger: logger)
        case Caremesh_Identity_V1_UserDeactivated.protoMessageName:
            let e = try Caremesh_Identity_V1_UserDeactivated(serializedBytes: payload)
            guard let id = UUID(uuidString: e.userID) else { return }
            try await c.query("UPDATE coordinators SET is_active = false WHERE user_id = \(id)", logger: logger)
        default:
            return
        }
    }
}

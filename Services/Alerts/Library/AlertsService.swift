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
        let client = RPCClient.forService(name, environment: environment, logger: logger)
        return try await ServiceHost.make(service: name, migrations: migrations, environment: environment, logger: logger,
                                          handlers: { store, outbox in
            handlers(configuration: configuration, store: store, outbox: outbox, logger: logger)
        }, jobs: { store, outbox in
            let desk = CareAlerts(store: store, outbox: outbox, configuration: configuration, logger: logger)
            return [CareAlerts.ringJob: { job, c in try await desk.ringTimedOut(job, c) }]
        }, background: { store, outbox in
            let desk = CareAlerts(store: store, outbox: outbox, configuration: configuration, logger: logger)
            return [ClientLifetime(client),
                    EventConsumer(source: "identity", store: store, client: client, logger: logger) { event, c in
                        try await applyIdentity(event, c, logger: logger)
                    },
                    EventConsumer(source: "messaging", store: store, client: client, logger: logger) { event, c in
                        guard event.type == Caremesh_Messaging_V1_CallStatusChanged.protoMessageName else { return }
                        try await desk.callStatus(try Caremesh_Messaging_V1_CallStatusChanged(serializedBytes: Data(event.payload)), c)
                    }]
        })
    }

    static func handlers(configuration: AlertsConfiguration, store: Store, outbox: Outbox, logger: Logger) -> RPCHandlers {
        var h = RPCHandlers()
        let desk = CareAlerts(store: store, outbox: outbox, configuration: configuration, logger: logger)
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

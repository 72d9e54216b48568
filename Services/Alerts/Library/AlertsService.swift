import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging

/// The alerts service: a worker of MDP service "alerts" that owns schema `alerts`. Its domain arrives
/// with its own issue; today it migrates its schema (the platform's outbox, event cursors and
/// jobs), serves `Events.Pull` and health.
public enum AlertsService {
    /// The MDP service name, and the name of its schema.
    public static let name = AlertsMethods.serviceName!

    /// The schema's own migrations (after the platform's).
    public static let migrations: [Migration] = []

    /// Store, migrations, outbox, jobs and worker, configured from the environment
    /// (`ALERTS_DATABASE_URL` or `DATABASE_URL`; see `WorkerConfiguration` for the bus).
    public static func make(environment: [String: String] = ProcessInfo.processInfo.environment,
                            logger: Logger = Logger(label: "caremesh.alerts")) async throws -> ServiceHost {
        try await ServiceHost.make(service: name, migrations: migrations, environment: environment, logger: logger)
    }
}

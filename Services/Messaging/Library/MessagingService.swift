import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging

/// The messaging service: a worker of MDP service "messaging" that owns schema `messaging`. Its domain arrives
/// with its own issue; today it migrates its schema (the platform's outbox, event cursors and
/// jobs), serves `Events.Pull` and health.
public enum MessagingService {
    /// The MDP service name, and the name of its schema.
    public static let name = MessagingMethods.serviceName!

    /// The schema's own migrations (after the platform's).
    public static let migrations: [Migration] = []

    /// Store, migrations, outbox, jobs and worker, configured from the environment
    /// (`MESSAGING_DATABASE_URL` or `DATABASE_URL`; see `WorkerConfiguration` for the bus).
    public static func make(environment: [String: String] = ProcessInfo.processInfo.environment,
                            logger: Logger = Logger(label: "caremesh.messaging")) async throws -> ServiceHost {
        try await ServiceHost.make(service: name, migrations: migrations, environment: environment, logger: logger)
    }
}

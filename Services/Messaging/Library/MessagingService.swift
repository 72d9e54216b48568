import CareMeshContracts
import CareMeshRPC
import Foundation
import Logging

/// The messaging service: a worker of MDP service "messaging". Its domain arrives with its own issue;
/// today it registers with the router and answers health.
public enum MessagingService {
    /// The MDP service name.
    public static let name = MessagingMethods.serviceName!

    /// The worker, configured from the environment (see `WorkerConfiguration`).
    public static func makeWorker(environment: [String: String] = ProcessInfo.processInfo.environment,
                                  logger: Logger = Logger(label: "caremesh.messaging")) -> ServiceWorker {
        ServiceWorker(configuration: WorkerConfiguration(service: name, environment: environment),
                      handlers: RPCHandlers(), logger: logger)
    }
}

import CareMeshContracts
import CareMeshRPC
import Foundation
import Logging

/// The identity service: a worker of MDP service "identity". Its domain arrives with its own issue;
/// today it registers with the router and answers health.
public enum IdentityService {
    /// The MDP service name.
    public static let name = IdentityMethods.serviceName!

    /// The worker, configured from the environment (see `WorkerConfiguration`).
    public static func makeWorker(environment: [String: String] = ProcessInfo.processInfo.environment,
                                  logger: Logger = Logger(label: "caremesh.identity")) -> ServiceWorker {
        ServiceWorker(configuration: WorkerConfiguration(service: name, environment: environment),
                      handlers: RPCHandlers(), logger: logger)
    }
}

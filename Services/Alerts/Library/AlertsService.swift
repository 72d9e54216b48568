import CareMeshContracts
import CareMeshRPC
import Foundation
import Logging

/// The alerts service: a worker of MDP service "alerts". Its domain arrives with its own issue;
/// today it registers with the router and answers health.
public enum AlertsService {
    /// The MDP service name.
    public static let name = AlertsMethods.serviceName!

    /// The worker, configured from the environment (see `WorkerConfiguration`).
    public static func makeWorker(environment: [String: String] = ProcessInfo.processInfo.environment,
                                  logger: Logger = Logger(label: "caremesh.alerts")) -> ServiceWorker {
        ServiceWorker(configuration: WorkerConfiguration(service: name, environment: environment),
                      handlers: RPCHandlers(), logger: logger)
    }
}

import Foundation
import Logging
import ServiceLifecycle

/// Runs long-lived services until SIGTERM or SIGINT, then shuts them down gracefully in
/// reverse order: the body of every CareMesh executable's `main`.
public enum ServiceRunner {
    /// Logging to stderr at `CAREMESH_LOG_LEVEL` (default info); call once per process.
    public static func bootstrapLogging(environment env: [String: String] = ProcessInfo.processInfo.environment) {
        let level = env["CAREMESH_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }

    /// A logger that reports warnings and worse only (the CLI's own chatter, tests).
    public static func quietLogger(_ label: String) -> Logger {
        var l = Logger(label: label)
        l.logLevel = .warning
        return l
    }

    public static func run(_ services: [any Service], logger: Logger) async throws {
        let group = ServiceGroup(configuration: .init(
            services: services.map { .init(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()
    }
}

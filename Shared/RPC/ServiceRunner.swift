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
            var handler = LazyMetadataLogHandler(StreamLogHandler.standardError(label: label))
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

/// `StreamLogHandler`'s lines, with the logger's metadata kept aside and formatted only when a
/// line is written. `StreamLogHandler` formats its metadata whenever it is set, logged or not,
/// and a server sets some on every request's logger (Hummingbird its request id).
struct LazyMetadataLogHandler: LogHandler {
    var stream: StreamLogHandler
    var metadata: Logger.Metadata = [:]

    init(_ stream: StreamLogHandler) {
        self.stream = stream
    }

    var logLevel: Logger.Level {
        get { stream.logLevel }
        set { stream.logLevel = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var event = event
        if !metadata.isEmpty { event.metadata = metadata.merging(event.metadata ?? [:]) { _, explicit in explicit } }
        stream.log(event: event)
    }
}

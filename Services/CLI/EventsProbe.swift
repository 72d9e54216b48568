import ArgumentParser
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO

/// `caremesh events-probe` (hidden, for tests): a consumer process that applies `--source`'s
/// events into `probe_effects` in `--schema` through `EventConsumer`, so a test can kill it
/// at random and then check that every event took effect exactly once, in order.
struct EventsProbe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events-probe", abstract: "Consume a service's events into a probe table (tests).",
        shouldDisplay: false)

    @Option(help: "The service whose events to consume.") var source: String
    @Option(help: "The consumer's schema (its URL from <SCHEMA>_DATABASE_URL or DATABASE_URL).") var schema: String
    @OptionGroup var router: RouterOptions

    func run() async throws {
        ServiceRunner.bootstrapLogging()
        let env = ProcessInfo.processInfo.environment
        let logger = Logger(label: "caremesh.events-probe")
        let url = try DatabaseURL.forService(schema, environment: env)
        try await Migrator.forService(schema, own: [], logger: logger).up(url)
        try await Store.withSingleConnection(url, logger: logger) { c in
            try await c.query("""
                CREATE TABLE IF NOT EXISTS probe_effects (
                    n bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    event_id uuid NOT NULL, key text NOT NULL, seq bigint NOT NULL)
                """, logger: logger)
        }
        let store = try await Store.connect(url: url, logger: logger)
        let client = RPCClient(configuration: try router.clientConfiguration(), logger: logger)
        let consumer = EventConsumer(source: source, store: store, client: client, logger: logger) { event, c in
            try await c.query("""
                INSERT INTO probe_effects (event_id, key, seq) VALUES (\(UUID(uuidString: event.id)!), \(event.key), \(event.seq))
                """, logger: logger)
        }
        try await ServiceRunner.run([store, client, consumer], logger: logger)
    }
}

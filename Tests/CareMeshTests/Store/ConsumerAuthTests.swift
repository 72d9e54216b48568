import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import CareMeshTesting
import Foundation
import Logging
import Synchronization
import Testing

/// A service that pulls another's events signs in with `<SERVICE>_SERVICE_SECRET`. Without it,
/// or with a wrong one, its consumer is refused: it must say so as an error naming the
/// variable (not a warning that looks passing) and stay where it was.
@Suite(.serialized) struct ConsumerAuthTests {
    @Test("a consumer without its service secret, or with a wrong one, logs an error naming the variable and does not move; with the right one it reads on")
    func refusedConsumerSaysWhichSetting() async throws {
        let identity = IdentityTests()
        try await identity.withIdentity { s in
            _ = try await identity.register(s)  // identity's outbox has an event to read
            try await Migrator.forService("alerts", own: [], logger: TestDatabase.logger).up(s.db.url("alerts"))

            @Sendable func isError(_ line: String) -> Bool { line.drop { $0 == " " }.hasPrefix("error ") }
            /// Runs a consumer through `client` for a while; its cursor after, and what it logged.
            func consume(_ client: RPCClient, for wait: Duration) async throws -> (cursor: Int64, lines: [String]) {
                let lines = LogHandlerTests.Lines()
                let logger = Logger(label: "consumer") { StreamLogHandler(label: $0, stream: lines, metadataProvider: nil) }
                let store = try await Store.connect(url: s.db.url("alerts"), logger: TestDatabase.logger)
                let consumer = EventConsumer(source: "identity", store: store, client: client, logger: logger) { _, _ in }
                let cursor = try await TestStack.withServices([store, consumer]) {
                    try await Task.sleep(for: wait)
                    return try await EventConsumer.cursor(source: "identity", store: store)
                }
                return (cursor, lines.text)
            }
            func client(secret: String?) -> RPCClient {
                var c = ClientConfiguration(endpoint: s.router.boundEndpoints.client)
                c.link = TestStack.BusKeys.clientLink(s.router)
                c.defaultTimeout = .seconds(5)
                c.maxAttempts = 1
                c.credentials = secret.map { ServiceCredentials(service: "alerts", secret: $0) }
                return RPCClient(configuration: c, logger: TestDatabase.logger)
            }

            for secret in [nil, "not-the-secret-identity-holds-for-alerts"] {
                let refused = client(secret: secret)
                defer { refused.close() }
                let (cursor, lines) = try await consume(refused, for: .milliseconds(1_500))
                #expect(cursor == 0)
                let errors = lines.filter(isError)
                #expect(!errors.isEmpty, "secret \(secret ?? "none"): \(lines)")
                #expect(errors.allSatisfy { $0.contains("ALERTS_SERVICE_SECRET") == (secret != nil) && $0.contains("SERVICE_SECRET") })
                #expect(errors.contains { $0.contains("UNAUTHENTICATED") || $0.contains("PERMISSION_DENIED") })
            }

            let signedIn = client(secret: TestDatabase.serviceSecret("alerts"))
            defer { signedIn.close() }
            let (cursor, lines) = try await consume(signedIn, for: .milliseconds(1_500))
            #expect(cursor > 0)
            #expect(!lines.contains(where: isError))
        }
    }
}

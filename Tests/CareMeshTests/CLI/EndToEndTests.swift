import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import CareMeshTesting
import Foundation
import Testing

/// What a deployed stack must answer, as a plain client of its router: every service SERVING,
/// every service's `Events.Pull` answering from its database. The `caremesh up` test runs it
/// against the local stack; with `CAREMESH_E2E_ROUTER` set (e.g. tcp://127.0.0.1:5555 for
/// docker-compose), it runs against that stack too.
enum StackChecks {
    static func verify(router endpoint: String) async throws {
        var config = ClientConfiguration(endpoint: endpoint)
        config.defaultTimeout = .seconds(5)
        let client = RPCClient(configuration: config, logger: TestStack.quietLogger("e2e"))
        defer { client.close() }
        for service in Provisioner.services {
            let health = try await client.call(HealthMethods.check, service: service, request: .init())
            #expect(health.status == .serving, "\(service)")
            var pull = Caremesh_Events_V1_PullEventsRequest()
            pull.limit = 1
            // Answers (an empty page on a fresh stack) only if the schema is migrated and reachable.
            let page = try await client.call(EventsMethods.pull, service: service, request: pull)
            #expect(page.events.count <= 1)
        }
    }
}

@Suite struct EndToEndTests {
    @Test("a stack given by CAREMESH_E2E_ROUTER answers health and events for every service",
          .enabled(if: ProcessInfo.processInfo.environment["CAREMESH_E2E_ROUTER"] != nil))
    func givenStack() async throws {
        try await StackChecks.verify(router: ProcessInfo.processInfo.environment["CAREMESH_E2E_ROUTER"]!)
    }
}

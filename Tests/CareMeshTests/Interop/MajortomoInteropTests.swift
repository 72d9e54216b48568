import CareMeshContracts
import CareMeshRPC
import CareMeshRouter
import CareMeshTesting
import Foundation
import IdentityService
import Testing

/// Interop with an independent MDP/0.2 implementation: majortomo (PyPI), in its own process.
@Suite(.timeLimit(.minutes(1)))
struct MajortomoInteropTests {
    var peerScript: String { TestStack.packageRoot.appendingPathComponent("Tests/Interop/majortomo_peer.py").path }

    func requirePython() throws {
        try #require(FileManager.default.isExecutableFile(atPath: TestStack.python.path),
                     "no Python with majortomo at \(TestStack.python.path): run scripts/test.sh, which installs it")
    }

    struct PeerReply: Decodable {
        var code: Int
        var request_id: UInt64
        var status: Int?
        var instance_id: String?
    }

    func callWithMajortomo(_ endpoint: String, service: String) async throws -> PeerReply {
        let r = try await TestStack.run(TestStack.python, [peerScript, "client", endpoint, service, "5"], timeout: .seconds(20))
        try #require(r.status == 0, "majortomo client failed: \(r.stderr)")
        let line = try #require(r.stdout.split(separator: "\n").last)
        return try JSONDecoder().decode(PeerReply.self, from: Data(line.utf8))
    }

    @Test("majortomo's client calls a CareMesh service through the CareMesh router")
    func majortomoClientCareMeshRouter() async throws {
        try requirePython()
        // majortomo's client speaks plain ZeroMQ: the bus without CurveZMQ (tests only).
        let router = try TestStack.startRouter(TestStack.routerConfiguration(secured: false))
        defer { router.stop() }
        let db = try await TestDatabase.fresh("majortomo")
        let host = try await IdentityService.make(
            environment: db.environment.merging(TestStack.workerEnvironment(router)) { $1 },
            logger: TestDatabase.logger)
        let client = TestStack.client(router)
        defer { client.close() }
        try await TestStack.withHosts([host]) {
            try await TestStack.waitUntilServing(client, "identity")
            let reply = try await callWithMajortomo(router.boundEndpoints.client, service: "identity")
            #expect(reply.code == 0)
            #expect(reply.request_id == 4242)
            #expect(reply.status == 1)  // SERVING
            #expect(reply.instance_id?.hasPrefix("identity-") == true)
        }
    }

    @Test("a CareMesh worker serves majortomo's client through majortomo's broker")
    func careMeshWorkerMajortomoBroker() async throws {
        try requirePython()
        let port = TestStack.freePort()
        let url = "tcp://127.0.0.1:\(port)"
        let broker = try TestStack.spawn(TestStack.python, ["-m", "majortomo.broker", "-b", url, "-i", "1", "-t", "3"])
        defer { if broker.isRunning { kill(broker.processIdentifier, SIGKILL); broker.waitUntilExit() } }
        var config = WorkerConfiguration(service: "identity")
        config.endpoint = url
        config.dialect = .delimited
        let worker = ServiceWorker(configuration: config, logger: TestStack.quietLogger("w"))
        try await TestStack.withWorkers([worker]) {
            try await Task.sleep(for: .milliseconds(700))  // the broker starts and the worker registers
            let reply = try await callWithMajortomo(url, service: "identity")
            #expect(reply.code == 0)
            #expect(reply.request_id == 4242)
            #expect(reply.status == 1)
        }
    }
}

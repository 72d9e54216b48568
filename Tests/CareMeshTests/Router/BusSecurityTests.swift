import CareMeshContracts
import CareMeshRPC
@testable import CareMeshRouter
import CareMeshTesting
import Foundation
import Logging
import Testing
import ZMQ

/// The bus as an attacker on the same network meets it: CurveZMQ on both endpoints, workers
/// admitted by key and bound to their service names, nothing registered on the client
/// endpoint. Real sockets on loopback.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct BusSecurityTests {
    typealias Keys = TestStack.BusKeys

    /// A secured router (the test keys) whose log is kept.
    func router(_ configure: (inout RouterConfiguration) -> Void = { _ in }) throws -> (Router, LogHandlerTests.Lines) {
        let lines = LogHandlerTests.Lines()
        var logger = Logger(label: "router") { StreamLogHandler(label: $0, stream: lines, metadataProvider: nil) }
        logger.logLevel = .info
        var c = TestStack.routerConfiguration()
        configure(&c)
        let router = Router(configuration: c, logger: logger)
        try router.start()
        return (router, lines)
    }

    /// A READY for `service` with a capacity that would win every dispatch.
    static func ready(_ service: String) -> [Data] {
        var info = WorkerInfo()
        info.capacity = 10_000
        info.instanceID = "rogue"
        return [Data(), MDP.workerHeader, Data([MDP.WorkerCommand.ready.rawValue]), Data(service.utf8), info.wireBytes()]
    }

    /// A hand-made peer that connects over `link`, sends `frames` and collects what it is sent
    /// for `listenMs`.
    static func peer(_ endpoint: String, link: BusLink, sends frames: [Data], listenMs: Int) async -> [[Data]] {
        await TestStack.onThread {
            guard let raw = try? RawPeer(connect: endpoint, link: link) else { return [[Data("no socket".utf8)]] }
            try? raw.send(frames)
            var got: [[Data]] = []
            let until = monotonicNanos() + UInt64(listenMs) * 1_000_000
            while monotonicNanos() < until {
                if let m = raw.receive(timeoutMs: max(1, Int((until - monotonicNanos()) / 1_000_000))) { got.append(m) }
            }
            return got
        }
    }

    /// The MDP worker command of a message a worker received (delimited: "", MDPW02, command).
    static func command(_ m: [Data]) -> UInt8? { m.count >= 3 && m[1] == MDP.workerHeader ? m[2].first : nil }

    @Test("a worker with no key, an unknown key, or a key bound to another service gets no request; the last is disconnected; each is logged and counted")
    func rogueWorkersGetNothing() async throws {
        let (router, log) = try router()
        defer { router.stop() }
        let ep = router.boundEndpoints.worker
        let worker = ServiceWorker(configuration: TestStack.workerConfiguration("bench", endpoint: ep, capacity: 4),
                                   handlers: echoHandlers(Probe(), instance: "legit"), logger: TestStack.quietLogger("w"))
        let client = TestStack.client(router)
        defer { client.close() }
        let unknown = CurveKeyPair.generate()
        try await TestStack.withWorkers([worker]) {
            try await TestStack.waitUntilServing(client, "bench")
            async let plain = Self.peer(ep, link: .plain, sends: Self.ready("bench"), listenMs: 1_500)
            async let stranger = Self.peer(ep, link: .curve(router: Keys.router.publicKey, own: unknown), sends: Self.ready("bench"), listenMs: 1_500)
            async let otherService = Self.peer(ep, link: Keys.link("dispatch"), sends: Self.ready("bench"), listenMs: 1_500)
            try await Task.sleep(for: .milliseconds(400))  // every rogue has tried to register
            var served: Set<String> = []
            for i in 0..<30 { served.insert(try await client.call(BenchMethods.echo, request: echo("\(i)")).instanceID) }
            #expect(served == ["legit"])
            let (p, s, o) = await (plain, stranger, otherService)
            #expect(p.isEmpty, "a plain peer was sent \(p)")
            #expect(s.isEmpty, "an unknown key was sent \(s)")
            #expect(o.map(Self.command) == [MDP.WorkerCommand.disconnect.rawValue], "a key of another service was sent \(o)")
            #expect(router.workersByService["bench"] == 1)
        }
        #expect(router.stats.workersRefused == 1)
        #expect(router.stats.workersRegistered == 1)
        // The unknown key (by ZAP) and the plain peer (by libzmq: another mechanism), each at the handshake.
        #expect(router.handshakesRefused.workers >= 2)
        let text = log.text.joined()
        #expect(text.contains("router refused a worker") && text.contains("key.id=\(Keys.workers["dispatch"]!.publicKey.id)")
                && text.contains("reason=key not bound to this service") && text.contains("peer.address=127.0.0.1"), "\(text)")
        #expect(text.contains("refused a connection at the CurveZMQ handshake") && text.contains("key.id=\(unknown.publicKey.id)")
                && text.contains("reason=key not allowed"), "\(text)")
        #expect(text.contains("worker registered") && text.contains("key.id=\(Keys.workers["bench"]!.publicKey.id)")
                && text.contains("version=\(CareMeshVersion.current)"), "\(text)")
        // Only names an admitted worker served are reported.
        #expect(Set(router.workersByService.keys) == ["bench"])
        let metrics = HTTPEdge(configuration: .init(), router: router, logger: TestStack.quietLogger("edge")).routerMetrics()
        #expect(metrics.contains("caremesh_router_workers_registered_total 1\n"))
        #expect(metrics.contains("caremesh_router_workers_refused_total 1\n"))
        #expect(metrics.contains("caremesh_bus_handshakes_refused_total{endpoint=\"workers\"} \(router.handshakesRefused.workers)\n"))
    }

    @Test("a READY on the client endpoint registers nothing, whatever key sent it")
    func clientEndpointRegistersNothing() async throws {
        let (router, log) = try router()
        defer { router.stop() }
        let client = TestStack.client(router, timeout: .milliseconds(800))
        defer { client.close() }
        // Even a real worker's key, bound to the very name.
        let got = await Self.peer(router.boundEndpoints.client, link: Keys.link("bench"), sends: Self.ready("bench"), listenMs: 300)
        #expect(got.isEmpty)
        #expect(router.workersByService["bench"] == nil)
        do {
            _ = try await client.call(BenchMethods.echo, request: echo("x"))
            Issue.record("a call was served by a peer of the client endpoint")
        } catch { #expect(rpcError(error).code == .unavailable) }
        #expect(router.stats.workersRefused == 1)
        #expect(router.workersByService.isEmpty)
        #expect(log.text.joined().contains("reason=READY on the client endpoint"))
    }

    @Test("a rogue cannot serve identity, so it cannot get a signing key of its own trusted")
    func rogueCannotServeSigningKeys() async throws {
        let (router, _) = try router { $0.dispatch.authentication = .required }
        defer { router.stop() }
        // The router asks identity for its keys at once and then every ≤ 2 s while it has none:
        // a rogue registered as identity would be asked within the window.
        let ep = router.boundEndpoints.worker
        async let stranger = Self.peer(ep, link: .curve(router: Keys.router.publicKey, own: .generate()), sends: Self.ready("identity"), listenMs: 2_500)
        async let otherService = Self.peer(ep, link: Keys.link("dispatch"), sends: Self.ready("identity"), listenMs: 2_500)
        let (s, o) = await (stranger, otherService)
        #expect(s.isEmpty)
        #expect(!o.contains { Self.command($0) == MDP.WorkerCommand.request.rawValue }, "\(o)")
        #expect(router.signingKeyIDs.isEmpty)
    }

    @Test("clients: the link is encrypted for any key; with a client allowlist, other keys are refused at once and listed or worker keys get in")
    func clientKeys() async throws {
        let allowed = CurveKeyPair.generate()
        let (router, _) = try router { c in c.security?.allowlist.allowClient(allowed.publicKey) }
        defer { router.stop() }
        let worker = ServiceWorker(configuration: TestStack.workerConfiguration("bench", endpoint: router.boundEndpoints.worker),
                                   handlers: echoHandlers(Probe()), logger: TestStack.quietLogger("w"))
        func client(_ link: BusLink) -> RPCClient {
            var c = ClientConfiguration(endpoint: router.boundEndpoints.client)
            c.link = link
            c.defaultTimeout = .seconds(3)
            c.maxAttempts = 1
            return RPCClient(configuration: c, logger: TestStack.quietLogger("client"))
        }
        let listed = client(.curve(router: Keys.router.publicKey, own: allowed))
        let service = client(Keys.link("alerts"))
        let stranger = client(.curve(router: Keys.router.publicKey, own: .generate()))
        let plain = client(.plain)
        defer { for c in [listed, service, stranger, plain] { c.close() } }
        try await TestStack.withWorkers([worker]) {
            try await TestStack.waitUntilServing(listed, "bench")
            #expect(try await service.call(BenchMethods.echo, request: echo("s")).payload == Data("s".utf8))
            let clock = ContinuousClock()
            let start = clock.now
            do {
                _ = try await stranger.call(BenchMethods.echo, request: echo("x"))
                Issue.record("a key not in the client allowlist was served")
            } catch {
                #expect(rpcError(error).code == .unauthenticated, "\(error)")
            }
            #expect(clock.now - start < .seconds(2), "refused at the handshake, not at the deadline")
            do {
                _ = try await plain.call(BenchMethods.echo, request: echo("x"), options: .init(timeout: .milliseconds(500)))
                Issue.record("a plain client was served")
            } catch {
                #expect([.unauthenticated, .deadlineExceeded, .unavailable].contains(rpcError(error).code), "\(error)")
            }
        }
        #expect(router.handshakesRefused.clients >= 2)
    }

    @Test("the HTTP edge and the router's own key fetcher reach a secured router in-process")
    func inprocClientsNeedNoKey() async throws {
        let (router, _) = try router()
        defer { router.stop() }
        var c = ClientConfiguration(endpoint: router.localClientEndpoint)
        c.defaultTimeout = .seconds(2)
        let local = RPCClient(configuration: c, logger: TestStack.quietLogger("local"))
        defer { local.close() }
        let worker = ServiceWorker(configuration: TestStack.workerConfiguration("bench", endpoint: router.boundEndpoints.worker),
                                   handlers: echoHandlers(Probe()), logger: TestStack.quietLogger("w"))
        try await TestStack.withWorkers([worker]) {
            try await TestStack.waitUntilServing(local, "bench")
        }
    }
}

import CareMeshContracts
import CareMeshRPC
import CareMeshRouter
import CareMeshStore
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import ZMQ

/// Test support: an in-process router on ephemeral loopback ports, in-process workers, and
/// clients pointed at it. Real ZeroMQ sockets; nothing is mocked.
public enum TestStack {
    /// A router configuration on `tcp://127.0.0.1:*` with fast heartbeats for tests.
    ///
    /// Authentication is disabled unless asked for: most suites test the bus alone, with no
    /// identity service to sign tokens (identity's own suites turn it on).
    /// The bus is secured as deployed (CurveZMQ, the test keys of `BusKeys`) unless `secured`
    /// is false (a plain peer such as majortomo's).
    public static func routerConfiguration(heartbeatMs: UInt64 = 100, liveness: UInt64 = 3,
                                           clientEndpoint: String = "tcp://127.0.0.1:*",
                                           workerEndpoint: String = "tcp://127.0.0.1:*",
                                           authentication: RouterStateMachine.Authentication = .disabled,
                                           secured: Bool = true) -> RouterConfiguration {
        var c = RouterConfiguration()
        c.security = secured ? BusKeys.routerSecurity : nil
        c.dispatch.authentication = authentication
        // Signs in as "router" to follow identity's token revocations (the test secret).
        c.serviceSecret = TestDatabase.serviceSecret("router")
        c.clientEndpoint = clientEndpoint
        c.workerEndpoint = workerEndpoint
        c.dispatch.heartbeatIntervalNs = heartbeatMs * 1_000_000
        c.dispatch.liveness = liveness
        return c
    }

    /// Starts a router; stop it with `stop()`.
    public static func startRouter(_ configuration: RouterConfiguration = routerConfiguration()) throws -> Router {
        let router = Router(configuration: configuration, logger: quietLogger("router"))
        try router.start()
        return router
    }

    /// The environment a service started in a test needs to serve through `router` (its
    /// worker endpoint and the router's fast heartbeats,
    /// and the bus's keys: the router's public key and every test service's own secret key).
    public static func workerEnvironment(_ router: Router, heartbeatMs: UInt64 = 100) -> [String: String] {
        ["CAREMESH_ROUTER_WORKER_ENDPOINT": router.boundEndpoints.worker, "CAREMESH_HEARTBEAT_MS": "\(heartbeatMs)"]
            .merging(BusKeys.environment(secured: router.configuration.security != nil)) { $1 }
    }

    /// A worker configuration for `service` at `endpoint` with the router's fast heartbeats.
    /// Its link is CurveZMQ with `service`'s test key unless `secured` is false.
    public static func workerConfiguration(_ service: String, endpoint: String, heartbeatMs: UInt64 = 100,
                                           liveness: UInt64 = 3, capacity: Int = 64, secured: Bool = true) -> WorkerConfiguration {
        var c = WorkerConfiguration(service: service)
        c.link = secured ? BusKeys.link(service) : .plain
        c.endpoint = endpoint
        c.connection.heartbeatIntervalNs = heartbeatMs * 1_000_000
        c.connection.liveness = liveness
        c.connection.capacity = capacity
        c.connection.reconnectInitialNs = 100_000_000
        c.connection.drainAckTimeoutNs = 300_000_000
        return c
    }

    /// Runs `workers` while `body` runs, then shuts them down gracefully and waits for them.
    public static func withWorkers<T: Sendable>(_ workers: [ServiceWorker],
                                                _ body: @Sendable () async throws -> T) async throws -> T {
        try await withServices(workers, body)
    }

    /// Runs `services` in a `ServiceGroup` while `body` runs, then shuts them down gracefully
    /// (in reverse order, as SIGTERM would) and waits for them.
    public static func withServices<T: Sendable>(_ services: [any Service],
                                                 _ body: @Sendable () async throws -> T) async throws -> T {
        let group = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) },
                                                      logger: quietLogger("services")))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            do {
                let result = try await body()
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
                return result
            } catch {
                await group.triggerGracefulShutdown()
                try? await tasks.waitForAll()
                throw error
            }
        }
    }

    /// A client of `router` with a short default timeout.
    public static func client(_ router: Router, timeout: Duration = .seconds(5),
                              dialect: MDP.Dialect = .delimited) -> RPCClient {
        var c = ClientConfiguration(endpoint: router.boundEndpoints.client)
        c.link = BusKeys.clientLink(router)
        c.defaultTimeout = timeout
        c.dialect = dialect
        return RPCClient(configuration: c, logger: quietLogger("client"))
    }

    /// Waits until `service` answers health through `client` (workers register asynchronously).
    public static func waitUntilServing(_ client: RPCClient, _ service: String, within: Duration = .seconds(10)) async throws {
        let clock = ContinuousClock()
        let until = clock.now + within
        while clock.now < until {
            if let r = try? await client.call(HealthMethods.check, service: service, request: .init(),
                                              options: .init(timeout: .milliseconds(500))), r.status == .serving { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw RPCError(.unavailable, "\(service) did not become healthy in time")
    }

    /// `body`'s result once it stops throwing, retrying every 50 ms up to `timeout` (then
    /// its last error).
    public static func eventually<T: Sendable>(timeout: Duration = .seconds(10),
                                               _ body: () async throws -> T) async throws -> T {
        let clock = ContinuousClock()
        let until = clock.now + timeout
        while true {
            do { return try await body() } catch {
                if clock.now >= until { throw error }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// A logger that only reports warnings (tests stay readable).
    public static func quietLogger(_ label: String) -> Logger { ServiceRunner.quietLogger("test.\(label)") }

    /// The folder of the built executables (router, caremesh, identity, …): beside the test bundle.
    public static var binaries: URL {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        while dir.path != "/" && !FileManager.default.isExecutableFile(atPath: dir.appendingPathComponent("caremesh").path) {
            dir = dir.deletingLastPathComponent()
        }
        return dir
    }

    /// The package root (for proto/ and .venv).
    public static var packageRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// A process for `executable` with `bus` (keys of the test bus), this process's environment
    /// and `environment`.
    static func process(_ executable: URL, _ arguments: [String], environment: [String: String],
                        bus: [String: String]) -> Process {
        let p = Process()
        p.executableURL = executable
        p.arguments = arguments
        // The test bus's keys first, then this process's environment, then the test's own.
        var env = bus
        env.merge(ProcessInfo.processInfo.environment) { _, new in new }
        env.merge(environment) { _, new in new }
        p.environment = env
        return p
    }

    /// Starts a child process with output to a temporary log. It has the test bus's keys (a
    /// router started so uses them; a worker or client reaches the test routers).
    public static func spawn(_ executable: URL, _ arguments: [String], environment: [String: String] = [:]) throws -> Process {
        let p = process(executable, arguments, environment: environment, bus: BusKeys.routerEnvironment)
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("caremesh-test-\(executable.lastPathComponent)-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        return p
    }

    /// Runs a blocking body on its own thread (raw ZeroMQ sockets in tests), off the task pool.
    public static func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        let box = Mutex<T?>(nil)
        let thread = IOThread(name: "test-raw") { let v = body(); box.withLock { $0 = v } }
        await thread.joined()
        return box.withLock { $0! }
    }
}

/// A raw ZeroMQ DEALER for sending hand-made frames in tests. Use inside `TestStack.onThread`.
public final class RawPeer {
    public let socket: ZMQSocket

    /// Connects over `link` (plain by default: give a secured router's link to get in).
    public init(connect endpoint: String, link: BusLink = .plain) throws {
        socket = try ZMQContext.shared.socket(.dealer)
        try link.apply(to: socket)
        try socket.connect(endpoint)
    }

    public func send(_ frames: [Data]) throws { try socket.send(frames, dontWait: false) }

    /// The next message, or nil after `timeoutMs`.
    public func receive(timeoutMs: Int) -> [Data]? {
        var poller = ZMQPoller()
        poller.add(socket)
        let until = monotonicNanos() + UInt64(timeoutMs) * 1_000_000
        while monotonicNanos() < until {
            if let m = try? socket.receive() { return m }
            _ = poller.pollMask(timeoutMs: max(1, Int((until - monotonicNanos()) / 1_000_000)))
        }
        return try? socket.receive()
    }

    deinit { socket.close() }
}

extension TestStack {
    /// The bus's keys in tests: one router key pair and one key pair per service name the tests
    /// serve, each bound to its own name, as `caremesh up` makes them.
    public enum BusKeys {
        public static let router = CurveKeyPair.generate()
        /// The names tests register workers under.
        public static let services = ["identity", "dispatch", "alerts", "messaging", "bench", "inner", "outer", "bare"]
        public static let workers: [String: CurveKeyPair] = Dictionary(uniqueKeysWithValues: services.map { ($0, .generate()) })

        public static var allowlist: BusAllowlist {
            var a = BusAllowlist()
            for (service, pair) in workers { try! a.allowWorker(pair.publicKey, services: [service]) }
            return a
        }

        public static var routerSecurity: RouterConfiguration.Security { .init(keys: router, allowlist: allowlist) }

        /// A worker's link for `service` (one of `services`).
        public static func link(_ service: String) -> BusLink { .curve(router: router.publicKey, own: workers[service]!) }

        /// A client's link to `router`: CurveZMQ with a fresh key when it is secured.
        public static func clientLink(_ router: Router) -> BusLink {
            router.configuration.security.map { .curve(router: $0.keys.publicKey, own: .generate()) } ?? .plain
        }

        /// The variables a process needs to reach a router of these keys (or `off`).
        public static func environment(secured: Bool) -> [String: String] {
            guard secured else { return [BusSettings.security: "off"] }
            var env = [BusSettings.routerPublicKey: router.publicKey.z85, BusSettings.security: "curve"]
            for (service, pair) in workers { env["\(service.uppercased())_BUS_SECRET_KEY"] = pair.secretKey.z85 }
            return env
        }

        /// What a router process needs for these keys.
        public static var routerEnvironment: [String: String] {
            environment(secured: true).merging([
                BusSettings.routerSecretKey: router.secretKey.z85,
                BusSettings.workerKeys: workers.map { "\($0.key) \($0.value.publicKey.z85)" }.joined(separator: "\n"),
            ]) { $1 }
        }
    }

    /// A loopback TCP port that was free a moment ago (bind to 0, read it back, close).
    public static func freePort() -> Int { LoopbackPort.ephemeral() }

    /// The Python with majortomo, protobuf and pyzmq that scripts/test.sh installs in .venv
    /// (or `$CAREMESH_PYTHON`).
    public static var python: URL {
        if let p = ProcessInfo.processInfo.environment["CAREMESH_PYTHON"] { return URL(fileURLWithPath: p) }
        return packageRoot.appendingPathComponent(".venv/bin/python")
    }

    /// Runs a process to completion; returns its exit status and output. It knows the test
    /// routers' public key (`CAREMESH_ROUTER_PUBLIC_KEY`), as a user of them would.
    public static func run(_ executable: URL, _ arguments: [String], environment: [String: String] = [:],
                           timeout: Duration = .seconds(60)) async throws -> (status: Int32, stdout: String, stderr: String) {
        let p = process(executable, arguments, environment: environment,
                        bus: [BusSettings.routerPublicKey: BusKeys.router.publicKey.z85])
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let clock = ContinuousClock()
        let until = clock.now + timeout
        // Read while it runs so a full pipe never blocks it.
        let reader = Task.detached { (out.fileHandleForReading.readDataToEndOfFile(), err.fileHandleForReading.readDataToEndOfFile()) }
        while p.isRunning && clock.now < until { try await Task.sleep(for: .milliseconds(20)) }
        if p.isRunning { p.terminate() }
        let (o, e) = await reader.value
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    /// Waits up to `timeout` for a process to exit.
    public static func waitForExit(_ p: Process, timeout: Duration) async -> Bool {
        let clock = ContinuousClock()
        let until = clock.now + timeout
        while p.isRunning && clock.now < until { try? await Task.sleep(for: .milliseconds(10)) }
        return !p.isRunning
    }
}

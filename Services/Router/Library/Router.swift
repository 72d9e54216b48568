import CareMeshAuth
import CareMeshContracts
import CareMeshRPC
import Crypto
import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import ZMQ

/// The CareMesh router: an MDP/0.2 broker with a client socket and a worker socket.
///
/// One I/O thread owns both ROUTER sockets and runs `RouterStateMachine`; nothing else
/// touches them. Run it as a `Service`, or `start()`/`stop()` it directly (tests):
/// ```swift
/// let router = Router(configuration: .init(environment: ProcessInfo.processInfo.environment))
/// try await ServiceGroup(services: [router], gracefulShutdownSignals: [.sigterm], logger: logger).run()
/// ```
public final class Router: Service, Sendable {
    public let configuration: RouterConfiguration
    let logger: Logger
    private let wake = EventSignal()

    /// Wakes the I/O thread to take what a background task handed it.
    func signalIOThread() { wake.signal() }
    private let control = Mutex(Control())
    private let snapshot = Mutex(RouterStateMachine.Stats())
    private let extraCounters = Mutex(IOCounters())
    private let endpoints = Mutex<(client: String, worker: String)>(("", ""))
    /// Signing keys fetched from identity, waiting for the I/O thread to take them.
    private let fetchedKeys = Mutex<[String: Curve25519.Signing.PublicKey]?>(nil)
    /// Token revocations pulled from identity, waiting for the I/O thread to take them.
    let pulledRevocations = Mutex<[Caremesh_Identity_V1_TokensRevoked]>([])
    /// Revocation entries the router holds (as of the last change).
    public var revokedTokenEntries: Int { revokedCount.withLock { $0 } }
    private let revokedCount = Mutex(0)
    /// Set by the I/O thread when a token names an unknown key: fetch again soon.
    private let keysWanted = Atomic<Bool>(false)
    private let knownKeys = Mutex<Set<String>>([])

    struct Control {
        var stopping = false
        var thread: IOThread?
        var keyFetcher: Task<Void, Never>?
        var keyClient: RPCClient?
    }

    /// Send failures and loop counters kept by the I/O layer.
    public struct IOCounters: Sendable, Equatable {
        public var undeliverable = 0
        public var messagesIn = 0
    }

    public init(configuration: RouterConfiguration = .init(), logger: Logger = Logger(label: "caremesh.router")) {
        self.configuration = configuration
        self.logger = logger
        zapDomains = configuration.security.map { security in
            let id = UInt64.random(in: 0...UInt64.max)
            return (ZAPHandler.Domain(name: "caremesh-router-\(id)-workers", role: .workers, allowlist: security.allowlist, logger: logger),
                    ZAPHandler.Domain(name: "caremesh-router-\(id)-clients", role: .clients, allowlist: security.allowlist, logger: logger))
        }
    }

    /// The ZAP domains of the worker and client endpoints (nil: the bus is not secured).
    let zapDomains: (workers: ZAPHandler.Domain, clients: ZAPHandler.Domain)?
    /// Worker refusals logged so far (they are rate-limited: a peer may repeat).
    let refusalsLogged = Atomic<Int>(0)

    /// The state machine's counters as of the last loop turn.
    public var stats: RouterStateMachine.Stats { snapshot.withLock { $0 } }
    /// Live workers by service, for every service seen (as of the last change).
    public var workersByService: [String: Int] { workerCounts.withLock { $0 } }
    private let workerCounts = Mutex<[String: Int]>([:])
    /// Send failures (unknown peer, full pipe) and messages received.
    public var ioCounters: IOCounters { extraCounters.withLock { $0 } }
    /// The endpoints actually bound (a `*` port resolved).
    public var boundEndpoints: (client: String, worker: String) { endpoints.withLock { $0 } }
    /// Where a client in this process reaches the bound client socket (loopback for a socket
    /// bound on every interface); "" before `start()`.
    public var loopbackClientEndpoint: String { boundEndpoints.client.replacingOccurrences(of: "//0.0.0.0:", with: "//127.0.0.1:") }
    /// Where a client in this process (the HTTP edge, the key fetcher) reaches the client
    /// socket without TCP: an `inproc://` endpoint bound on it too, in the shared ZeroMQ
    /// context; "" before `start()`.
    public var localClientEndpoint: String { inprocEndpoint.withLock { $0 } }
    private let inprocEndpoint = Mutex("")
    /// The ids of the signing keys tokens are verified with now.
    public var signingKeyIDs: Set<String> { knownKeys.withLock { $0 } }

    /// Binds both sockets and starts the I/O thread; throws if a bind fails.
    public func start() throws {
        if let zapDomains {
            // Bound before the router's sockets: libzmq lets every peer in while no handler is.
            try ZAPHandler.shared.start()
            ZAPHandler.shared.register(zapDomains.workers)
            ZAPHandler.shared.register(zapDomains.clients)
        } else {
            logger.warning("the bus is not secured (CAREMESH_BUS_SECURITY=off): links are plain TCP and any peer may register as any service; for the bus's own tests and benchmarks only")
        }
        let started = StartupResult()
        let thread = IOThread(name: "caremesh-router") { [self] in
            self.loop(started: started)
        }
        control.withLock { $0.thread = thread }
        do { try started.wait() } catch {
            thread.join()
            throw error
        }
        if configuration.dispatch.authentication == .required {
            var config = ClientConfiguration(endpoint: localClientEndpoint)
            config.maxAttempts = 1
            config.credentials = configuration.serviceSecret.map { ServiceCredentials(service: "router", secret: $0) }
            let client = RPCClient(configuration: config, logger: logger)
            let fetcher = Task {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await self.fetchSigningKeys(client) }
                    group.addTask { await self.pullRevocations(client) }
                }
            }
            control.withLock { $0.keyFetcher = fetcher; $0.keyClient = client }
        } else {
            logger.warning("router authentication is disabled: no access token is checked (tests only)")
        }
    }

    /// Asks the I/O thread to stop without waiting for it.
    public func requestStop() {
        let fetcher = control.withLock { c -> Task<Void, Never>? in
            c.stopping = true
            return c.keyFetcher
        }
        fetcher?.cancel()
        wake.signal()
    }

    /// Answers what is pending `UNAVAILABLE`, disconnects workers, closes the sockets.
    public func stop() {
        requestStop()
        control.withLock { $0.thread }?.join()
        // The key fetcher's socket goes with the router: nothing it started keeps reconnecting.
        takeKeyClient()?.close()
    }

    private func takeKeyClient() -> RPCClient? {
        control.withLock { c in defer { c.keyClient = nil }; return c.keyClient }
    }

    public func run() async throws {
        try start()
        guard let thread = control.withLock({ $0.thread }) else { return }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await thread.joined()
            } onGracefulShutdown: { self.requestStop() }
        } onCancel: { self.requestStop() }
        if let client = takeKeyClient() { await Task.detached { client.close() }.value }
    }

    // MARK: - The I/O thread

    private func loop(started: StartupResult) {
        let context = ZMQContext.shared
        let frontend: ZMQSocket, backend: ZMQSocket
        do {
            frontend = try makeSocket(context, configuration.clientEndpoint, zap: zapDomains?.clients)
            backend = try makeSocket(context, configuration.workerEndpoint, zap: zapDomains?.workers)
            endpoints.withLock { $0 = (frontend.lastEndpoint, backend.lastEndpoint) }
            let local = "inproc://caremesh-router-clients-\(UInt64.random(in: 0...UInt64.max))"
            try frontend.bind(local)
            inprocEndpoint.withLock { $0 = local }
        } catch {
            logger.error("router could not bind", metadata: ["error": "\(error)"])
            started.fail(error)
            return
        }
        logger.info("router listening", metadata: [
            "endpoint.client": "\(frontend.lastEndpoint)", "endpoint.worker": "\(backend.lastEndpoint)",
        ])
        started.succeed()

        // With CurveZMQ, handshakes libzmq fails before asking ZAP (a plain peer, a wrong router
        // key) are counted and logged with the ZAP handler's refusals of the same endpoint.
        var monitors: [(ZMQEventMonitor, ZAPHandler.Domain)] = []
        if let zapDomains {
            for (socket, domain) in [(frontend, zapDomains.clients), (backend, zapDomains.workers)] {
                if let m = try? ZMQEventMonitor(socket, context: context, mask: ZMQMonitorEvent.handshakeFailureMask) {
                    monitors.append((m, domain))
                }
            }
        }
        var machine = RouterStateMachine(configuration: configuration.dispatch, workerKeys: configuration.security?.allowlist)
        var nextRevocationExpiry: UInt64 = 0
        var poller = ZMQPoller()
        poller.add(frontend)
        poller.add(backend)
        poller.add(fd: wake.fd)
        for (m, _) in monitors { poller.add(m.events) }
        let sockets = [frontend, backend]
        var actions: [RouterStateMachine.Action] = []
        actions.reserveCapacity(64)
        var io = IOCounters()
        let undeliverable = Counter(label: "caremesh_router_undeliverable_total")
        let malformed = Counter(label: "caremesh_router_malformed_total")
        var lastMalformed = 0

        func flush() {
            for action in actions {
                let peer: PeerAddress
                switch action {
                case .toClient(let p, _, _, _, _), .toWorker(let p, _, _, _): peer = p
                }
                let socket = sockets[Int(peer.socket)]
                do {
                    // Frame by frame, as they come: no array is built per message.
                    try socket.sendFrame(peer.identity, more: true)
                    switch action {
                    case .toClient(_, let dialect, let service, let final, let body):
                        try MDP.emitClientReply(dialect, final: final, service: service, body: body) { frame, more in
                            try socket.sendFrame(frame, more: more)
                        }
                    case .toWorker(_, let dialect, let command, let rest):
                        try MDP.emitWorker(dialect, command, rest) { frame, more in try socket.sendFrame(frame, more: more) }
                    }
                } catch {
                    io.undeliverable += 1
                    undeliverable.increment()
                    if io.undeliverable < 20 || io.undeliverable % 1000 == 0 {
                        logger.warning("router could not deliver a message", metadata: [
                            "peer": "\(peer)", "error": "\(error)", "undeliverable.total": "\(io.undeliverable)",
                        ])
                    }
                }
            }
            actions.removeAll(keepingCapacity: true)
        }

        while !control.withLock({ $0.stopping }) {
            let now = monotonicNanos()
            let wakeAt = machine.nextWakeup
            let timeout = wakeAt == .max ? 250 : Int(min(250, wakeAt > now ? (wakeAt - now + 999_999) / 1_000_000 : 0))
            let ready = poller.pollMask(timeoutMs: timeout)
            if ready & 0b100 != 0 { wake.drain() }
            for (i, (m, domain)) in monitors.enumerated() where ready & (1 << UInt64(3 + i)) != 0 {
                while let event = m.next() {
                    if case .handshakeRefused = event { domain.refuse(nil, address: "-", reason: "not CurveZMQ, or not this router's key") }
                }
            }
            let revocations = pulledRevocations.withLock { r in defer { r.removeAll() }; return r }
            if !revocations.isEmpty || (!machine.revoked.isEmpty && now >= nextRevocationExpiry) {
                machine.revoke(revocations)
                nextRevocationExpiry = now + 60_000_000_000
                let count = machine.revoked.count
                revokedCount.withLock { $0 = count }
            }
            if let keys = fetchedKeys.withLock({ k in defer { k = nil }; return k }) {
                machine.setSigningKeys(keys)
                let ids = machine.signingKeyIDs
                knownKeys.withLock { $0 = ids }
            }
            for index in 0..<2 where ready & (1 << UInt64(index)) != 0 {
                // One clock read per batch: a batch takes microseconds, deadlines are in ms.
                let batchNow = monotonicNanos()
                for _ in 0..<512 {
                    // A READY's connection properties (its key id, its address) are read, no
                    // other message's.
                    guard let (frames, properties) = try? sockets[index].receive(propertiesIf: MDP.looksLikeWorkerReady) else { break }
                    io.messagesIn += 1
                    guard frames.count >= 2,
                          let (dialect, message) = MDP.decodeAtBroker(frames[1...]) else {
                        machine.malformed()
                        continue
                    }
                    let peer = PeerAddress(socket: UInt8(index), identity: frames[0])
                    let input: RouterStateMachine.Input
                    if case .clientRequest(let service, let body) = message {
                        input = .fromClient(peer, dialect, service: service, body: body)
                    } else if index == 0 {
                        // The client endpoint never registers a worker, whatever it is sent.
                        machine.workerCommandOnClientEndpoint(message, properties)
                        continue
                    } else {
                        input = .fromWorker(peer, dialect, message, properties)
                    }
                    machine.handle(input, now: batchNow, into: &actions)
                }
            }
            // Sent together after the batch: libzmq's I/O thread then wakes once for many
            // messages instead of once per message.
            flush()
            machine.tick(now: monotonicNanos(), into: &actions)
            flush()
            if !machine.registrations.isEmpty {
                logRegistrations(machine.registrations)
                machine.registrations.removeAll(keepingCapacity: true)
            }
            if machine.workersChanged {
                machine.workersChanged = false
                let workers = machine.workersByService
                workerCounts.withLock { $0 = workers }
            }
            if machine.wantsSigningKeys {
                machine.wantsSigningKeys = false
                keysWanted.store(true, ordering: .relaxed)
            }
            if machine.stats.malformed != lastMalformed {
                malformed.increment(by: machine.stats.malformed - lastMalformed)
                lastMalformed = machine.stats.malformed
            }
            let stats = machine.stats
            snapshot.withLock { $0 = stats }
            let counters = io
            extraCounters.withLock { $0 = counters }
        }
        machine.shutdown(into: &actions)
        flush()
        for (m, _) in monitors { m.close() }  // before their sockets: see ZMQEventMonitor
        frontend.close()
        backend.close()
        if let zapDomains {
            ZAPHandler.shared.unregister(zapDomains.workers.name)
            ZAPHandler.shared.unregister(zapDomains.clients.name)
        }
        logger.info("router stopped")
    }

    // MARK: - Signing keys

    /// Keeps the router's copy of identity's public keys fresh: fetched by RPC through the
    /// router's own client socket at start, then every `max_age_seconds` (bounded to
    /// 5 s…5 min), and at most every 2 s when a token names a key the router does not know
    /// (identity publishes a new key before it signs with it, so that is rare).
    private func fetchSigningKeys(_ client: RPCClient) async {
        var failures = 0
        while !Task.isCancelled {
            var nextNs: UInt64
            do {
                let reply = try await client.call(IdentityMethods.getSigningKeys, request: .init(),
                                                  options: .init(timeout: .seconds(2)))
                let keys = TokenVerifier.keys(from: reply)
                let changed = Set(keys.keys) != signingKeyIDs
                fetchedKeys.withLock { $0 = keys }
                wake.signal()
                if changed {
                    logger.info("router signing keys updated", metadata: ["kids": "\(keys.keys.sorted())"])
                }
                failures = 0
                nextNs = UInt64(min(300, max(5, reply.maxAgeSeconds))) * 1_000_000_000
            } catch {
                failures += 1
                if failures == 1 || failures % 60 == 0 {
                    logger.warning("router could not fetch identity's signing keys", metadata: [
                        "code": "\(error.code.name)", "attempts": "\(failures)",
                    ])
                }
                nextNs = min(5_000_000_000, 250_000_000 << UInt64(min(failures - 1, 5)))
            }
            // Sleep until the next refresh, or until a token names an unknown key.
            let started = monotonicNanos()
            let earliest = started + 2_000_000_000
            while !Task.isCancelled {
                let now = monotonicNanos()
                if now - started >= nextNs { break }
                if failures == 0, now >= earliest, keysWanted.exchange(false, ordering: .relaxed) { break }
                try? await Task.sleep(nanoseconds: 100_000_000)
            }
        }
    }

    private func makeSocket(_ context: ZMQContext, _ endpoint: String, zap: ZAPHandler.Domain?) throws -> ZMQSocket {
        let s = try context.socket(.router)
        if let zap, let keys = configuration.security?.keys { try s.becomeCurveServer(keys, zapDomain: zap.name) }
        try s.setOption(ZMQOption.routerMandatory, 1)
        try s.setOption(ZMQOption.routerHandover, 1)
        try s.setOption(ZMQOption.maxMessageSize, int64: Int64(configuration.dispatch.maxMessageSize) * 4)
        try s.setOption(ZMQOption.sendHighWaterMark, configuration.sendHighWaterMark)
        try s.setOption(ZMQOption.receiveHighWaterMark, configuration.sendHighWaterMark)
        try s.setOption(ZMQOption.linger, 200)
        try s.bind(endpoint)
        return s
    }
}

import CareMeshRPC
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
    private let logger: Logger
    private let wake = EventSignal()
    private let control = Mutex(Control())
    private let snapshot = Mutex(RouterStateMachine.Stats())
    private let extraCounters = Mutex(IOCounters())
    private let endpoints = Mutex<(client: String, worker: String)>(("", ""))

    struct Control {
        var stopping = false
        var thread: IOThread?
    }

    /// Send failures and loop counters kept by the I/O layer.
    public struct IOCounters: Sendable, Equatable {
        public var undeliverable = 0
        public var messagesIn = 0
    }

    public init(configuration: RouterConfiguration = .init(), logger: Logger = Logger(label: "caremesh.router")) {
        self.configuration = configuration
        self.logger = logger
    }

    /// The state machine's counters as of the last loop turn.
    public var stats: RouterStateMachine.Stats { snapshot.withLock { $0 } }
    /// Send failures (unknown peer, full pipe) and messages received.
    public var ioCounters: IOCounters { extraCounters.withLock { $0 } }
    /// The endpoints actually bound (a `*` port resolved).
    public var boundEndpoints: (client: String, worker: String) { endpoints.withLock { $0 } }

    /// Binds both sockets and starts the I/O thread; throws if a bind fails.
    public func start() throws {
        let started = StartupResult()
        let thread = IOThread(name: "caremesh-router") { [self] in
            self.loop(started: started)
        }
        control.withLock { $0.thread = thread }
        do { try started.wait() } catch {
            thread.join()
            throw error
        }
    }

    /// Asks the I/O thread to stop without waiting for it.
    public func requestStop() {
        control.withLock { $0.stopping = true }
        wake.signal()
    }

    /// Answers what is pending `UNAVAILABLE`, disconnects workers, closes the sockets.
    public func stop() {
        requestStop()
        control.withLock { $0.thread }?.join()
    }

    public func run() async throws {
        try start()
        guard let thread = control.withLock({ $0.thread }) else { return }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await thread.joined()
            } onGracefulShutdown: { self.requestStop() }
        } onCancel: { self.requestStop() }
    }

    // MARK: - The I/O thread

    private func loop(started: StartupResult) {
        let context = ZMQContext.shared
        let frontend: ZMQSocket, backend: ZMQSocket
        do {
            frontend = try makeSocket(context, configuration.clientEndpoint)
            backend = try makeSocket(context, configuration.workerEndpoint)
            endpoints.withLock { $0 = (frontend.lastEndpoint, backend.lastEndpoint) }
        } catch {
            logger.error("router could not bind", metadata: ["error": "\(error)"])
            started.fail(error)
            return
        }
        logger.info("router listening", metadata: [
            "endpoint.client": "\(frontend.lastEndpoint)", "endpoint.worker": "\(backend.lastEndpoint)",
        ])
        started.succeed()

        var machine = RouterStateMachine(configuration: configuration.dispatch)
        var poller = ZMQPoller()
        poller.add(frontend)
        poller.add(backend)
        poller.add(fd: wake.fd)
        let sockets = [frontend, backend]
        var actions: [RouterStateMachine.Action] = []
        actions.reserveCapacity(64)
        var io = IOCounters()
        let undeliverable = Counter(label: "caremesh_router_undeliverable_total")
        let malformed = Counter(label: "caremesh_router_malformed_total")
        var lastMalformed = 0

        func flush() {
            for action in actions {
                let frames: [Data]
                let peer: PeerAddress
                switch action {
                case .toClient(let p, let dialect, let service, let final, let body):
                    peer = p
                    frames = [p.identity] + MDP.clientReply(dialect, final: final, service: service, body: body)
                case .toWorker(let p, let dialect, let command, let rest):
                    peer = p
                    frames = [p.identity] + MDP.worker(dialect, command, rest)
                }
                do {
                    try sockets[Int(peer.socket)].send(frames)
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
            for index in 0..<2 where ready & (1 << UInt64(index)) != 0 {
                for _ in 0..<512 {
                    guard let frames = try? sockets[index].receive() else { break }
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
                    } else {
                        input = .fromWorker(peer, dialect, message)
                    }
                    machine.handle(input, now: monotonicNanos(), into: &actions)
                    flush()
                }
            }
            machine.tick(now: monotonicNanos(), into: &actions)
            flush()
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
        frontend.close()
        backend.close()
        logger.info("router stopped")
    }

    private func makeSocket(_ context: ZMQContext, _ endpoint: String) throws -> ZMQSocket {
        let s = try context.socket(.router)
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

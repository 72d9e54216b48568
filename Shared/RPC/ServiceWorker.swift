import CareMeshContracts
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import ZMQ

/// Serves one MDP service through the router: the runtime under every CareMesh service.
///
/// One I/O thread owns the DEALER socket: it registers, heartbeats whatever the handlers are
/// doing, reconnects with backoff, and sends replies. Handlers run as child tasks of a
/// discarding task group, at most `capacity` at once (the router sends no more). Work whose
/// deadline has passed is not started, and running work is cancelled at its deadline. On
/// graceful shutdown (SIGTERM) it sends DISCONNECT, finishes what it holds, then stops.
/// Every worker also serves `caremesh.health.v1.Health`.
///
/// ```swift
/// var handlers = RPCHandlers()
/// handlers.register(BenchMethods.echo) { request, _ in … }
/// let worker = ServiceWorker(configuration: .init(service: "bench"), handlers: handlers)
/// try await ServiceGroup(services: [worker], gracefulShutdownSignals: [.sigterm], logger: logger).run()
/// ```
public final class ServiceWorker: Service, Sendable {
    public let configuration: WorkerConfiguration
    private let handlers: RPCHandlers
    private let logger: Logger
    private let wake = EventSignal()
    private let outbox = Mutex(Outbox())
    private let serving: ServingFlag

    /// Whether health answers SERVING (false once draining).
    final class ServingFlag: Sendable {
        let value = Mutex(true)
    }

    struct Job: Sendable {
        var generation: Int
        var client: Data
        var header: RequestHeader
        var message: Data
        var deadline: UInt64
    }

    struct Reply: Sendable {
        var generation: Int
        var client: Data
        var frames: [Data]
    }

    struct Outbox: Sendable {
        var replies: [Reply] = []
        var drainRequested = false
        var handlersDone = false
    }

    public init(configuration: WorkerConfiguration, handlers: RPCHandlers = RPCHandlers(),
                logger: Logger = Logger(label: "caremesh.worker")) {
        self.configuration = configuration
        var all = handlers
        let serving = ServingFlag()
        self.serving = serving
        let info = (configuration.instanceID, configuration.version)
        all.register(HealthMethods.check) { request, _ in
            var reply = Caremesh_Health_V1_HealthCheckResponse()
            reply.instanceID = info.0
            reply.version = info.1
            if !request.service.isEmpty && request.service != configuration.service {
                reply.status = .serviceUnknown
            } else {
                reply.status = serving.value.withLock { $0 } ? .serving : .notServing
            }
            return reply
        }
        self.handlers = all
        var logger = logger
        logger[metadataKey: "service"] = "\(configuration.service)"
        self.logger = logger
    }

    /// Stops taking work and drains (what SIGTERM does through the service group).
    public func beginGracefulShutdown() {
        serving.value.withLock { $0 = false }
        outbox.withLock { $0.drainRequested = true }
        wake.signal()
    }

    public func run() async throws {
        let (stream, intake) = AsyncStream.makeStream(of: Job.self)
        let thread = IOThread(name: "caremesh-worker-\(configuration.service)") { [self] in
            self.loop(intake: intake)
        }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await withDiscardingTaskGroup { group in
                    for await job in stream {
                        group.addTask { await self.execute(job) }
                    }
                }
            } onGracefulShutdown: { self.beginGracefulShutdown() }
        } onCancel: { self.beginGracefulShutdown() }
        outbox.withLock { $0.handlersDone = true }
        wake.signal()
        await thread.joined()
    }

    // MARK: - Handlers (Swift concurrency)

    private func execute(_ job: Job) async {
        let frames = await answer(job)
        outbox.withLock { $0.replies.append(Reply(generation: job.generation, client: job.client, frames: frames)) }
        wake.signal()
    }

    private func answer(_ job: Job) async -> [Data] {
        let id = job.header.requestID
        let start = monotonicNanos()
        guard start < job.deadline else {
            return Self.errorFrames(id, RPCError(.deadlineExceeded, "the deadline passed before the call started"))
        }
        guard let handler = handlers.handler(for: job.header.method) else {
            return Self.errorFrames(id, RPCError(.unimplemented, "\(configuration.service) does not serve '\(job.header.method)'"))
        }
        let context = RPCContext(method: job.header.method, requestID: id, deadline: job.deadline,
                                 metadata: job.header.metadata, caller: job.header.hasCaller ? job.header.caller : nil)
        let outcome: Result<Data, any Error>? = await withTaskGroup(of: Result<Data, any Error>?.self) { group in
            group.addTask {
                await RPCContext.$current.withValue(context) {
                    do { return .success(try await handler(job.message, context)) } catch { return .failure(error) }
                }
            }
            group.addTask {
                try? await Task.sleep(for: .nanoseconds(Int64(job.deadline - start)))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        switch outcome {
        case .none:
            return Self.errorFrames(id, RPCError(.deadlineExceeded, "the deadline passed while the call ran; it was cancelled"))
        case .success(let body)?:
            return [ResponseHeader(requestID: id).wireBytes(), body]
        case .failure(let error)?:
            let mapped = RPCError(mapping: error)
            if mapped.code == .internal, let cid = mapped.correlationID {
                // The type only: an error's text may carry values (PHI) and stays out of logs.
                logger.error("handler failed", metadata: [
                    "rpc.method": "\(job.header.method)", "correlation.id": "\(cid)",
                    "error.type": "\(String(reflecting: type(of: error)))",
                ])
            }
            return Self.errorFrames(id, mapped)
        }
    }

    static func errorFrames(_ id: UInt64, _ error: RPCError) -> [Data] {
        [ResponseHeader(requestID: id, error: error).wireBytes(), Data()]
    }

    // MARK: - The I/O thread

    private func loop(intake: AsyncStream<Job>.Continuation) {
        var machine = WorkerStateMachine(configuration: configuration.connection)
        var socket: ZMQSocket?
        var poller = ZMQPoller()
        let dialect = configuration.dialect
        var info = WorkerInfo()
        info.instanceID = configuration.instanceID
        info.version = configuration.version
        info.capacity = UInt32(configuration.connection.capacity)
        let ready = [Data(configuration.service.utf8), info.wireBytes()]

        func send(_ command: MDP.WorkerCommand, _ rest: [Data] = []) {
            guard let s = socket else { return }
            do { try s.send(MDP.worker(dialect, command, rest)) } catch {
                logger.warning("worker could not send", metadata: ["error": "\(error)"])
            }
        }

        func apply(_ actions: [WorkerStateMachine.Action]) {
            for action in actions {
                switch action {
                case .openSocket:
                    do {
                        let s = try ZMQContext.shared.socket(.dealer)
                        try s.setOption(ZMQOption.sendHighWaterMark, Int32(100_000))
                        try s.setOption(ZMQOption.receiveHighWaterMark, Int32(100_000))
                        try s.connect(configuration.endpoint)
                        socket = s
                        poller = ZMQPoller()
                        poller.add(fd: wake.fd)
                        poller.add(s)
                        machine.socketOpened(now: monotonicNanos())
                        send(.ready, ready)
                        logger.debug("worker connecting", metadata: ["endpoint": "\(configuration.endpoint)"])
                    } catch {
                        logger.error("worker could not open its socket", metadata: ["error": "\(error)"])
                    }
                case .closeSocket:
                    logger.info("worker lost the router; reconnecting", metadata: ["attempt": "\(machine.attempt)"])
                    socket?.close()
                    socket = nil
                    poller = ZMQPoller()
                    poller.add(fd: wake.fd)
                case .send(let command):
                    send(command)
                case .finishIntake:
                    intake.finish()
                }
            }
        }

        poller.add(fd: wake.fd)
        apply(machine.tick(now: monotonicNanos()))
        logger.info("worker started", metadata: ["endpoint": "\(configuration.endpoint)",
                                                 "instance": "\(configuration.instanceID)"])
        while true {
            let pending = outbox.withLock { o -> Outbox in
                let copy = o
                o.replies.removeAll(keepingCapacity: true)
                return copy
            }
            if pending.drainRequested && !machine.draining {
                logger.info("worker draining", metadata: ["in.flight": "\(machine.inFlight)"])
                apply(machine.beginDrain(now: monotonicNanos()))
            }
            for reply in pending.replies where machine.replied(generation: reply.generation, now: monotonicNanos()) {
                send(.final, [reply.client, Data()] + reply.frames)
            }
            if pending.handlersDone && pending.replies.isEmpty { break }
            let now = monotonicNanos()
            apply(machine.tick(now: now))
            let wakeAt = machine.nextWakeup
            let timeout = Int(min(250, wakeAt > now ? (wakeAt - now + 999_999) / 1_000_000 : 0))
            let readable = poller.pollMask(timeoutMs: timeout)
            if readable & 1 != 0 { wake.drain() }
            guard readable & 2 != 0, let s = socket else { continue }
            for _ in 0..<512 {
                guard socket === s, let frames = try? s.receive() else { break }
                guard let message = MDP.decodeAtWorker(frames) else {
                    logger.debug("worker dropped a malformed message")
                    continue
                }
                let now = monotonicNanos()
                let (admission, actions) = machine.received(message, now: now)
                if case .request(let client, let body) = message {
                    admit(admission, client: client, body: body, now: now, generation: machine.generation,
                          machine: &machine, intake: intake, send: send)
                }
                apply(actions)
            }
        }
        if let s = socket {
            try? s.setOption(ZMQOption.linger, Int32(2_000))  // let the last replies go out
            s.close()
        }
        intake.finish()
        logger.info("worker stopped")
    }

    private func admit(_ admission: WorkerStateMachine.Admission, client: Data, body: [Data], now: UInt64,
                       generation: Int, machine: inout WorkerStateMachine,
                       intake: AsyncStream<Job>.Continuation, send: (MDP.WorkerCommand, [Data]) -> Void) {
        let header = body.first.flatMap { try? RequestHeader(serializedBytes: $0) }
        let id = header?.requestID ?? 0
        func reject(_ error: RPCError) {
            send(.final, [client, Data()] + Self.errorFrames(id, error))
            machine.sent(now: now)
        }
        switch admission {
        case .ignore:
            return
        case .rejectBusy:
            reject(RPCError(.resourceExhausted, "\(configuration.service) is at capacity"))
            return
        case .accept:
            break
        }
        guard let header else {
            _ = machine.replied(generation: generation, now: now)
            reject(RPCError(.invalidArgument, "the first body frame is not a CareMesh RequestHeader"))
            return
        }
        if machine.intakeFinished {
            _ = machine.replied(generation: generation, now: now)
            reject(RPCError(.unavailable, "\(configuration.service) is shutting down"))
            return
        }
        let timeout = header.timeoutMs == 0 ? configuration.defaultTimeoutMs : header.timeoutMs
        let job = Job(generation: generation, client: client, header: header,
                      message: body.count > 1 ? body[1] : Data(), deadline: now + UInt64(timeout) * 1_000_000)
        intake.yield(job)
    }
}

import CareMeshContracts
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import ZMQ

/// Serves one MDP service through the router: the runtime under every CareMesh service.
///
/// One I/O thread owns the DEALER socket: it registers, heartbeats whatever the handlers are
/// doing, reconnects with backoff, and sends replies. Each request becomes a task started
/// straight from the I/O thread (on the pool, or for a handler registered `.inline` right there
/// until it first suspends), at most `capacity` at once (the router sends no more); the
/// I/O thread keeps their handles and cancels a task when its deadline passes (one heap of
/// deadlines, no timer task per call). Work whose deadline has passed is not started. On
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
        /// The I/O thread's handle for the task running it.
        var key: UInt64
        var generation: Int
        var client: Data
        var header: RequestHeader
        var message: Data
        var deadline: UInt64
    }

    struct Reply: Sendable {
        var key: UInt64
        var generation: Int
        var client: Data
        var frames: [Data]
    }

    struct Outbox: Sendable {
        var replies: [Reply] = []
        var drainRequested = false
    }

    public init(configuration: WorkerConfiguration, handlers: RPCHandlers = RPCHandlers(),
                logger: Logger = Logger(label: "caremesh.worker")) {
        self.configuration = configuration
        var all = handlers
        let serving = ServingFlag()
        self.serving = serving
        let info = (configuration.instanceID, configuration.version)
        all.register(HealthMethods.check, start: .inline) { request, _ in
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

    /// Serves until graceful shutdown (or cancellation), then drains: returns once every
    /// request taken has been answered.
    public func run() async throws {
        let thread = IOThread(name: "caremesh-worker-\(configuration.service)") { [self] in self.loop() }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await thread.joined()
            } onGracefulShutdown: { self.beginGracefulShutdown() }
        } onCancel: { self.beginGracefulShutdown() }
    }

    // MARK: - Handlers (Swift concurrency)

    private func execute(_ job: Job) async {
        let frames = await answer(job)
        outbox.withLock { $0.replies.append(Reply(key: job.key, generation: job.generation, client: job.client, frames: frames)) }
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
        // The I/O thread cancels this task when the deadline passes.
        let outcome: Result<Data, any Error> = await RPCContext.$current.withValue(context) {
            do { return .success(try await handler(job.message, context)) } catch { return .failure(error) }
        }
        if monotonicNanos() >= job.deadline { return Self.errorFrames(id, Self.cancelledAtDeadline) }
        switch outcome {
        case .success(let body):
            return [ResponseHeader(requestID: id).wireBytes(), body]
        case .failure(let error):
            let mapped = RPCError(mapping: error)
            if mapped.code == .internal, let cid = mapped.correlationID {
                // The type only: an error's text may carry values (PHI) and stays out of logs.
                var metadata: Logger.Metadata = [
                    "rpc.method": "\(job.header.method)", "correlation.id": "\(cid)",
                    "error.type": "\(String(reflecting: type(of: error)))",
                ]
                if let coded = error as? any DiagnosticCode { metadata["error.code"] = "\(coded.diagnosticCode)" }
                logger.error("handler failed", metadata: metadata)
            }
            return Self.errorFrames(id, mapped)
        }
    }

    /// Methods that wait for something to happen (`Events.Pull`): cancelled when draining begins,
    /// they answer at once.
    static let longPolls: Set<String> = [EventsMethods.pull.path]

    static let cancelledAtDeadline = RPCError(.deadlineExceeded, "the deadline passed while the call ran; it was cancelled")

    /// How long a cancelled handler may take to finish before the worker answers for it.
    static let abandonGraceNs: UInt64 = 1_000_000_000

    /// A handler's task as the I/O thread tracks it.
    struct Running {
        var task: Task<Void, Never>
        var job: Job
        var cancelled = false
    }

    static func errorFrames(_ id: UInt64, _ error: RPCError) -> [Data] {
        [ResponseHeader(requestID: id, error: error).wireBytes(), Data()]
    }

    // MARK: - The I/O thread

    private func loop() {
        var machine = WorkerStateMachine(configuration: configuration.connection)
        var socket: ZMQSocket?
        /// The socket's handshake events (a refused key is logged once per refusal run).
        var monitor: ZMQEventMonitor?
        var refusedLogged = false
        var poller = ZMQPoller()
        let dialect = configuration.dialect
        var info = WorkerInfo()
        info.instanceID = configuration.instanceID
        info.version = configuration.version
        info.capacity = UInt32(configuration.connection.capacity)
        let ready = [Data(configuration.service.utf8), info.wireBytes()]
        var running: [UInt64: Running] = [:]
        var deadlines = DeadlineHeap()
        var nextKey: UInt64 = 0

        func send(_ command: MDP.WorkerCommand, _ rest: [Data] = []) {
            guard let s = socket else { return }
            do { try MDP.emitWorker(dialect, command, rest) { frame, more in try s.sendFrame(frame, more: more) } } catch {
                logger.warning("worker could not send", metadata: ["error": "\(error)"])
            }
        }

        /// A FINAL reply to `client`, sent frame by frame (no array built per reply).
        func sendFinal(to client: Data, _ frames: [Data]) {
            guard let s = socket else { return }
            do {
                try MDP.emitWorker(dialect, .final, []) { frame, _ in try s.sendFrame(frame, more: true) }
                try s.sendFrame(client, more: true)
                try s.sendFrame(Data(), more: true)
                for (i, frame) in frames.enumerated() { try s.sendFrame(frame, more: i < frames.count - 1) }
            } catch {
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
                        try configuration.link.apply(to: s)
                        let m = try ZMQEventMonitor(s, context: ZMQContext.shared,
                                                    mask: ZMQMonitorEvent.mask & ~(ZMQMonitorEvent.connectionMask))
                        try s.connect(configuration.endpoint)
                        socket = s
                        monitor = m
                        poller = ZMQPoller()
                        poller.add(fd: wake.fd)
                        poller.add(s)
                        poller.add(m.events)
                        machine.socketOpened(now: monotonicNanos())
                        send(.ready, ready)
                        logger.debug("worker connecting", metadata: ["endpoint": "\(configuration.endpoint)"])
                    } catch {
                        logger.error("worker could not open its socket", metadata: ["error": "\(error)"])
                    }
                case .closeSocket:
                    logger.info("worker lost the router; reconnecting", metadata: ["attempt": "\(machine.attempt)"])
                    monitor?.close()  // before its socket: see ZMQEventMonitor
                    monitor = nil
                    socket?.close()
                    socket = nil
                    poller = ZMQPoller()
                    poller.add(fd: wake.fd)
                case .send(let command):
                    send(command)
                case .finishIntake:
                    break  // `admit` refuses from now on; the loop ends once `running` is empty
                }
            }
        }

        poller.add(fd: wake.fd)
        wake.becomeOwner()  // a reply made on this thread is sent before the next poll
        apply(machine.tick(now: monotonicNanos()))
        logger.info("worker started", metadata: ["endpoint": "\(configuration.endpoint)",
                                                 "instance": "\(configuration.instanceID)"])
        // The replies taken from the outbox; swapped with the outbox's array under its lock,
        // so neither is reallocated per turn.
        var replies: [Reply] = []
        while true {
            let drainRequested = outbox.withLock { o -> Bool in
                swap(&o.replies, &replies)
                return o.drainRequested
            }
            if drainRequested && !machine.draining {
                logger.info("worker draining", metadata: ["in.flight": "\(machine.inFlight)"])
                apply(machine.beginDrain(now: monotonicNanos()))
                // Long polls end now with what they have (nothing): a consumer's pull would
                // otherwise hold the drain for its whole wait, and timers due meanwhile with it.
                for r in running.values where Self.longPolls.contains(r.job.header.method) { r.task.cancel() }
            }
            let now = monotonicNanos()
            for reply in replies {
                // An abandoned handler's late reply finds no entry: it was answered already.
                guard running.removeValue(forKey: reply.key) != nil else { continue }
                if machine.replied(generation: reply.generation, now: now) {
                    sendFinal(to: reply.client, reply.frames)
                }
            }
            replies.removeAll(keepingCapacity: true)
            if machine.intakeFinished && running.isEmpty { break }
            while let due = deadlines.popDue(now: now) {
                guard var r = running[due.id] else { continue }
                if !r.cancelled {
                    // The deadline: cancel, and give the handler a moment to wind down.
                    r.task.cancel()
                    r.cancelled = true
                    running[due.id] = r
                    deadlines.insert(deadline: now + Self.abandonGraceNs, id: due.id)
                } else {
                    // It ignored cancellation (e.g. a library call that cannot be cancelled):
                    // answer for it, free its slot, and leave the task behind.
                    running[due.id] = nil
                    logger.warning("handler ignored cancellation past its deadline; answered DEADLINE_EXCEEDED for it",
                                   metadata: ["rpc.method": "\(r.job.header.method)"])
                    if machine.replied(generation: r.job.generation, now: now) {
                        sendFinal(to: r.job.client, Self.errorFrames(r.job.header.requestID, Self.cancelledAtDeadline))
                    }
                }
            }
            deadlines.prune(live: running.count) { running[$0] != nil }
            apply(machine.tick(now: now))
            var wakeAt = machine.nextWakeup
            if let next = deadlines.next { wakeAt = min(wakeAt, next.deadline) }
            let timeout = Int(min(250, wakeAt > now ? (wakeAt - now + 999_999) / 1_000_000 : 0))
            let readable = poller.pollMask(timeoutMs: timeout)
            if readable & 1 != 0 { wake.drain() }
            if readable & 4 != 0, let m = monitor {
                while let event = m.next() {
                    switch event {
                    case .handshakeRefused(let status) where !refusedLogged:
                        refusedLogged = true
                        logger.error("the router refused this worker's CurveZMQ handshake: is its public key in the router's CAREMESH_BUS_WORKER_KEYS, and CAREMESH_ROUTER_PUBLIC_KEY the router's?",
                                     metadata: ["service": "\(configuration.service)", "zap.status": "\(status)"])
                    case .handshakeSucceeded: refusedLogged = false
                    default: break
                    }
                }
            }
            guard readable & 2 != 0, let s = socket else { continue }
            // One clock read per batch: a batch takes microseconds, deadlines are in ms.
            let batchNow = monotonicNanos()
            for _ in 0..<512 {
                guard socket === s, let frames = try? s.receive() else { break }
                guard let message = MDP.decodeAtWorker(frames) else {
                    logger.debug("worker dropped a malformed message")
                    continue
                }
                let (admission, actions) = machine.received(message, now: batchNow)
                if case .request(let client, let body) = message,
                   let job = admit(admission, client: client, body: body, now: batchNow, key: nextKey,
                                   generation: machine.generation, machine: &machine, send: sendFinal) {
                    nextKey += 1
                    // An inline task may have answered already: its reply waits in the outbox,
                    // which this loop reads only after `running` holds the entry.
                    let task = handlers.startsInline(job.header.method)
                        ? Task.immediate { await self.execute(job) } : Task { await self.execute(job) }
                    running[job.key] = Running(task: task, job: job)
                    deadlines.insert(deadline: job.deadline, id: job.key)
                }
                apply(actions)
            }
        }
        monitor?.close()
        if let s = socket {
            try? s.setOption(ZMQOption.linger, Int32(2_000))  // let the last replies go out
            s.close()
        }
        logger.info("worker stopped")
    }

    /// The job to start for an arriving request, or nil when it was answered here.
    private func admit(_ admission: WorkerStateMachine.Admission, client: Data, body: [Data], now: UInt64,
                       key: UInt64, generation: Int, machine: inout WorkerStateMachine,
                       send sendFinal: (Data, [Data]) -> Void) -> Job? {
        let header = body.first.flatMap { try? RequestHeader(serializedBytes: $0) }
        let id = header?.requestID ?? 0
        func reject(_ error: RPCError) {
            sendFinal(client, Self.errorFrames(id, error))
            machine.sent(now: now)
        }
        switch admission {
        case .ignore:
            return nil
        case .rejectBusy:
            reject(RPCError(.resourceExhausted, "\(configuration.service) is at capacity"))
            return nil
        case .accept:
            break
        }
        guard let header else {
            _ = machine.replied(generation: generation, now: now)
            reject(RPCError(.invalidArgument, "the first body frame is not a CareMesh RequestHeader"))
            return nil
        }
        if machine.intakeFinished {
            _ = machine.replied(generation: generation, now: now)
            reject(RPCError(.unavailable, "\(configuration.service) is shutting down"))
            return nil
        }
        let timeout = header.timeoutMs == 0 ? configuration.defaultTimeoutMs : header.timeoutMs
        return Job(key: key, generation: generation, client: client, header: header,
                   message: body.count > 1 ? body[1] : Data(), deadline: now + UInt64(timeout) * 1_000_000)
    }
}

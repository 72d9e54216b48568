import CareMeshContracts
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import SwiftProtobuf
import ZMQ

/// Calls CareMesh services through the router.
///
/// Async, with many calls in flight on one DEALER socket (replies are matched by request id).
/// Every call has a timeout; a call made inside a handler inherits the handler's deadline and
/// trace. Calls are retried only when that is safe: the method is idempotent or the call
/// carries an idempotency key. When the router goes away, calls in flight fail `UNAVAILABLE`
/// (and are retried if safe) and the socket reconnects by itself. Callers that make many small
/// calls can run on the client's I/O thread (`withTaskExecutorPreference(client.executor)`):
/// no thread hop per call then, see `IOExecutor`.
///
/// ```swift
/// let client = RPCClient(configuration: .init(environment: ProcessInfo.processInfo.environment))
/// defer { client.close() }  // the I/O thread runs until closed
/// let health = try await client.call(HealthMethods.check, service: "identity", request: .init())
/// ```
public final class RPCClient: Service, Sendable {
    public let configuration: ClientConfiguration
    private let logger: Logger
    private let wake = EventSignal()
    private let state = Mutex(Shared())
    private let thread: Mutex<IOThread?> = Mutex(nil)
    private let nextID = Atomic<UInt64>(1)
    /// Runs tasks that prefer it on the client's I/O thread (see `IOExecutor`).
    public let executor: IOExecutor

    typealias Outcome = Result<(ResponseHeader, Data), RPCError>

    struct Pending {
        /// Resumed exactly once: by whoever removes the entry from `pending`.
        var continuation: UnsafeContinuation<Outcome, Never>
        var deadline: UInt64
        var sent = false
    }

    /// A request waiting for the I/O thread to send it.
    struct Outgoing {
        var id: UInt64
        var service: String
        var header: Data
        var message: Data
    }

    struct Shared {
        var outgoing: [Outgoing] = []
        var pending: [UInt64: Pending] = [:]
        var timers = DeadlineHeap()
        var closed = false
        var connected = false
    }

    public init(configuration: ClientConfiguration = .init(), logger: Logger = Logger(label: "caremesh.client")) {
        self.configuration = configuration
        self.logger = logger
        self.executor = IOExecutor(wake: wake)
        let t = IOThread(name: "caremesh-client") { [self] in self.loop() }
        thread.withLock { $0 = t }
    }

    /// Fails what is in flight with `CANCELLED` and stops the I/O thread.
    public func close() {
        state.withLock { $0.closed = true }
        wake.signal()
        // From a task on the I/O thread itself: it ends after this turn; it cannot be awaited here.
        if wake.onOwnerThread { return }
        thread.withLock { $0 }?.join()
    }

    /// Runs until graceful shutdown, then closes (for use in a `ServiceGroup`).
    public func run() async throws {
        try? await gracefulShutdown()
        await Task.detached { self.close() }.value
    }

    // MARK: - Calls

    /// Calls `method` on `service` (default: the method's own service).
    public func call<Request, Response>(
        _ method: RPCMethod<Request, Response>, service: String? = nil, request: Request,
        options: CallOptions = .init()
    ) async throws(RPCError) -> Response {
        guard let target = service ?? method.serviceName else {
            throw RPCError(.invalidArgument, "\(method.path) is served by every worker: name the service")
        }
        var options = options
        if method.access != .public, options.metadata["authorization"] == nil, let credentials = configuration.credentials {
            options.metadata["authorization"] = try await credentials.authorization(via: self)
        }
        let body = try await callRaw(service: target, method: method.path, idempotency: method.idempotency,
                                     message: request.wireBytes(), options: options)
        do { return try Response(serializedBytes: body) } catch {
            throw RPCError(.internal, "the reply is not a valid \(Response.protoMessageName)")
        }
    }

    /// Calls by name with an encoded message; returns the encoded reply.
    public func callRaw(service: String, method: String, idempotency: Idempotency = .unknown, message: Data,
                        options: CallOptions = .init()) async throws(RPCError) -> Data {
        let parent = RPCContext.current
        let timeout = (options.timeout ?? configuration.defaultTimeout).nanoseconds
        var deadline = monotonicNanos() + timeout
        if let parent { deadline = min(deadline, parent.deadline) }
        var metadata = parent.map { inherited($0.metadata) } ?? [:]
        metadata.merge(options.metadata) { _, new in new }
        metadata["traceparent"] = TraceParent.child(of: options.metadata["traceparent"] ?? parent?.traceparent)
        if let key = options.idempotencyKey { metadata["idempotency-key"] = key }
        if message.count > configuration.maxMessageSize {
            throw RPCError(.resourceExhausted, "the request is \(message.count) bytes; the limit is \(configuration.maxMessageSize)")
        }
        let retryable = idempotency.isSafeToRetry || metadata["idempotency-key"] != nil
        var attempt = 0
        while true {
            attempt += 1
            let now = monotonicNanos()
            guard now < deadline else {
                throw RPCError(.deadlineExceeded, "the deadline passed before the call could be sent")
            }
            let requestID = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
            let timeoutMs = UInt32(min(UInt64(UInt32.max), max(1, (deadline - now) / 1_000_000)))
            let header = RequestHeaderWire.encode(method: method, requestID: requestID, timeoutMs: timeoutMs, metadata: metadata)
            let outcome = await send(Outgoing(id: requestID, service: service, header: header, message: message),
                                     deadline: deadline)
            switch outcome {
            case .success(let (reply, body)):
                if let error = reply.error { 
                    // UNAVAILABLE, or RESOURCE_EXHAUSTED that says when to come back (a full
                    // queue; never an oversized message, which would fail the same way again).
                    let transient = error.code == .unavailable || (error.code == .resourceExhausted && error.retryAfterMs != nil)
                    guard retryable, attempt < configuration.maxAttempts, transient else { throw error }
                    let wait = UInt64(error.retryAfterMs ?? 0) * 1_000_000
                    if !(await backoff(attempt: attempt, atLeast: wait, deadline: deadline)) { throw error }
                    continue
                }
                return body
            case .failure(let error):
                guard retryable, attempt < configuration.maxAttempts, error.code == .unavailable,
                      await backoff(attempt: attempt, atLeast: 0, deadline: deadline) else { throw error }
            }
        }
    }

    /// Metadata a nested call carries on: not the caller's own credentials of the hop.
    private func inherited(_ metadata: [String: String]) -> [String: String] {
        var m = metadata
        m["idempotency-key"] = nil
        return m
    }

    /// Sleeps before retry `attempt`; false if the deadline leaves no time for another try.
    private func backoff(attempt: Int, atLeast: UInt64, deadline: UInt64) async -> Bool {
        let base = configuration.retryBackoff.nanoseconds << UInt64(attempt - 1)
        let wait = max(atLeast, UInt64.random(in: base / 2...base))
        guard monotonicNanos() + wait < deadline else { return false }
        do { try await Task.sleep(for: .nanoseconds(Int64(wait))) } catch { return false }
        return true
    }

    private func send(_ request: Outgoing, deadline: UInt64) async -> Outcome {
        let id = request.id
        return await withTaskCancellationHandler {
            await withUnsafeContinuation { (c: UnsafeContinuation<Outcome, Never>) in
                let closed = state.withLock { s -> Bool in
                    if s.closed { return true }
                    s.pending[id] = Pending(continuation: c, deadline: deadline)
                    s.outgoing.append(request)
                    // A little past the deadline, so that the router's own verdict (UNAVAILABLE for
                    // a service with no worker, DEADLINE_EXCEEDED in its queue) arrives first.
                    s.timers.insert(deadline: deadline + Self.localGraceNs, id: id)
                    s.timers.prune(live: s.pending.count) { s.pending[$0] != nil }
                    return false
                }
                if closed { c.resume(returning: .failure(RPCError(.cancelled, "the client is closed"))) }
                else { wake.signal() }
            }
        } onCancel: {
            let p = state.withLock { $0.pending.removeValue(forKey: id) }
            p?.continuation.resume(returning: .failure(RPCError(.cancelled, "the call was cancelled")))
        }
    }

    /// How long past a call's deadline the client waits for the router's answer itself.
    static let localGraceNs: UInt64 = 100_000_000

    // MARK: - The I/O thread

    private func loop() {
        let socket: ZMQSocket, monitor: ZMQEventMonitor
        do {
            socket = try ZMQContext.shared.socket(.dealer)
            try socket.setOption(ZMQOption.sendHighWaterMark, Int32(100_000))
            try socket.setOption(ZMQOption.receiveHighWaterMark, Int32(100_000))
            try socket.setOption(ZMQOption.heartbeatInterval, Int32(1_000))
            try socket.setOption(ZMQOption.heartbeatTimeout, Int32(3_000))
            monitor = try ZMQEventMonitor(socket, context: ZMQContext.shared)
            try configuration.link.apply(to: socket)
            try socket.connect(configuration.endpoint)
        } catch {
            logger.error("client could not open its socket", metadata: ["error": "\(error)"])
            failAll(RPCError(.unavailable, "the client could not open its socket: \(error)"), closing: true)
            return
        }
        var poller = ZMQPoller()
        poller.add(fd: wake.fd)
        poller.add(socket)
        poller.add(monitor.events)
        wake.becomeOwner()  // what tasks on this thread queue is sent before the next poll
        var timeout = 0
        // Swapped with `Shared.outgoing` under the lock: neither array is reallocated per turn.
        var outgoing: [Outgoing] = []
        let dialect = configuration.dialect
        /// Set while the router refuses this client's handshake (cleared by one that succeeds).
        var refusal: RPCError?
        while true {
            let readable = poller.pollMask(timeoutMs: executor.hasJobs ? 0 : timeout)
            if readable & 1 != 0 { wake.drain() }
            if readable & 4 != 0 {
                while let event = monitor.next() {
                    switch event {
                    case .connected:
                        state.withLock { $0.connected = true }
                    case .disconnected:
                        state.withLock { $0.connected = false }
                        logger.info("client lost the router; calls in flight fail UNAVAILABLE")
                        failSent(RPCError(.unavailable, "the connection to the router was lost",
                                          details: [RPCError.detail(reason: "CONNECTION_LOST", domain: "client")]))
                    case .handshakeRefused(let status):
                        // libzmq retries by itself; what waits for this connection fails now
                        // rather than at its deadline, and so does what is sent until a
                        // handshake succeeds.
                        if refusal == nil {
                            logger.warning("the router refused this client's CurveZMQ handshake", metadata: ["zap.status": "\(status)"])
                        }
                        refusal = Self.refused(status)
                        failSent(refusal!)
                    case .handshakeSucceeded:
                        refusal = nil
                    default: break
                    }
                }
            }
            if readable & 2 != 0 {
                for _ in 0..<512 {
                    guard let frames = try? socket.receive() else { break }
                    guard let reply = MDP.decodeAtClient(frames), reply.final, let first = reply.body.first,
                          let header = try? ResponseHeader(serializedBytes: first) else { continue }
                    let body = reply.body.count > 1 ? reply.body[1] : Data()
                    let p = state.withLock { $0.pending.removeValue(forKey: header.requestID) }
                    p?.continuation.resume(returning: .success((header, body)))
                }
            }
            executor.runQueued()  // callers on this thread: their replies, and their next requests
            let (closed, expired, next) = state.withLock { s in
                swap(&s.outgoing, &outgoing)
                let now = monotonicNanos()
                var expired: [Pending] = []
                while let due = s.timers.popDue(now: now) {
                    if let p = s.pending.removeValue(forKey: due.id) { expired.append(p) }
                }
                for request in outgoing { s.pending[request.id]?.sent = true }
                return (s.closed, expired, s.timers.next?.deadline)
            }
            for p in expired {
                p.continuation.resume(returning: .failure(RPCError(.deadlineExceeded, "no reply before the deadline")))
            }
            if closed { break }
            for request in outgoing {
                do {
                    try MDP.emitClientRequest(dialect, service: request.service, body: []) { frame, _ in
                        try socket.sendFrame(frame, more: true)
                    }
                    try socket.sendFrame(request.header, more: true)
                    try socket.sendFrame(request.message, more: false)
                } catch {
                    let p = state.withLock { $0.pending.removeValue(forKey: request.id) }
                    p?.continuation.resume(returning: .failure(refusal ?? RPCError(.unavailable, "the router is not reachable (\(error))")))
                }
            }
            outgoing.removeAll(keepingCapacity: true)
            let now = monotonicNanos()
            timeout = next.map { $0 > now ? Int(min(1_000, ($0 - now + 999_999) / 1_000_000)) : 0 } ?? 1_000
        }
        failAll(RPCError(.cancelled, "the client was closed"), closing: true)
        executor.close()
        monitor.close()  // stops the monitor first: see ZMQEventMonitor
        socket.close()
    }

    /// What a call gets while the router refuses the handshake (ZAP's status; 0: no detail).
    static func refused(_ status: UInt32) -> RPCError {
        RPCError(.unauthenticated, status == 0
                    ? "the CurveZMQ handshake with the router failed (check CAREMESH_ROUTER_PUBLIC_KEY)"
                    : "the router refused this client's CurveZMQ key (ZAP \(status))",
                 details: [RPCError.detail(reason: "BUS_KEY_REFUSED", domain: "client")])
    }

    private func failSent(_ error: RPCError) {
        let lost = state.withLock { s -> [Pending] in
            let ids = s.pending.filter { $0.value.sent }.map(\.key)
            return ids.compactMap { s.pending.removeValue(forKey: $0) }
        }
        for p in lost { p.continuation.resume(returning: .failure(error)) }
    }

    private func failAll(_ error: RPCError, closing: Bool) {
        let all = state.withLock { s -> [Pending] in
            if closing { s.closed = true }
            defer { s.pending.removeAll() }
            return Array(s.pending.values)
        }
        for p in all { p.continuation.resume(returning: .failure(error)) }
    }
}

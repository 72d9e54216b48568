import Foundation

/// A worker's connection logic, with no sockets: registration, heartbeats both ways, broker
/// liveness, reconnect backoff (1 s doubling to 32 s), capacity, and the graceful drain.
///
/// Drain: on shutdown the worker sends DISCONNECT; the CareMesh router stops sending it work
/// and echoes DISCONNECT, after which nothing more can arrive (ZeroMQ keeps order on a
/// connection). The worker finishes what it holds, answers, and only then closes. A broker
/// that does not echo (plain MDP) is given `drainAckTimeoutNs` for requests in transit.
public struct WorkerStateMachine: Sendable {
    public struct Configuration: Sendable {
        public var heartbeatIntervalNs: UInt64 = UInt64(MDP.defaultHeartbeatIntervalMs) * 1_000_000
        public var liveness: UInt64 = UInt64(MDP.defaultLiveness)
        /// Requests handled at once; advertised in READY's `WorkerInfo`.
        public var capacity = 64
        public var reconnectInitialNs: UInt64 = 1_000_000_000
        public var reconnectMaxNs: UInt64 = 32_000_000_000
        public var drainAckTimeoutNs: UInt64 = 1_000_000_000

        public init() {}
    }

    public enum Action: Sendable, Equatable {
        /// Open a new socket, connect it, and send READY.
        case openSocket
        /// Close the socket (the broker is gone); a new one opens after the backoff.
        case closeSocket
        /// Send a command to the broker.
        case send(MDP.WorkerCommand)
        /// No more requests will come: stop taking work.
        case finishIntake
    }

    /// What to do with an arriving request.
    public enum Admission: Sendable, Equatable {
        case accept
        case rejectBusy
        case ignore
    }

    enum Connection: Equatable {
        case idle(reconnectAt: UInt64)
        case connected(lastHeard: UInt64, lastSent: UInt64)
    }

    public let configuration: Configuration
    private var connection = Connection.idle(reconnectAt: 0)
    private(set) public var attempt = 0
    private(set) public var inFlight = 0
    /// Bumped on every new socket; replies of an older generation are dropped.
    private(set) public var generation = 0
    private(set) public var draining = false
    private(set) public var intakeFinished = false
    private var drainStartedAt: UInt64 = 0

    public init(configuration: Configuration = .init()) {
        self.configuration = configuration
    }

    public var isConnected: Bool { if case .connected = connection { true } else { false } }

    /// The backoff before reconnect attempt `n` (0-based): 1 s, 2 s, 4 s … 32 s.
    public func backoff(_ n: Int) -> UInt64 {
        min(configuration.reconnectMaxNs, configuration.reconnectInitialNs << UInt64(min(n, 20)))
    }

    /// The time at which `tick` next has something to do.
    public var nextWakeup: UInt64 {
        switch connection {
        case .idle(let at): return at
        case .connected(let heard, let sent):
            var t = min(sent + configuration.heartbeatIntervalNs,
                        heard + configuration.heartbeatIntervalNs * configuration.liveness + 1)
            if draining && !intakeFinished { t = min(t, drainStartedAt + configuration.drainAckTimeoutNs) }
            return t
        }
    }

    /// A new socket is connected: READY goes out (the caller sends it).
    public mutating func socketOpened(now: UInt64) {
        generation += 1
        inFlight = 0
        connection = .connected(lastHeard: now, lastSent: now)
    }

    /// Something arrived from the broker.
    public mutating func received(_ message: MDP.WorkerInbound, now: UInt64) -> (Admission, [Action]) {
        guard case .connected(_, let sent) = connection else { return (.ignore, []) }
        connection = .connected(lastHeard: now, lastSent: sent)
        attempt = 0
        switch message {
        case .heartbeat:
            return (.ignore, [])
        case .request:
            if inFlight >= configuration.capacity { return (.rejectBusy, []) }
            inFlight += 1
            return (.accept, [])
        case .disconnect:
            if draining {
                return (.ignore, finishIntake())
            }
            // The broker forgot us (e.g. it restarted): register again at once.
            connection = .idle(reconnectAt: now)
            return (.ignore, [.closeSocket])
        }
    }

    /// A handler of `generation` finished; true if its reply should be sent.
    public mutating func replied(generation g: Int, now: UInt64) -> Bool {
        guard g == generation, case .connected(let heard, _) = connection else { return false }
        inFlight -= 1
        connection = .connected(lastHeard: heard, lastSent: now)
        return true
    }

    /// Something other than a reply was sent (READY, HEARTBEAT, an error reply).
    public mutating func sent(now: UInt64) {
        if case .connected(let heard, _) = connection { connection = .connected(lastHeard: heard, lastSent: now) }
    }

    /// Heartbeats, liveness, reconnects and the drain timeout.
    public mutating func tick(now: UInt64) -> [Action] {
        switch connection {
        case .idle(let at):
            if draining { return finishIntake() }
            return now >= at ? [.openSocket] : []
        case .connected(let heard, let sent):
            if now > heard + configuration.heartbeatIntervalNs * configuration.liveness {
                if draining { return finishIntake() }
                connection = .idle(reconnectAt: now + backoff(attempt))
                attempt += 1
                return [.closeSocket]
            }
            var actions: [Action] = []
            if now >= sent + configuration.heartbeatIntervalNs {
                connection = .connected(lastHeard: heard, lastSent: now)
                actions.append(.send(.heartbeat))
            }
            if draining && !intakeFinished && now >= drainStartedAt + configuration.drainAckTimeoutNs {
                actions += finishIntake()
            }
            return actions
        }
    }

    /// Graceful shutdown begins: tell the broker, keep serving what arrives until it echoes.
    public mutating func beginDrain(now: UInt64) -> [Action] {
        guard !draining else { return [] }
        draining = true
        drainStartedAt = now
        guard isConnected else { return finishIntake() }
        sent(now: now)
        return [.send(.disconnect)]
    }

    private mutating func finishIntake() -> [Action] {
        guard !intakeFinished else { return [] }
        intakeFinished = true
        return [.finishIntake]
    }
}

import CareMeshAuth
import CareMeshContracts
import CareMeshRPC
import Crypto
import Foundation
import SwiftProtobuf
import ZMQ

/// Where a peer is: which of the router's sockets it talks on, and its ROUTER identity.
public struct PeerAddress: Hashable, Sendable, CustomStringConvertible {
    public var socket: UInt8
    public var identity: Data

    public init(socket: UInt8, identity: Data) {
        self.socket = socket
        self.identity = identity
    }

    public var description: String { "\(socket):\(identity.map { String(format: "%02x", $0) }.joined())" }
}

/// The router's dispatch and liveness logic, with no sockets: events in, actions out.
///
/// Workers register with READY (and an optional `WorkerInfo` giving their capacity); each
/// request goes to the live worker of its service with the most free capacity, or waits in a
/// bounded per-service queue while its deadline allows. Workers silent for `liveness`
/// heartbeat intervals are dead, and each caller with a request in flight on them gets
/// `UNAVAILABLE` at once. The router never resends a request (it may have had effects).
///
/// The worker sees a router-chosen 8-byte token in the MDP "client" frame, which it echoes;
/// so replies are matched without parsing them, and a stale or forged reply is dropped.
public struct RouterStateMachine: Sendable {
    /// Tunables with the defaults of WIRE.md.
    public struct Configuration: Sendable {
        /// How often the router heartbeats an idle worker (1 s).
        public var heartbeatIntervalNs: UInt64 = UInt64(MDP.defaultHeartbeatIntervalMs) * 1_000_000
        /// Silent intervals after which a worker is dead (3).
        public var liveness: UInt64 = UInt64(MDP.defaultLiveness)
        /// Requests waiting per service before `RESOURCE_EXHAUSTED` (1 000).
        public var maxQueuePerService = 1_000
        /// The deadline given to a request that carries none (30 s).
        public var defaultTimeoutMs: UInt32 = 30_000
        /// The longest deadline honoured (5 min).
        public var maxTimeoutMs: UInt32 = 300_000
        /// The largest request or reply, all frames together (4 MiB).
        public var maxMessageSize = MDP.defaultMaxMessageSize
        /// The retry-after hint sent with a full queue (100 ms).
        public var queueFullRetryAfterMs: UInt32 = 100
        /// How long past its deadline a dispatched call may stay unanswered before the router
        /// answers DEADLINE_EXCEEDED itself (a CareMesh worker answers at deadline + 1 s; a
        /// plain MDP worker may never). The worker's slot stays taken until it does reply.
        public var inFlightGraceNs: UInt64 = 2_000_000_000
        /// Whether calls need an access token (see `Authentication`).
        public var authentication = Authentication.required
        /// The methods reachable without a token: those the contracts mark PUBLIC.
        public var publicMethods: Set<String> = Set(allRPCMethods.filter { $0.access == .public }.map(\.path))
        /// Wall-clock seconds since the Unix epoch, for token expiry (replaceable in tests).
        public var wallClock: @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }

        public init() {}
    }

    /// How the router treats access tokens.
    public enum Authentication: Sendable, Equatable {
        /// Every method but the public ones needs a valid access token; the verified subject,
        /// roles and session are stamped on the request as its caller.
        case required
        /// No token is checked and no caller is stamped (any a client sent is still removed),
        /// so services see anonymous callers. For tests of the bus alone; never deploy it.
        case disabled
    }

    /// What the router is told.
    public enum Input: Sendable {
        case fromClient(PeerAddress, MDP.Dialect, service: String, body: [Data])
        /// A message on the worker endpoint; a READY comes with its connection's properties
        /// (the key id its CurveZMQ handshake was admitted with, the peer's address).
        case fromWorker(PeerAddress, MDP.Dialect, MDP.BrokerInbound, ZMQPeerProperties? = nil)
    }

    /// A worker registered or refused, for the router's log and metrics (the router drains
    /// `registrations` after each turn).
    public struct Registration: Sendable, Equatable {
        public var service: String
        public var instanceID: String
        public var version: String
        public var keyID: String?
        public var address: String?
        /// Nil: registered; else why it was refused.
        public var refusal: String?
    }

    /// What the router must send.
    public enum Action: Sendable, Equatable {
        /// A PARTIAL or FINAL reply to a client.
        case toClient(PeerAddress, MDP.Dialect, service: String, final: Bool, body: [Data])
        /// A command to a worker, with its frames after the command byte.
        case toWorker(PeerAddress, MDP.Dialect, MDP.WorkerCommand, [Data])
    }

    /// Counters, for metrics and tests.
    public struct Stats: Sendable, Equatable {
        public var requests = 0
        public var dispatched = 0
        public var replies = 0
        public var queueFull = 0
        public var expiredInQueue = 0
        public var noWorker = 0
        public var workersLost = 0
        public var callsLost = 0
        public var malformed = 0
        public var oversized = 0
        public var staleReplies = 0
        public var expiredInWorker = 0
        public var lateReplies = 0
        public var unknownWorkerMessages = 0
        public var unauthenticated = 0
        public var authenticated = 0
        /// Valid tokens refused because identity revoked them.
        public var revokedTokens = 0
        public var workersRegistered = 0
        /// READYs refused: a key not bound to the service, or a READY on the client endpoint.
        public var workersRefused = 0
    }

    /// A registered worker, in its slot of `slots` (a slot is reused once its worker is gone:
    /// by then no request refers to it).
    struct Worker {
        var peer: PeerAddress
        var dialect: MDP.Dialect
        /// Its service's index in `services`.
        var service: Int
        var instanceID: String
        var capacity: Int
        var inFlight: Set<UInt64> = []
        var expiresAt: UInt64
        var nextHeartbeatAt: UInt64
        var draining = false

        var free: Int { draining ? 0 : capacity - inFlight.count }
    }

    /// A service, at a fixed index of `services` (services are never forgotten but at
    /// shutdown): its live workers' slots and its queue.
    struct Service {
        var name: String
        var workers: [Int] = []
        var queue = FIFO<UInt64>()
        /// A worker has registered for it once (a name only ever asked for has not).
        var served = false
    }

    struct Request {
        var client: PeerAddress
        var dialect: MDP.Dialect
        /// Its service's index in `services`.
        var service: Int
        var requestID: UInt64
        var timeoutMs: UInt32
        /// The header as forwarded (emptied once dispatched).
        var headerFrame: Data
        var message: ArraySlice<Data>
        var deadline: UInt64
        /// The slot of the worker it was sent to; nil while queued.
        var worker: Int?
    }

    public let configuration: Configuration
    private(set) public var stats = Stats()
    // Workers and services live in arrays and are found by index on the hot paths (one
    // hash per message, to find the sender or the service), not looked up by key each time.
    private var slots: [Worker?] = []
    private var freeSlots: [Int] = []
    private var workerSlot: [PeerAddress: Int] = [:]
    private var services: [Service] = []
    private var serviceIndex: [String: Int] = [:]
    /// Indices in `services` of names forgotten (see `forgetIfUnserved`), reused first.
    private var freeServices: [Int] = []
    private var requests: [UInt64: Request] = [:]
    private var queuedDeadlines = DeadlineHeap()
    /// Deadline + grace of each dispatched call (entries of answered calls are skipped).
    private var inFlightDeadlines = DeadlineHeap()
    private var nextToken: UInt64 = 1
    private var nextLivenessCheck: UInt64 = 0
    private var verifier = TokenVerifier()
    /// Set when a token names a key the router does not know (identity may have rotated):
    /// the router's key fetcher reads and clears it.
    public var wantsSigningKeys = false
    /// Set whenever a worker registers, drains or is lost: the router then takes a new
    /// `workersByService` (read by `/metrics`) and clears it.
    public var workersChanged = false
    /// Worker keys and the services each may serve; nil: any worker may register any name
    /// (the bus without CurveZMQ, for its own tests and benchmarks).
    public let workerKeys: BusAllowlist?
    /// Registrations and refusals since the router last drained them.
    public var registrations: [Registration] = []

    public init(configuration: Configuration = .init(), workerKeys: BusAllowlist? = nil) {
        self.configuration = configuration
        self.workerKeys = workerKeys
    }

    // MARK: - Queries

    /// How many live workers serve `service` (draining ones excluded).
    public func liveWorkers(of service: String) -> Int {
        serviceIndex[service].map { services[$0].workers.count } ?? 0
    }

    /// Live workers of every service a worker has registered for (0 once its workers are gone;
    /// names callers only asked for are left out, so a client cannot add entries).
    public var workersByService: [String: Int] {
        Dictionary(uniqueKeysWithValues: services.filter(\.served).map { ($0.name, $0.workers.count) })
    }

    /// Requests waiting in `service`'s queue.
    public func queued(in service: String) -> Int {
        serviceIndex[service].map { services[$0].queue.elements.count(where: { requests[$0] != nil }) } ?? 0
    }

    /// Requests sent to workers and not yet answered.
    public var inFlight: Int { slots.reduce(0) { $0 + ($1?.inFlight.count ?? 0) } }

    /// Every registered worker: service, instance, capacity, calls in flight.
    public var workerSummaries: [(service: String, instanceID: String, capacity: Int, inFlight: Int, draining: Bool)] {
        slots.compactMap { $0 }
            .map { (services[$0.service].name, $0.instanceID, $0.capacity, $0.inFlight.count, $0.draining) }
            .sorted { ($0.service, $0.instanceID) < ($1.service, $1.instanceID) }
    }

    /// When `tick` next has something to do (a queued deadline or a liveness check).
    public var nextWakeup: UInt64 {
        min(queuedDeadlines.next?.deadline ?? .max, inFlightDeadlines.next?.deadline ?? .max,
            workerSlot.isEmpty ? .max : nextLivenessCheck)
    }

    /// The index of `name` in `services`, added if new.
    private mutating func service(named name: String) -> Int {
        if let i = serviceIndex[name] { return i }
        let i: Int
        if let free = freeServices.popLast() {
            i = free
            services[i] = Service(name: name)
        } else {
            i = services.count
            services.append(Service(name: name))
        }
        serviceIndex[name] = i
        return i
    }

    /// Forgets service `s` once no worker ever served it and no request waits for it: names
    /// that callers only asked for (a typo, a service not deployed, anything an anonymous
    /// client sends) do not stay in the router's tables. Dead tokens leave its queue from the
    /// front as the requests expire, so each is looked at once.
    private mutating func forgetIfUnserved(_ s: Int) {
        guard !services[s].served else { return }
        while let first = services[s].queue.elements.first, requests[first] == nil { _ = services[s].queue.popFirst() }
        guard services[s].queue.isEmpty else { return }
        serviceIndex[services[s].name] = nil
        services[s] = Service(name: "")
        freeServices.append(s)
    }

    /// Names the router holds an entry for (for tests: bounded by what is served or awaited).
    var knownServiceCount: Int { serviceIndex.count }

    // MARK: - Events

    /// Handles one inbound message; appends what to send to `actions`.
    public mutating func handle(_ input: Input, now: UInt64, into actions: inout [Action]) {
        switch input {
        case .fromClient(let peer, let dialect, let service, let body):
            clientRequest(peer, dialect, service: service, body: body, now: now, into: &actions)
        case .fromWorker(let peer, let dialect, let message, let properties):
            workerMessage(peer, dialect, message, properties, now: now, into: &actions)
        }
    }

    /// A worker command on the client endpoint: never a registration, whatever it says (a
    /// READY is logged as refused; anything else counts as malformed). Nothing is answered.
    public mutating func workerCommandOnClientEndpoint(_ message: MDP.BrokerInbound, _ properties: ZMQPeerProperties?) {
        guard case .workerReady(let service, let extra) = message else { return malformed() }
        stats.workersRefused += 1
        registrations.append(Self.registration(service, extra, properties, refusal: "READY on the client endpoint"))
    }

    static func registration(_ service: String, _ extra: [Data], _ properties: ZMQPeerProperties?, refusal: String?) -> Registration {
        let info = extra.first.flatMap { try? WorkerInfo(serializedBytes: $0) }
        return Registration(service: service, instanceID: info?.instanceID ?? "", version: info?.version ?? "",
                            keyID: properties?.userID, address: properties?.address, refusal: refusal)
    }

    /// A message that could not be decoded: count it (the router drops it).
    public mutating func malformed() { stats.malformed += 1 }

    /// Expires queued requests and dead workers, heartbeats idle workers.
    public mutating func tick(now: UInt64, into actions: inout [Action]) {
        while let due = queuedDeadlines.popDue(now: now) {
            guard let r = requests[due.id], r.worker == nil else { continue }
            requests[due.id] = nil
            if services[r.service].workers.isEmpty {
                stats.noWorker += 1
                reply(r, .router(.unavailable, "no worker for service '\(services[r.service].name)' answered in time",
                                 reason: "NO_WORKER"), into: &actions)
                forgetIfUnserved(r.service)
            } else {
                stats.expiredInQueue += 1
                reply(r, .router(.deadlineExceeded, "the deadline passed while the request was queued",
                                 reason: "EXPIRED_IN_QUEUE"), into: &actions)
            }
        }
        while let due = inFlightDeadlines.popDue(now: now) {
            guard let r = requests[due.id], r.worker != nil else { continue }
            // The caller is answered; the token stays in the worker's in-flight set (its slot
            // is taken until it replies, late, or is lost).
            requests[due.id] = nil
            stats.expiredInWorker += 1
            reply(r, .router(.deadlineExceeded, "the worker did not answer by the deadline",
                             reason: "EXPIRED_IN_WORKER"), into: &actions)
        }
        guard now >= nextLivenessCheck else { return }
        nextLivenessCheck = now + configuration.heartbeatIntervalNs / 4
        for slot in slots.indices {
            guard let w = slots[slot] else { continue }
            if now >= w.expiresAt {
                stats.workersLost += 1
                removeWorker(slot, into: &actions)
                actions.append(.toWorker(w.peer, w.dialect, .disconnect, []))
            } else if now >= w.nextHeartbeatAt {
                slots[slot]!.nextHeartbeatAt = now + configuration.heartbeatIntervalNs
                actions.append(.toWorker(w.peer, w.dialect, .heartbeat, []))
            }
        }
    }

    /// Answers every waiting and in-flight request `UNAVAILABLE` and tells every worker to
    /// reconnect: what the router does when it stops.
    public mutating func shutdown(into actions: inout [Action]) {
        for slot in slots.indices {
            guard let w = slots[slot] else { continue }
            removeWorker(slot, into: &actions)
            actions.append(.toWorker(w.peer, w.dialect, .disconnect, []))
        }
        for (_, r) in requests {
            reply(r, .router(.unavailable, "the router is shutting down", reason: "ROUTER_STOPPING"), into: &actions)
        }
        requests.removeAll()
        services.removeAll()
        serviceIndex.removeAll()
        freeServices.removeAll()
    }

    // MARK: - Clients

    private mutating func clientRequest(_ peer: PeerAddress, _ dialect: MDP.Dialect, service: String, body: [Data],
                                        now: UInt64, into actions: inout [Action]) {
        if service.hasPrefix("mmi.") {
            let answer: String
            if service == "mmi.service" {
                let asked = body.first.flatMap { String(data: $0, encoding: .utf8) } ?? ""
                answer = liveWorkers(of: asked) > 0 ? "200" : "404"
            } else {
                answer = "501"
            }
            actions.append(.toClient(peer, dialect, service: service, final: true, body: [Data(answer.utf8)]))
            return
        }
        stats.requests += 1
        /// Answers the client at once, without a worker.
        func refuse(_ requestID: UInt64, _ error: RPCError) {
            actions.append(.toClient(peer, dialect, service: service, final: true,
                                     body: [ResponseHeader(requestID: requestID, error: error).wireBytes(), Data()]))
        }
        func malformed(_ requestID: UInt64) {
            stats.malformed += 1
            refuse(requestID, .router(.invalidArgument, "the first body frame is not a CareMesh RequestHeader", reason: "MALFORMED_HEADER"))
        }
        guard var frame = body.first, let header = HeaderFacts.decode(frame) else {
            return malformed(0)
        }
        let size = Self.size(of: body)
        if size > configuration.maxMessageSize {
            stats.oversized += 1
            return refuse(header.requestID, .router(.resourceExhausted,
                                                    "the request is \(size) bytes; the limit is \(configuration.maxMessageSize)",
                                                    reason: "MESSAGE_TOO_LARGE"))
        }
        if header.hasCaller {
            // Only the router says who calls (rare: re-encode without the caller's claim).
            guard var full = try? RequestHeader(serializedBytes: frame) else { return malformed(header.requestID) }
            full.clearCaller()
            frame = full.wireBytes()
        }
        if configuration.authentication == .required {
            switch authenticate(header) {
            case .anonymous: break
            case .caller(let caller): frame = Self.appending(caller: caller, to: frame)
            case .refused(let error):
                stats.unauthenticated += 1
                return refuse(header.requestID, error)
            }
        }
        let timeout = header.timeoutMs == 0 ? configuration.defaultTimeoutMs : min(header.timeoutMs, configuration.maxTimeoutMs)
        if timeout != header.timeoutMs { frame = Self.setting(timeoutMs: timeout, in: frame) }
        let token = nextToken
        nextToken += 1
        let s = self.service(named: service)
        var request = Request(client: peer, dialect: dialect, service: s, requestID: header.requestID,
                              timeoutMs: timeout, headerFrame: frame, message: body.dropFirst(),
                              deadline: now + UInt64(timeout) * 1_000_000, worker: nil)

        if services[s].queue.isEmpty, let worker = leastLoaded(s) {
            dispatch(token, &request, to: worker, now: now, into: &actions)
            requests[token] = request
            return
        }
        if services[s].queue.count >= configuration.maxQueuePerService {
            compact(s)
        }
        if services[s].queue.count >= configuration.maxQueuePerService {
            stats.queueFull += 1
            reply(request, .router(.resourceExhausted, "service '\(service)' has too many requests waiting",
                                   reason: "QUEUE_FULL", retryAfterMs: configuration.queueFullRetryAfterMs),
                  into: &actions)
            return
        }
        services[s].queue.append(token)
        requests[token] = request
        queuedDeadlines.insert(deadline: request.deadline, id: token)
    }

    // MARK: - Authentication

    /// Takes identity's token revocations (`TokensRevoked`), dropping entries whose tokens
    /// have all expired.
    public mutating func revoke(_ events: [Caremesh_Identity_V1_TokensRevoked]) {
        for event in events { revoked.apply(event) }
        revoked.expire(now: configuration.wallClock())
    }

    /// Tokens refused although valid, until they expire.
    public private(set) var revoked = RevokedTokens()

    /// Replaces the keys tokens are verified with (identity's `GetSigningKeys`).
    public mutating func setSigningKeys(_ keys: [String: Curve25519.Signing.PublicKey]) {
        verifier.setKeys(keys)
    }

    public var signingKeyIDs: Set<String> { Set(verifier.keys.keys) }

    enum AuthOutcome {
        case anonymous
        case caller(Caremesh_Rpc_V1_Caller)
        case refused(RPCError)
    }

    /// The token of `authorization: Bearer <JWT>` (case-insensitive scheme); "" for another
    /// scheme, nil without the header.
    func bearer(_ header: HeaderFacts) -> Substring? {
        guard let value = header.authorization else { return nil }
        let prefix = "bearer "
        guard value.count > prefix.count, value.prefix(prefix.count).lowercased() == prefix else { return "" }
        return value.dropFirst(prefix.count)
    }

    /// A public method passes without a token (and gets a caller if a valid one came along);
    /// any other needs a valid `authorization: Bearer <JWT>`.
    mutating func authenticate(_ header: HeaderFacts) -> AuthOutcome {
        let isPublic = configuration.publicMethods.contains(header.method)
        guard let token = bearer(header) else {
            return isPublic ? .anonymous
                : .refused(.router(.unauthenticated, "this method needs an access token", reason: "TOKEN_MISSING"))
        }
        do {
            let claims = try verifier.verify(String(token), now: configuration.wallClock())
            if !revoked.isEmpty, let why = revoked.refusal(claims) {
                stats.revokedTokens += 1
                if isPublic { return .anonymous }
                return .refused(.router(.unauthenticated, "the access token was revoked: \(why); sign in again or refresh",
                                        reason: "TOKEN_REVOKED"))
            }
            stats.authenticated += 1
            return .caller(claims.caller)
        } catch {
            if isPublic { return .anonymous }
            switch error {
            case .unknownKey:
                wantsSigningKeys = true
                if verifier.keys.isEmpty {
                    return .refused(.router(.unavailable, "the router does not know identity's signing keys yet",
                                            reason: "SIGNING_KEYS_UNAVAILABLE", retryAfterMs: 500))
                }
                return .refused(.router(.unauthenticated, "the access token is not valid", reason: "TOKEN_INVALID"))
            case .expired:
                return .refused(.router(.unauthenticated, "the access token has expired", reason: "TOKEN_EXPIRED"))
            default:
                return .refused(.router(.unauthenticated, "the access token is not valid", reason: "TOKEN_INVALID"))
            }
        }
    }

    /// `frame` (an encoded RequestHeader without a caller) with field 5 appended.
    static func appending(caller: Caremesh_Rpc_V1_Caller, to frame: Data) -> Data {
        let bytes = caller.wireBytes()
        var out = frame
        out.reserveCapacity(frame.count + bytes.count + 6)
        out.append(0x2A)  // field 5, length-delimited
        var n = bytes.count
        while n >= 0x80 { out.append(UInt8(n & 0x7F) | 0x80); n >>= 7 }
        out.append(UInt8(n))
        out.append(bytes)
        return out
    }

    /// `frame` (an encoded RequestHeader) with `timeout_ms` replaced, without re-encoding it:
    /// protobuf keeps the last value of a scalar field that occurs twice, so appending the
    /// field is enough.
    static func setting(timeoutMs: UInt32, in frame: Data) -> Data {
        var out = frame
        out.reserveCapacity(frame.count + 6)
        out.append(0x18)  // field 3, varint
        var v = timeoutMs
        while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        out.append(UInt8(v))
        return out
    }

    /// Drops tokens of requests that already expired from a queue.
    private mutating func compact(_ s: Int) {
        var fresh = FIFO<UInt64>()
        for t in services[s].queue.elements where requests[t] != nil { fresh.append(t) }
        services[s].queue = fresh
    }

    /// The slot of service `s`'s live worker with the most free capacity; nil if none has any.
    private func leastLoaded(_ s: Int) -> Int? {
        var best: Int?
        var bestFree = 0
        for slot in services[s].workers {
            let free = slots[slot]?.free ?? 0
            if free > bestFree { best = slot; bestFree = free }
        }
        return best
    }

    /// Sends request `r` (not yet in `requests`: the caller stores it) to the worker in `slot`.
    private mutating func dispatch(_ token: UInt64, _ r: inout Request, to slot: Int, now: UInt64,
                                   into actions: inout [Action]) {
        let remainingMs = r.deadline > now ? (r.deadline - now) / 1_000_000 : 0
        var headerFrame = r.headerFrame
        if remainingMs < UInt64(r.timeoutMs) {
            // Time was spent here: the worker gets what is left (at least 1 ms).
            r.timeoutMs = UInt32(max(1, remainingMs))
            headerFrame = Self.setting(timeoutMs: r.timeoutMs, in: headerFrame)
        }
        r.worker = slot
        r.headerFrame = Data()
        slots[slot]!.inFlight.insert(token)
        slots[slot]!.nextHeartbeatAt = now + configuration.heartbeatIntervalNs
        inFlightDeadlines.insert(deadline: r.deadline + configuration.inFlightGraceNs, id: token)
        inFlightDeadlines.prune(live: requests.count + 1) { $0 == token || requests[$0]?.worker != nil }
        stats.dispatched += 1
        var frames: [Data] = []
        frames.reserveCapacity(3 + r.message.count)
        frames.append(Self.tokenFrame(token))
        frames.append(Data())
        frames.append(headerFrame)
        frames.append(contentsOf: r.message)
        let worker = slots[slot]!
        actions.append(.toWorker(worker.peer, worker.dialect, .request, frames))
    }

    private mutating func dispatchQueued(_ s: Int, now: UInt64, into actions: inout [Action]) {
        while !services[s].queue.isEmpty, let worker = leastLoaded(s) {
            let token = services[s].queue.popFirst()!
            guard var r = requests.removeValue(forKey: token) else { continue }
            if r.deadline <= now {
                stats.expiredInQueue += 1
                reply(r, .router(.deadlineExceeded, "the deadline passed while the request was queued",
                                 reason: "EXPIRED_IN_QUEUE"), into: &actions)
                continue
            }
            dispatch(token, &r, to: worker, now: now, into: &actions)
            requests[token] = r
        }
    }

    private func reply(_ r: Request, _ error: RPCError, into actions: inout [Action]) {
        actions.append(.toClient(r.client, r.dialect, service: services[r.service].name, final: true,
                                 body: [ResponseHeader(requestID: r.requestID, error: error).wireBytes(), Data()]))
    }

    // MARK: - Workers

    private mutating func workerMessage(_ peer: PeerAddress, _ dialect: MDP.Dialect, _ message: MDP.BrokerInbound,
                                        _ properties: ZMQPeerProperties?, now: UInt64, into actions: inout [Action]) {
        let expiry = now + configuration.heartbeatIntervalNs * configuration.liveness
        if case .workerReady(let service, let extra) = message {
            if let old = workerSlot[peer] { removeWorker(old, into: &actions) }
            if let workerKeys {
                // The key the handshake admitted must be bound to this name: a key of another
                // service is disconnected, its peer holding nothing.
                let keyID = properties?.userID ?? ""
                if !workerKeys.allows(keyID: keyID, toServe: service) {
                    stats.workersRefused += 1
                    registrations.append(Self.registration(service, extra, properties, refusal: keyID.isEmpty
                        ? "no CurveZMQ key" : "key not bound to this service"))
                    actions.append(.toWorker(peer, dialect, .disconnect, []))
                    return
                }
            }
            stats.workersRegistered += 1
            registrations.append(Self.registration(service, extra, properties, refusal: nil))
            let info = extra.first.flatMap { try? WorkerInfo(serializedBytes: $0) }
            let capacity = max(1, Int(info?.capacity ?? 1))
            let s = self.service(named: service)
            let worker = Worker(peer: peer, dialect: dialect, service: s,
                                instanceID: info?.instanceID ?? peer.description, capacity: capacity,
                                expiresAt: expiry, nextHeartbeatAt: now + configuration.heartbeatIntervalNs)
            let slot: Int
            if let reused = freeSlots.popLast() {
                slot = reused
                slots[slot] = worker
            } else {
                slot = slots.count
                slots.append(worker)
            }
            workerSlot[peer] = slot
            services[s].workers.append(slot)
            services[s].served = true
            workersChanged = true
            if nextLivenessCheck == 0 || nextLivenessCheck > now + configuration.heartbeatIntervalNs / 4 {
                nextLivenessCheck = now + configuration.heartbeatIntervalNs / 4
            }
            dispatchQueued(s, now: now, into: &actions)
            return
        }
        guard let slot = workerSlot[peer] else {
            // Not registered (e.g. it outlived a router restart): tell it to reconnect.
            stats.unknownWorkerMessages += 1
            if case .workerDisconnect = message { return }
            actions.append(.toWorker(peer, dialect, .disconnect, []))
            return
        }
        slots[slot]!.expiresAt = expiry
        switch message {
        case .workerHeartbeat, .workerReady, .clientRequest:
            return
        case .workerDisconnect:
            // Stop sending it work, acknowledge, and let what it holds finish (graceful drain).
            slots[slot]!.draining = true
            detach(slot)
            actions.append(.toWorker(peer, dialect, .disconnect, []))
            if slots[slot]!.inFlight.isEmpty { forget(slot) }
        case .workerReply(let final, let client, let body):
            guard let token = Self.token(client), let index = requests.index(forKey: token),
                  requests.values[index].worker == slot else {
                if final, let token = Self.token(client), slots[slot]!.inFlight.contains(token) {
                    // The reply to a call the router already answered (EXPIRED_IN_WORKER):
                    // dropped, and the worker's slot is free again.
                    stats.lateReplies += 1
                    freeSlot(token, of: slot, now: now, into: &actions)
                } else {
                    stats.staleReplies += 1
                }
                return
            }
            var out = body
            let size = Self.size(of: body)
            if size > configuration.maxMessageSize {
                stats.oversized += 1
                let error = RPCError.router(.resourceExhausted,
                                            "the reply is \(size) bytes; the limit is \(configuration.maxMessageSize)",
                                            reason: "MESSAGE_TOO_LARGE")
                out = [ResponseHeader(requestID: requests.values[index].requestID, error: error).wireBytes(), Data()]
            }
            if final {
                let r = requests.remove(at: index).value
                actions.append(.toClient(r.client, r.dialect, service: services[r.service].name, final: true, body: out))
                stats.replies += 1
                freeSlot(token, of: slot, now: now, into: &actions)
            } else {
                let r = requests.values[index]
                actions.append(.toClient(r.client, r.dialect, service: services[r.service].name, final: false, body: out))
            }
        }
    }

    /// The call `token` of the worker in `slot` is over: a draining worker is forgotten once
    /// it holds nothing, any other takes the next queued request of its service.
    private mutating func freeSlot(_ token: UInt64, of slot: Int, now: UInt64, into actions: inout [Action]) {
        slots[slot]!.inFlight.remove(token)
        if slots[slot]!.draining {
            if slots[slot]!.inFlight.isEmpty { forget(slot) }
        } else {
            let s = slots[slot]!.service
            if !services[s].queue.isEmpty { dispatchQueued(s, now: now, into: &actions) }
        }
    }

    /// Empties a worker's slot for reuse (it is no longer in its service's list).
    private mutating func forget(_ slot: Int) {
        guard let w = slots[slot] else { return }
        workerSlot[w.peer] = nil
        slots[slot] = nil
        freeSlots.append(slot)
    }

    /// All frames' bytes together (what the message size limit counts).
    static func size(of frames: [Data]) -> Int {
        var size = 0
        for f in frames { size += f.count }
        return size
    }

    /// Takes the worker in `slot` out of its service's live workers (draining, or lost).
    private mutating func detach(_ slot: Int) {
        guard let w = slots[slot] else { return }
        services[w.service].workers.removeAll { $0 == slot }
        workersChanged = true
    }

    /// Forgets a lost worker: each caller it held gets `UNAVAILABLE`.
    private mutating func removeWorker(_ slot: Int, into actions: inout [Action]) {
        guard let w = slots[slot] else { return }
        detach(slot)
        forget(slot)
        for token in w.inFlight {
            guard let r = requests.removeValue(forKey: token) else { continue }
            stats.callsLost += 1
            reply(r, .router(.unavailable, "the worker handling the call was lost; it may or may not have run",
                             reason: "WORKER_LOST"), into: &actions)
        }
    }

    // MARK: - Tokens

    static func tokenFrame(_ token: UInt64) -> Data {
        withUnsafeBytes(of: token.bigEndian) { Data($0) }
    }

    static func token(_ frame: Data) -> UInt64? {
        guard frame.count == 8 else { return nil }
        var t: UInt64 = 0
        for b in frame { t = t << 8 | UInt64(b) }
        return t
    }
}

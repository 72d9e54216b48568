import CareMeshRPC
import Foundation
import Logging
import Synchronization
import ZMQ

/// The ZAP handler (ZeroMQ RFC 27) of the shared ZeroMQ context: libzmq asks it, during each
/// CurveZMQ handshake on a socket that set a ZAP domain, whether the peer's public key may
/// connect, and attaches the user id it answers to every message of that connection (the
/// router reads it on a worker's READY).
///
/// One per process (ZAP's endpoint, `inproc://zeromq.zap.01`, is one per context), on its own
/// thread, bound before any router socket: libzmq lets every peer in when no handler is bound.
/// Each router registers its two domains with what they allow; a domain nobody registered is
/// refused.
public final class ZAPHandler: Sendable {
    /// What one ZAP domain (one router endpoint) allows, and its refusals.
    public final class Domain: Sendable {
        public enum Role: String, Sendable { case workers, clients }
        public let name: String
        public let role: Role
        public let allowlist: BusAllowlist
        let logger: Logger
        private let refusals = Atomic<Int>(0)

        public init(name: String, role: Role, allowlist: BusAllowlist, logger: Logger) {
            self.name = name
            self.role = role
            self.allowlist = allowlist
            self.logger = logger
        }

        /// Handshakes refused on this endpoint.
        public var refused: Int { refusals.load(ordering: .relaxed) }

        /// The user id of an allowed key (a worker's key id; for a client, its key id or ""),
        /// nil for a refused one.
        public func admit(_ key: CurveKey) -> String? {
            switch role {
            case .workers: return allowlist.workerKeyID(key)
            case .clients: return allowlist.allowsClient(key) ? (allowlist.workerKeyID(key) ?? "") : nil
            }
        }

        func refuse(_ key: CurveKey?, address: String, reason: String) {
            let n = refusals.wrappingAdd(1, ordering: .relaxed).newValue
            if n <= 20 || n % 1000 == 0 {
                logger.warning("router refused a connection at the CurveZMQ handshake", metadata: [
                    "endpoint": "\(role.rawValue)", "key.id": "\(key?.id ?? "-")", "peer.address": "\(address)",
                    "reason": "\(reason)", "refused.total": "\(n)",
                ])
            }
        }
    }

    public static let shared = ZAPHandler()
    static let endpoint = "inproc://zeromq.zap.01"

    private let domains = Mutex<[String: Domain]>([:])
    /// Whether the handler is bound (nil before the first `start()`).
    private let bound = Mutex<Result<Void, any Error>?>(nil)

    /// Makes sure the handler is bound: the first call starts it and waits until it is.
    public func start() throws {
        try bound.withLock { b in
            if b == nil {
                let started = StartupResult()
                _ = IOThread(name: "caremesh-zap") { [self] in loop(started) }
                b = Result { try started.wait() }
            }
            try b!.get()
        }
    }

    public func register(_ domain: Domain) { domains.withLock { $0[domain.name] = domain } }
    public func unregister(_ name: String) { domains.withLock { $0[name] = nil } }

    private func loop(_ result: StartupResult) {
        let socket: ZMQSocket
        do {
            socket = try ZMQContext.shared.socket(.rep)
            try socket.bind(Self.endpoint)
        } catch {
            result.fail(error)
            return
        }
        result.succeed()
        while true {
            guard let request = try? socket.receive(dontWait: false) else { continue }
            let reply = answer(request)
            try? socket.send(reply, dontWait: false)
        }
    }

    /// The reply to one ZAP request (frames: version, request id, domain, address, routing id,
    /// mechanism, credentials…).
    func answer(_ f: [Data]) -> [Data] {
        let requestID = f.count > 1 ? f[1] : Data()
        func reply(_ code: String, _ text: String, user: String = "") -> [Data] {
            [Data("1.0".utf8), requestID, Data(code.utf8), Data(text.utf8), Data(user.utf8), Data()]
        }
        guard f.count >= 6, String(decoding: f[0], as: UTF8.self) == "1.0" else { return reply("500", "malformed ZAP request") }
        let name = String(decoding: f[2], as: UTF8.self), address = String(decoding: f[3], as: UTF8.self)
        guard let domain = domains.withLock({ $0[name] }) else { return reply("400", "unknown domain") }
        guard String(decoding: f[5], as: UTF8.self) == "CURVE", f.count >= 7, let key = CurveKey(bytes: Array(f[6])) else {
            domain.refuse(nil, address: address, reason: "not CurveZMQ")
            return reply("400", "CurveZMQ only")
        }
        guard let user = domain.admit(key) else {
            domain.refuse(key, address: address, reason: "key not allowed")
            return reply("400", "key not allowed")
        }
        return reply("200", "OK", user: user)
    }
}

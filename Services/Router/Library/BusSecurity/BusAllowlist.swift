import CareMeshRPC
import Foundation
import ZMQ

/// Who may connect to the router, by CurveZMQ public key: the workers, each key bound to the
/// service names it may serve, and optionally the clients.
///
/// Written as operators write it (`CAREMESH_BUS_WORKER_KEYS`, or a file through `…_FILE`): one
/// entry per line or separated by `;`, each `SERVICE[,SERVICE…] PUBLIC_KEY`; `#` starts a comment
/// line. A service may have two keys (or more) at once, so keys rotate without downtime:
/// ```
/// identity  Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID
/// # the next key of identity, during a rotation
/// identity  rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7
/// alerts,messaging  JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6
/// ```
/// Client keys (`CAREMESH_BUS_CLIENT_KEYS`) are public keys alone, one per line or `;`-separated;
/// without that list any client key may connect (its link is still encrypted). A worker key may
/// always connect as a client too (services call each other).
public struct BusAllowlist: Sendable, Equatable {
    /// A worker key and what it may serve.
    public struct WorkerKey: Sendable, Equatable {
        public var key: CurveKey
        public var services: Set<String>
    }

    /// Worker keys by `CurveKey.id` (the user id the ZAP handler gives a connection).
    public private(set) var workers: [String: WorkerKey] = [:]
    /// Client keys; nil: any.
    public private(set) var clients: Set<CurveKey>?

    public init() {}

    /// Allows `key` to serve `services` (added to what it may already serve).
    public mutating func allowWorker(_ key: CurveKey, services: Set<String>) throws(BusConfigurationError) {
        if let other = workers[key.id], other.key != key {
            throw BusConfigurationError(variable: BusSettings.workerKeys, problem: "holds two keys that begin with \(key.id); make a new one")
        }
        workers[key.id, default: WorkerKey(key: key, services: [])].services.formUnion(services)
    }

    /// Allows `key` to connect as a client (and from then on, only the keys so allowed and the
    /// workers' keys may).
    public mutating func allowClient(_ key: CurveKey) {
        clients = (clients ?? []).union([key])
    }

    /// Whether the worker key named `keyID` may serve `service`.
    public func allows(keyID: String, toServe service: String) -> Bool {
        workers[keyID]?.services.contains(service) ?? false
    }

    /// The id of a worker key allowed on the worker endpoint; nil for any other key.
    public func workerKeyID(_ key: CurveKey) -> String? {
        workers[key.id].flatMap { $0.key == key ? key.id : nil }
    }

    /// Whether `key` may connect on the client endpoint.
    public func allowsClient(_ key: CurveKey) -> Bool {
        guard let clients else { return true }
        return clients.contains(key) || workerKeyID(key) != nil
    }

    /// Reads the allowlists from their variables (`CAREMESH_BUS_WORKER_KEYS`, `…_CLIENT_KEYS`,
    /// each also as `…_FILE`).
    public init(environment env: [String: String]) throws(BusConfigurationError) {
        self.init()
        for (line, entry) in Self.entries(try BusSettings.text(BusSettings.workerKeys, env) ?? "") {
            let parts = entry.split(whereSeparator: \.isWhitespace)
            let services = parts.count == 2 ? Set(parts[0].split(separator: ",").map(String.init).filter { !$0.isEmpty }) : []
            guard parts.count == 2, !services.isEmpty, let key = CurveKey(z85: parts[1]) else {
                throw BusConfigurationError(variable: BusSettings.workerKeys,
                                            problem: "entry \(line) is not 'SERVICE[,SERVICE…] PUBLIC_KEY' (a 40-character Z85 key)")
            }
            try allowWorker(key, services: services)
        }
        for (line, entry) in Self.entries(try BusSettings.text(BusSettings.clientKeys, env) ?? "") {
            guard let key = CurveKey(z85: entry) else {
                throw BusConfigurationError(variable: BusSettings.clientKeys, problem: "entry \(line) is not a 40-character Z85 public key")
            }
            allowClient(key)
        }
    }

    /// Non-empty entries with their 1-based numbers: lines or `;`-separated, comment lines out.
    static func entries(_ text: String) -> [(Int, String)] {
        text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == ";" })
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .enumerated().map { ($0.offset + 1, $0.element) }
            .filter { !$0.1.isEmpty && !$0.1.hasPrefix("#") }
    }
}

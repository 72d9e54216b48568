import Foundation
import ZMQ

/// How a client's or a worker's link to the router is secured.
///
/// By default every link is CurveZMQ: encrypted, the router proven by its public key, and the
/// peer known to the router by its own key (a worker's must be in the router's allowlist, bound
/// to the services it may serve). `plain` exists only for the bus's own benchmarks and tests
/// (`CAREMESH_BUS_SECURITY=off`).
public enum BusLink: Sendable, Equatable {
    case plain
    /// CurveZMQ to the router whose public key is `router`, as `own`.
    case curve(router: CurveKey, own: CurveKeyPair)

    /// Applies the link's options to a socket before it connects.
    public func apply(to socket: ZMQSocket) throws(ZMQError) {
        if case .curve(let router, let own) = self { try socket.becomeCurveClient(of: router, own: own) }
    }

    /// A worker's link from the environment: `CAREMESH_ROUTER_PUBLIC_KEY` and its own secret key,
    /// `<SERVICE>_BUS_SECRET_KEY` or else `CAREMESH_BUS_SECRET_KEY` (each also as `…_FILE`, a file
    /// holding the key), both required unless `CAREMESH_BUS_SECURITY=off`.
    public static func worker(service: String, environment env: [String: String]) throws(BusConfigurationError) -> BusLink {
        guard try BusSettings.secured(env) else { return .plain }
        let router = try BusSettings.requiredKey(BusSettings.routerPublicKey, env)
        let variable = BusSettings.secretKeyVariable(for: service, env)
        return .curve(router: router, own: CurveKeyPair(secretKey: try BusSettings.requiredKey(variable, env)))
    }

    /// A client's link from the environment: `CAREMESH_ROUTER_PUBLIC_KEY` (required unless
    /// `CAREMESH_BUS_SECURITY=off`) and, if given, its own key as a worker's is read (`service`
    /// names the variable); a client with none gets a fresh key pair (encrypted, not known by
    /// name: enough unless the router keeps an allowlist of client keys).
    public static func client(service: String? = nil, environment env: [String: String]) throws(BusConfigurationError) -> BusLink {
        guard try BusSettings.secured(env) else { return .plain }
        let router = try BusSettings.requiredKey(BusSettings.routerPublicKey, env)
        let variable = service.map { BusSettings.secretKeyVariable(for: $0, env) } ?? BusSettings.ownSecretKey
        let own = try BusSettings.key(variable, env).map(CurveKeyPair.init(secretKey:)) ?? .generate()
        return .curve(router: router, own: own)
    }
}

/// The bus's settings read from the environment, in one place: the security switch, and keys
/// given inline or as files.
public enum BusSettings {
    /// `curve` (the default) or `off`.
    public static let security = "CAREMESH_BUS_SECURITY"
    /// The router's own secret key (the router only).
    public static let routerSecretKey = "CAREMESH_ROUTER_SECRET_KEY"
    /// The router's public key, which every client and worker needs.
    public static let routerPublicKey = "CAREMESH_ROUTER_PUBLIC_KEY"
    /// A process's own secret key (`<SERVICE>_BUS_SECRET_KEY` first, for a service).
    public static let ownSecretKey = "CAREMESH_BUS_SECRET_KEY"
    /// The router's allowlist of worker keys, each bound to the services it may serve.
    public static let workerKeys = "CAREMESH_BUS_WORKER_KEYS"
    /// The router's optional allowlist of client keys.
    public static let clientKeys = "CAREMESH_BUS_CLIENT_KEYS"

    /// Whether links are secured (`CAREMESH_BUS_SECURITY`: `curve`, the default, or `off`).
    public static func secured(_ env: [String: String]) throws(BusConfigurationError) -> Bool {
        switch (env[security] ?? "curve").lowercased() {
        case "curve", "on", "": return true
        case "off": return false
        case let other: throw BusConfigurationError(variable: security, problem: "is '\(other)'; use curve or off")
        }
    }

    /// The variable naming `service`'s own secret key: `<SERVICE>_BUS_SECRET_KEY` when it (or its
    /// `_FILE`) is set, else `CAREMESH_BUS_SECRET_KEY`.
    public static func secretKeyVariable(for service: String, _ env: [String: String]) -> String {
        let own = "\(service.uppercased().replacingOccurrences(of: "-", with: "_"))_BUS_SECRET_KEY"
        return isSet(own, env) ? own : ownSecretKey
    }

    /// Whether `name` or `name_FILE` is given (not empty).
    public static func isSet(_ name: String, _ env: [String: String]) -> Bool {
        !(env[name] ?? "").isEmpty || !(env["\(name)_FILE"] ?? "").isEmpty
    }

    /// The value of `name`, or the contents of the file `name_FILE` names (Docker's secrets
    /// convention); nil when neither is set.
    public static func text(_ name: String, _ env: [String: String]) throws(BusConfigurationError) -> String? {
        if let v = env[name], !v.isEmpty { return v }
        guard let path = env["\(name)_FILE"], !path.isEmpty else { return nil }
        guard let contents = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw BusConfigurationError(variable: "\(name)_FILE", problem: "names a file that cannot be read (\(path))")
        }
        return contents
    }

    /// A key from `name` (or `name_FILE`); nil when neither is set.
    public static func key(_ name: String, _ env: [String: String]) throws(BusConfigurationError) -> CurveKey? {
        guard let value = try text(name, env) else { return nil }
        guard let key = CurveKey(z85: value) else {
            throw BusConfigurationError(variable: name, problem: "is not a CurveZMQ key (40 characters of Z85, as `caremesh keys generate` prints)")
        }
        return key
    }

    public static func requiredKey(_ name: String, _ env: [String: String]) throws(BusConfigurationError) -> CurveKey {
        guard let key = try key(name, env) else {
            throw BusConfigurationError(variable: name, problem: "is not set (nor \(name)_FILE)")
        }
        return key
    }
}

/// A bus setting that cannot be used; it names the variable.
public struct BusConfigurationError: Error, CustomStringConvertible, Equatable {
    public let variable: String
    public let problem: String

    public init(variable: String, problem: String) {
        self.variable = variable
        self.problem = problem
    }

    public var description: String {
        "\(variable) \(problem). Every link to the router is CurveZMQ unless CAREMESH_BUS_SECURITY=off (the bus's own tests "
            + "and benchmarks only); `caremesh keys generate` makes a key pair, and `caremesh up` makes and wires them all"
    }
}

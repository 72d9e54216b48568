import Foundation

/// An `RPCClient`'s settings.
public struct ClientConfiguration: Sendable {
    /// The router's client endpoint (`tcp://127.0.0.1:5555`).
    public var endpoint = MDP.defaultClientEndpoint
    /// The framing spoken to the router (delimited by default).
    public var dialect = MDP.Dialect.delimited
    /// The timeout of a call that names none (10 s). No call waits forever.
    public var defaultTimeout: Duration = .seconds(10)
    /// Attempts per call, counting the first, for calls that are safe to retry (3).
    public var maxAttempts = 3
    /// The first retry waits about this long, doubling after (50 ms), unless told a retry-after.
    public var retryBackoff: Duration = .milliseconds(50)
    /// The largest request sent (4 MiB, the router's default limit).
    public var maxMessageSize = MDP.defaultMaxMessageSize
    /// A service's own sign-in: calls to methods that need a token carry its token unless
    /// they name an `authorization` themselves.
    public var credentials: ServiceCredentials?
    /// How the link to the router is secured (`init(environment:)`: CurveZMQ unless
    /// `CAREMESH_BUS_SECURITY=off`).
    public var link = BusLink.plain

    public init() {}

    public init(endpoint: String) {
        self.endpoint = endpoint
    }

    /// Reads the environment. Keys (all optional): `CAREMESH_ROUTER` or
    /// `CAREMESH_ROUTER_CLIENT_ENDPOINT` (a bind address such as `tcp://*:5555` is read as the
    /// local host), `CAREMESH_DIALECT`, `CAREMESH_TIMEOUT_MS`; and the link's keys (`BusLink.client`:
    /// `CAREMESH_ROUTER_PUBLIC_KEY`, required unless `CAREMESH_BUS_SECURITY=off`, and the caller's
    /// own key, `<SERVICE>_BUS_SECRET_KEY` for a service's client, optional).
    public init(environment env: [String: String], service: String? = nil) throws(BusConfigurationError) {
        self.init()
        link = try BusLink.client(service: service, environment: env)
        if let v = env["CAREMESH_ROUTER"] ?? env["CAREMESH_ROUTER_CLIENT_ENDPOINT"] {
            endpoint = v.replacingOccurrences(of: "*", with: "127.0.0.1")
        }
        if env["CAREMESH_DIALECT"] == "strict" { dialect = .strict }
        if let v = env["CAREMESH_TIMEOUT_MS"].flatMap(Int64.init) { defaultTimeout = .milliseconds(v) }
    }
}

/// Per-call options.
public struct CallOptions: Sendable {
    /// This call's timeout; the client's default if nil. Inside a handler the call never
    /// outlives the handler's own deadline.
    public var timeout: Duration?
    /// Extra metadata (lowercase keys), e.g. "authorization".
    public var metadata: [String: String] = [:]
    /// Makes a call with side effects safe to retry; services honour it.
    public var idempotencyKey: String?

    public init(timeout: Duration? = nil, metadata: [String: String] = [:], idempotencyKey: String? = nil) {
        self.timeout = timeout
        self.metadata = metadata
        self.idempotencyKey = idempotencyKey
    }
}

extension Duration {
    /// The duration in whole nanoseconds (0 if negative).
    public var nanoseconds: UInt64 {
        let (s, a) = components
        return s < 0 ? 0 : UInt64(s) * 1_000_000_000 + UInt64(a / 1_000_000_000)
    }

    /// The duration in seconds, e.g. for SQL's `make_interval(secs => …)`.
    public var seconds: Double {
        let (s, a) = components
        return Double(s) + Double(a) / 1e18
    }
}

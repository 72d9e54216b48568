import CareMeshRPC
import Foundation
import ZMQ

/// The router's settings, with WIRE.md's defaults.
public struct RouterConfiguration: Sendable {
    /// Where clients connect (`tcp://127.0.0.1:5555`).
    public var clientEndpoint = MDP.defaultClientEndpoint
    /// Where workers connect (`tcp://127.0.0.1:5556`).
    public var workerEndpoint = MDP.defaultWorkerEndpoint
    /// Dispatch, queueing, deadline and liveness settings.
    public var dispatch = RouterStateMachine.Configuration()
    /// Messages queued per peer before sends to it fail (counted as undeliverable).
    public var sendHighWaterMark: Int32 = 100_000
    /// CurveZMQ on both endpoints: the router's key pair and who may connect (nil: plain TCP and
    /// no check of who registers, for the bus's own tests and benchmarks only).
    public var security: Security?
    /// The router's own sign-in (`ROUTER_SERVICE_SECRET`, which identity knows too), to pull
    /// identity's token revocations; without it revoked tokens work until they expire.
    public var serviceSecret: String?

    /// The router's long-term key pair and its allowlists.
    public struct Security: Sendable, Equatable {
        public var keys: CurveKeyPair
        public var allowlist: BusAllowlist

        public init(keys: CurveKeyPair, allowlist: BusAllowlist) {
            self.keys = keys
            self.allowlist = allowlist
        }
    }

    public init() {}

    /// Reads the environment. Keys (all optional):
    /// `CAREMESH_ROUTER_CLIENT_ENDPOINT`, `CAREMESH_ROUTER_WORKER_ENDPOINT`,
    /// `CAREMESH_HEARTBEAT_MS`, `CAREMESH_LIVENESS`, `CAREMESH_MAX_QUEUE`,
    /// `CAREMESH_MAX_MESSAGE_BYTES`, `CAREMESH_DEFAULT_TIMEOUT_MS`, `CAREMESH_ROUTER_AUTH`
    /// (`required`, the default, or `disabled`: tests of the bus alone, never a deployment);
    /// and the bus's security: `CAREMESH_ROUTER_SECRET_KEY` and the allowlists
    /// `CAREMESH_BUS_WORKER_KEYS`, `CAREMESH_BUS_CLIENT_KEYS` (each also as `…_FILE`; see
    /// `BusAllowlist`), unless `CAREMESH_BUS_SECURITY=off`.
    public init(environment env: [String: String]) throws(BusConfigurationError) {
        self.init()
        if try BusSettings.secured(env) {
            let keys = CurveKeyPair(secretKey: try BusSettings.requiredKey(BusSettings.routerSecretKey, env))
            let allowlist = try BusAllowlist(environment: env)
            if allowlist.workers.isEmpty {
                throw BusConfigurationError(variable: BusSettings.workerKeys, problem: "is empty: no service could register")
            }
            security = Security(keys: keys, allowlist: allowlist)
        }
        if let v = env["CAREMESH_ROUTER_CLIENT_ENDPOINT"] { clientEndpoint = v }
        if let v = env["CAREMESH_ROUTER_WORKER_ENDPOINT"] { workerEndpoint = v }
        if let v = env["CAREMESH_HEARTBEAT_MS"].flatMap(UInt64.init) { dispatch.heartbeatIntervalNs = v * 1_000_000 }
        if let v = env["CAREMESH_LIVENESS"].flatMap(UInt64.init) { dispatch.liveness = v }
        if let v = env["CAREMESH_MAX_QUEUE"].flatMap(Int.init) { dispatch.maxQueuePerService = v }
        if let v = env["CAREMESH_MAX_MESSAGE_BYTES"].flatMap(Int.init) { dispatch.maxMessageSize = v }
        if let v = env["CAREMESH_DEFAULT_TIMEOUT_MS"].flatMap(UInt32.init) { dispatch.defaultTimeoutMs = v }
        if env["CAREMESH_ROUTER_AUTH"]?.lowercased() == "disabled" { dispatch.authentication = .disabled }
        serviceSecret = env[ServiceCredentials.variable(for: "router")].flatMap { $0.isEmpty ? nil : $0 }
    }
}

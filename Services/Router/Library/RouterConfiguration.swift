import CareMeshRPC
import Foundation

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

    public init() {}

    /// Reads the environment. Keys (all optional):
    /// `CAREMESH_ROUTER_CLIENT_ENDPOINT`, `CAREMESH_ROUTER_WORKER_ENDPOINT`,
    /// `CAREMESH_HEARTBEAT_MS`, `CAREMESH_LIVENESS`, `CAREMESH_MAX_QUEUE`,
    /// `CAREMESH_MAX_MESSAGE_BYTES`, `CAREMESH_DEFAULT_TIMEOUT_MS`, `CAREMESH_ROUTER_AUTH`
    /// (`required`, the default, or `disabled`: tests of the bus alone, never a deployment).
    public init(environment env: [String: String]) {
        self.init()
        if let v = env["CAREMESH_ROUTER_CLIENT_ENDPOINT"] { clientEndpoint = v }
        if let v = env["CAREMESH_ROUTER_WORKER_ENDPOINT"] { workerEndpoint = v }
        if let v = env["CAREMESH_HEARTBEAT_MS"].flatMap(UInt64.init) { dispatch.heartbeatIntervalNs = v * 1_000_000 }
        if let v = env["CAREMESH_LIVENESS"].flatMap(UInt64.init) { dispatch.liveness = v }
        if let v = env["CAREMESH_MAX_QUEUE"].flatMap(Int.init) { dispatch.maxQueuePerService = v }
        if let v = env["CAREMESH_MAX_MESSAGE_BYTES"].flatMap(Int.init) { dispatch.maxMessageSize = v }
        if let v = env["CAREMESH_DEFAULT_TIMEOUT_MS"].flatMap(UInt32.init) { dispatch.defaultTimeoutMs = v }
        if env["CAREMESH_ROUTER_AUTH"]?.lowercased() == "disabled" { dispatch.authentication = .disabled }
    }
}

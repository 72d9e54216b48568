import Foundation

/// A worker's settings: which service it serves, where the router is, its capacity.
public struct WorkerConfiguration: Sendable {
    /// The MDP service name ("identity", "dispatch", …).
    public var service: String
    /// The router's worker endpoint (`tcp://127.0.0.1:5556`).
    public var endpoint = MDP.defaultWorkerEndpoint
    /// The framing this worker speaks (delimited by default, as majortomo's broker expects).
    public var dialect = MDP.Dialect.delimited
    /// Heartbeats, liveness, capacity, backoff and drain.
    public var connection = WorkerStateMachine.Configuration()
    /// Unique per process; shown in health answers and the router's worker list.
    public var instanceID: String
    public var version = CareMeshVersion.current
    /// The deadline given to a request that carries none (30 s).
    public var defaultTimeoutMs: UInt32 = 30_000
    /// How the link to the router is secured (`init(service:environment:)`: CurveZMQ with the
    /// service's own key unless `CAREMESH_BUS_SECURITY=off`).
    public var link = BusLink.plain

    public init(service: String) {
        self.service = service
        self.instanceID = "\(service)-\(ProcessInfo.processInfo.processIdentifier)-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    }

    /// Reads the environment. Keys (all optional): `CAREMESH_ROUTER_WORKER_ENDPOINT` (a bind
    /// address such as `tcp://*:5556` is read as the local host), `CAREMESH_DIALECT`
    /// (`delimited` | `strict`), `CAREMESH_HEARTBEAT_MS`, `CAREMESH_LIVENESS`,
    /// `CAREMESH_WORKER_CAPACITY`, `CAREMESH_DRAIN_ACK_MS`; and the link's keys (`BusLink.worker`).
    public init(service: String, environment env: [String: String]) throws(BusConfigurationError) {
        self.init(service: service)
        link = try BusLink.worker(service: service, environment: env)
        if let v = env["CAREMESH_ROUTER_WORKER_ENDPOINT"] { endpoint = v.replacingOccurrences(of: "*", with: "127.0.0.1") }
        if env["CAREMESH_DIALECT"] == "strict" { dialect = .strict }
        if let v = env["CAREMESH_HEARTBEAT_MS"].flatMap(UInt64.init) { connection.heartbeatIntervalNs = v * 1_000_000 }
        if let v = env["CAREMESH_LIVENESS"].flatMap(UInt64.init) { connection.liveness = v }
        if let v = env["CAREMESH_WORKER_CAPACITY"].flatMap(Int.init), v > 0 { connection.capacity = v }
        if let v = env["CAREMESH_DRAIN_ACK_MS"].flatMap(UInt64.init) { connection.drainAckTimeoutNs = v * 1_000_000 }
    }
}

/// The version every CareMesh executable reports.
public enum CareMeshVersion {
    public static let current = "0.1.0"
}

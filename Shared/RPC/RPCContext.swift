import CareMeshContracts
import Foundation
import ZMQ

/// What a handler knows about the call it serves. Bound as a task-local while the handler
/// runs, so an `RPCClient` call made from inside it inherits the deadline and the trace.
public struct RPCContext: Sendable {
    public var method: String
    public var requestID: UInt64
    /// Monotonic nanoseconds (`monotonicNanos()`) at which the caller stops waiting.
    public var deadline: UInt64
    public var metadata: [String: String]
    /// The caller as verified by the router (nil when anonymous).
    public var caller: Caremesh_Rpc_V1_Caller?

    /// The context of the handler running in this task, if any.
    @TaskLocal public static var current: RPCContext?

    public init(method: String, requestID: UInt64, deadline: UInt64, metadata: [String: String] = [:],
                caller: Caremesh_Rpc_V1_Caller? = nil) {
        self.method = method
        self.requestID = requestID
        self.deadline = deadline
        self.metadata = metadata
        self.caller = caller
    }

    /// W3C trace context of the call.
    public var traceparent: String? { metadata["traceparent"] }
    /// The caller's idempotency key, if it gave one.
    public var idempotencyKey: String? { metadata["idempotency-key"] }

    /// Milliseconds left before the deadline (0 when passed).
    public var remainingMs: UInt64 {
        let now = monotonicNanos()
        return deadline > now ? (deadline - now) / 1_000_000 : 0
    }
}

/// W3C `traceparent` helpers: a child span keeps the trace id and gets a new span id.
public enum TraceParent {
    static func hex(_ count: Int) -> String {
        var g = SystemRandomNumberGenerator()
        var s = ""
        for _ in 0..<count { s += String(format: "%02x", UInt8.random(in: 0...255, using: &g)) }
        return s
    }

    /// A new root: `00-<32 hex trace>-<16 hex span>-01`.
    public static func root() -> String { "00-\(hex(16))-\(hex(8))-01" }

    /// A child of `parent` (same trace, new span), or a new root if `parent` is not valid.
    public static func child(of parent: String?) -> String {
        guard let p = parent else { return root() }
        let parts = p.split(separator: "-")
        guard parts.count == 4, parts[1].count == 32, parts[2].count == 16 else { return root() }
        return "\(parts[0])-\(parts[1])-\(hex(8))-\(parts[3])"
    }

    /// The trace id of a traceparent.
    public static func traceID(_ value: String) -> Substring? {
        let parts = value.split(separator: "-")
        return parts.count == 4 ? parts[1] : nil
    }
}

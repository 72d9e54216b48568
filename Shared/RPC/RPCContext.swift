import CareMeshContracts
import Foundation
import Synchronization
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
    /// The trace id of the call's traceparent ("" without one): what audit trails record, to tie
    /// an entry to the request across services (never the request body).
    public var traceID: String { traceparent.flatMap(TraceParent.traceID).map(String.init) ?? "" }
    /// The caller's idempotency key, if it gave one.
    public var idempotencyKey: String? { metadata["idempotency-key"] }

    /// How long before the deadline a handler should have its answer, so the reply still
    /// reaches the caller in time (200 ms).
    public static let replyMarginNs: UInt64 = 200_000_000

    /// When the handler's work should be done: the deadline less the reply margin (never
    /// before half the time that was left when asked).
    public var answerBy: UInt64 {
        let now = monotonicNanos()
        guard deadline > now else { return deadline }
        return deadline - min(Self.replyMarginNs, (deadline - now) / 2)
    }

    /// Milliseconds left before the deadline (0 when passed).
    public var remainingMs: UInt64 {
        let now = monotonicNanos()
        return deadline > now ? (deadline - now) / 1_000_000 : 0
    }
}

/// W3C `traceparent` helpers: a child span keeps the trace id and gets a new span id.
public enum TraceParent {
    /// splitmix64 over an atomic counter seeded once from the system: unique, well mixed ids
    /// without a getrandom syscall per call (trace ids need not be secret, only unguessable
    /// enough not to collide).
    private static let sequence = Atomic<UInt64>(UInt64.random(in: 0...UInt64.max))

    static func random64() -> UInt64 {
        var z = sequence.wrappingAdd(0x9E37_79B9_7F4A_7C15, ordering: .relaxed).newValue
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// `count` random bytes as lowercase hex (`count` a multiple of 8).
    static func hex(_ count: Int) -> String {
        let digits: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: count * 2) { buffer in
            digits.withUTF8Buffer { d in
                var i = 0
                while i < count * 2 {
                    var word = random64()
                    for _ in 0..<16 {
                        buffer[i] = d[Int(word & 0xF)]
                        word >>= 4
                        i += 1
                    }
                }
            }
            return count * 2
        }
    }

    /// A new root: `00-<32 hex trace>-<16 hex span>-01`.
    public static func root() -> String {
        // Written in place: one string, no pieces interpolated.
        let digits: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: 55) { buffer in
            digits.withUTF8Buffer { d in
                func put(_ text: StaticString, at i: Int) {
                    text.withUTF8Buffer { for (j, b) in $0.enumerated() { buffer[i + j] = b } }
                }
                func hex(_ words: Int, at start: Int) {
                    var i = start
                    for _ in 0..<words {
                        var word = random64()
                        for _ in 0..<16 { buffer[i] = d[Int(word & 0xF)]; word >>= 4; i += 1 }
                    }
                }
                put("00-", at: 0)
                hex(2, at: 3)
                buffer[35] = UInt8(ascii: "-")
                hex(1, at: 36)
                put("-01", at: 52)
            }
            return 55
        }
    }

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

import CareMeshRPC
import Dispatch

/// Runs password hashing off the Swift concurrency pool, at most `limit` at once.
///
/// One scrypt hash at OWASP's parameters takes 128 MiB and a few hundred milliseconds of one
/// core: run on the cooperative pool it would stall every other task of the service, and a
/// burst of sign-ins could exhaust memory. Waiters queue in arrival order.
final class HashGate: Sendable {
    private let slots: FIFOLimiter
    private let queue = DispatchQueue(label: "caremesh.identity.hash", qos: .userInitiated, attributes: .concurrent)

    init(limit: Int) {
        slots = FIFOLimiter(limit: limit)
    }

    func run<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await slots.acquire()
        defer { slots.release() }
        return await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: work()) }
        }
    }
}

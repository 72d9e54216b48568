import Dispatch
import Synchronization

/// Runs password hashing off the Swift concurrency pool, at most `limit` at once.
///
/// One scrypt hash at OWASP's parameters takes 128 MiB and a few hundred milliseconds of one
/// core: run on the cooperative pool it would stall every other task of the service, and a
/// burst of sign-ins could exhaust memory. Waiters queue in arrival order.
final class HashGate: Sendable {
    private let limit: Int
    private let state = Mutex<(running: Int, waiting: [CheckedContinuation<Void, Never>])>((0, []))
    private let queue = DispatchQueue(label: "caremesh.identity.hash", qos: .userInitiated, attributes: .concurrent)

    init(limit: Int) {
        self.limit = max(1, limit)
    }

    func run<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await acquire()
        defer { release() }
        return await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: work()) }
        }
    }

    private func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let admitted = state.withLock { s -> Bool in
                if s.running < limit {
                    s.running += 1
                    return true
                }
                s.waiting.append(continuation)
                return false
            }
            if admitted { continuation.resume() }
        }
    }

    private func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiting.isEmpty {
                s.running -= 1
                return nil
            }
            return s.waiting.removeFirst()  // the slot passes straight to the next waiter
        }
        next?.resume()
    }
}

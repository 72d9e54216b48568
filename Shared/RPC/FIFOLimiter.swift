import Synchronization

/// At most `limit` holders at once; the others wait and are let in in the order they came (a
/// released slot passes straight to the next waiter). Joining and leaving the queue are O(1),
/// so tens of thousands may wait. A waiter cannot be cancelled: keep what runs under a slot
/// bounded in time.
///
/// ```swift
/// await limiter.acquire()
/// defer { limiter.release() }
/// ```
public final class FIFOLimiter: Sendable {
    private struct State {
        var holders = 0
        var waiting: [CheckedContinuation<Void, Never>] = []
        /// The next waiter's index in `waiting`.
        var head = 0
    }

    public let limit: Int
    private let state = Mutex(State())

    public init(limit: Int) { self.limit = max(1, limit) }

    /// Returns once the caller holds a slot.
    public func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let admitted = state.withLock { s -> Bool in
                if s.holders < limit {
                    s.holders += 1
                    return true
                }
                s.waiting.append(continuation)
                return false
            }
            if admitted { continuation.resume() }
        }
    }

    /// Gives the slot to the next waiter, or back.
    public func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard s.head < s.waiting.count else {
                s.holders -= 1
                return nil
            }
            let next = s.waiting[s.head]
            s.head += 1
            if s.head == s.waiting.count {
                s.waiting.removeAll(keepingCapacity: true)
                s.head = 0
            } else if s.head >= 1_024 && s.head * 2 >= s.waiting.count {
                s.waiting.removeFirst(s.head)
                s.head = 0
            }
            return next
        }
        next?.resume()
    }

    /// Slots held, and callers waiting for one.
    public var counts: (holders: Int, waiting: Int) {
        state.withLock { ($0.holders, $0.waiting.count - $0.head) }
    }
}

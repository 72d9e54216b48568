import Synchronization
import Testing

@testable import CareMeshRPC

/// The bound the sandbox's callbacks and identity's password hashing run under.
struct FIFOLimiterTests {
    @Test("never more than the limit in flight; every one goes through; nothing left held")
    func bounded() async {
        let lane = FIFOLimiter(limit: 3)
        let seen = Seen()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<40 {
                group.addTask {
                    await lane.acquire()
                    seen.enter()
                    try? await Task.sleep(for: .milliseconds(2))
                    seen.leave()
                    lane.release()
                }
            }
        }
        #expect(seen.state.withLock { $0.most } == 3)
        #expect(seen.state.withLock { $0.done } == 40)
        #expect(lane.counts == (0, 0))
    }

    @Test("many waiting: all let in, in order, with the queue compacted on the way")
    func manyWaiting() async throws {
        let lane = FIFOLimiter(limit: 1)
        await lane.acquire()
        let seen = Seen()
        let n = 5_000
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<n {
                group.addTask {
                    await lane.acquire()
                    seen.state.withLock { $0.order.append(i) }
                    lane.release()
                }
            }
            while lane.counts.waiting < n { try await Task.sleep(for: .milliseconds(1)) }
            lane.release()
            try await group.waitForAll()
        }
        #expect(seen.state.withLock { $0.order.count } == n)
        #expect(Set(seen.state.withLock { $0.order }).count == n)
        #expect(lane.counts == (0, 0))
    }

    @Test("waiting ones go in the order they came")
    func inOrder() async throws {
        let lane = FIFOLimiter(limit: 1)
        await lane.acquire()
        let seen = Seen()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 1...5 {
                group.addTask {
                    await lane.acquire()
                    seen.state.withLock { $0.order.append(i) }
                    lane.release()
                }
                // The next comes only once this one waits.
                while lane.counts.waiting < i { try await Task.sleep(for: .milliseconds(1)) }
            }
            lane.release()
            try await group.waitForAll()
        }
        #expect(seen.state.withLock { $0.order } == [1, 2, 3, 4, 5])
        #expect(lane.counts == (0, 0))
    }
}

/// What the lane's users saw.
final class Seen: Sendable {
    struct State {
        var now = 0, most = 0, done = 0
        var order: [Int] = []
    }

    let state = Mutex(State())

    func enter() {
        state.withLock {
            $0.now += 1
            $0.most = max($0.most, $0.now)
        }
    }

    func leave() {
        state.withLock {
            $0.now -= 1
            $0.done += 1
        }
    }
}

import CareMeshStore
import Foundation
import Synchronization
import Testing

/// `GroupCommit` without I/O: its flushes are closures that record what they were given.
@Suite struct GroupCommitTests {
    /// Records each flush's batch; the first flush waits until `release()` so that the
    /// callers arriving meanwhile queue behind it.
    final class Recorder: Sendable {
        let batches = Mutex<[[Int]]>([])
        let gate: AsyncStream<Void>
        let opener: AsyncStream<Void>.Continuation
        let entered: AsyncStream<Void>
        let enteredSignal: AsyncStream<Void>.Continuation
        let failOn: Int?

        init(failOn: Int? = nil) {
            (gate, opener) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .unbounded)
            (entered, enteredSignal) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .unbounded)
            self.failOn = failOn
        }

        func flush(_ items: [Int]) async throws -> [Int] {
            let n = batches.withLock { b in b.append(items); return b.count }
            if n == 1 {
                enteredSignal.yield()
                var it = gate.makeAsyncIterator()
                _ = await it.next()
            }
            if let failOn, items.contains(failOn) { throw Failure.flush }
            return items.map { $0 * 10 }
        }

        func release() { opener.yield() }

        func waitUntilFirstFlush() async {
            var it = entered.makeAsyncIterator()
            _ = await it.next()
        }
    }

    enum Failure: Error { case flush }

    /// Waits (polling, bounded) until `condition` holds.
    static func eventually(_ condition: () -> Bool) async throws {
        for _ in 0..<2_000 where !condition() { try await Task.sleep(for: .milliseconds(1)) }
        #expect(condition())
    }

    /// Submits 0 and holds its flush, then submits `1...n` one after another (each queued
    /// before the next), then lets the first flush finish. Returns the first call and the rest.
    static func queueBehindFirstFlush(_ commit: GroupCommit<Int, Int>, _ r: Recorder, _ n: Int) async throws
        -> (first: Task<Int, any Error>, rest: [Task<Int, any Error>])
    {
        let first = Task { try await commit.submit(0) }
        await r.waitUntilFirstFlush()
        var rest: [Task<Int, any Error>] = []
        for i in 1...n {
            rest.append(Task { try await commit.submit(i) })
            try await eventually { commit.queuedCount == i }
        }
        r.release()
        return (first, rest)
    }

    @Test("callers arriving during a flush share the next one, in arrival order, each with its own output")
    func batchesWhileBusy() async throws {
        let r = Recorder()
        let commit = GroupCommit<Int, Int>(maxBatch: 100) { try await r.flush($0) }
        let first = Task { try await commit.submit(0) }
        await r.waitUntilFirstFlush()
        var rest: [Task<Int, any Error>] = []
        for i in 1...10 {
            rest.append(Task { try await commit.submit(i) })
            try await Self.eventually { commit.queuedCount == i }
        }
        r.release()
        #expect(try await first.value == 0)
        for (i, t) in rest.enumerated() { #expect(try await t.value == (i + 1) * 10) }
        #expect(r.batches.withLock { $0 } == [[0], Array(1...10)])
        #expect(commit.flushCount == 2)
    }

    @Test("a batch never exceeds maxBatch")
    func maxBatch() async throws {
        let r = Recorder()
        let commit = GroupCommit<Int, Int>(maxBatch: 4) { try await r.flush($0) }
        let (first, rest) = try await Self.queueBehindFirstFlush(commit, r, 10)
        _ = try await first.value
        for (i, t) in rest.enumerated() { #expect(try await t.value == (i + 1) * 10) }
        #expect(r.batches.withLock { $0 } == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10]])
    }

    @Test("a failed flush fails exactly its own batch; the next one still runs")
    func failureStaysInItsBatch() async throws {
        let r = Recorder(failOn: 2)
        let commit = GroupCommit<Int, Int>(maxBatch: 2) { try await r.flush($0) }
        let (first, rest) = try await Self.queueBehindFirstFlush(commit, r, 4)
        #expect(try await first.value == 0)
        // Batches [1, 2] (fails: 2 is poisoned) and [3, 4].
        for i in [0, 1] { await #expect(throws: Failure.self) { try await rest[i].value } }
        #expect(try await rest[2].value == 30)
        #expect(try await rest[3].value == 40)
    }

    @Test("a caller cancelled while queued is answered at once and its item is never flushed")
    func cancellationWhileQueued() async throws {
        let r = Recorder()
        let commit = GroupCommit<Int, Int>(maxBatch: 100) { try await r.flush($0) }
        let first = Task { try await commit.submit(0) }
        await r.waitUntilFirstFlush()
        let doomed = Task { try await commit.submit(1) }
        try await Self.eventually { commit.queuedCount == 1 }
        let kept = Task { try await commit.submit(2) }
        try await Self.eventually { commit.queuedCount == 2 }
        doomed.cancel()
        await #expect(throws: CancellationError.self) { try await doomed.value }  // while the flush is still held
        r.release()
        _ = try await first.value
        #expect(try await kept.value == 20)
        #expect(r.batches.withLock { $0 } == [[0], [2]])
    }

    @Test("an idle commit flushes a lone caller at once, every time")
    func loneCallers() async throws {
        let r = Recorder()
        r.release()  // the first flush does not wait
        let commit = GroupCommit<Int, Int>(maxBatch: 100) { try await r.flush($0) }
        for i in 0..<20 { #expect(try await commit.submit(i) == i * 10) }
        #expect(r.batches.withLock { $0 } == (0..<20).map { [$0] })
    }
}

import CareMeshRPC
import Synchronization

/// Group commit: many callers' small writes become one statement.
///
/// Each `submit` waits until its item is written and gets its own output. One flush runs at a
/// time; items that arrive meanwhile queue, and the next flush takes all of them (up to
/// `maxBatch`). Batches therefore grow with the load by themselves, and a lone caller is
/// written at once: no timer, no added delay (PostgreSQL's group commit and Nagle without the
/// wait). Items are flushed in arrival order, so of two writes by one caller the later lands
/// later.
///
/// - A flush that throws fails every caller in its batch with that error.
/// - A caller cancelled while waiting (its RPC's deadline) gets `CancellationError` at once.
///   If its item was already in a flush it may still be written, so use this for writes that
///   may be repeated (upserts of a latest value), never to acknowledge something that must
///   not be lost without an answer.
///
/// ```swift
/// let fixes = GroupCommit<Fix, Date>(maxBatch: 256) { batch in try await writeAll(batch) }
/// let at = try await fixes.submit(fix)
/// ```
public final class GroupCommit<Item: Sendable, Output: Sendable>: Sendable {
    public typealias Flush = @Sendable ([Item]) async throws -> [Output]

    public let maxBatch: Int
    private let flush: Flush

    private struct State {
        var queue = FIFO<(id: UInt64, item: Item)>()
        /// Callers still waiting, by id; whoever removes one resumes it (exactly once).
        var waiting: [UInt64: CheckedContinuation<Output, any Error>] = [:]
        var flushing = false
        var nextID: UInt64 = 0
        var flushes = 0
    }
    private let state = Mutex(State())

    /// `flush` gets the items of one batch in arrival order and returns one output per item,
    /// in the same order.
    public init(maxBatch: Int = 256, flush: @escaping Flush) {
        precondition(maxBatch > 0)
        self.maxBatch = maxBatch
        self.flush = flush
    }

    /// How many flushes have run (for tests and metrics).
    public var flushCount: Int { state.withLock { $0.flushes } }

    /// Items waiting for a flush to take them (for tests and metrics).
    public var queuedCount: Int { state.withLock { $0.queue.count } }

    /// Queues `item`, waits until a flush has written it, and returns its output.
    public func submit(_ item: Item) async throws -> Output {
        let id = state.withLock { s in defer { s.nextID &+= 1 }; return s.nextID }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Output, any Error>) in
                let start = state.withLock { s -> Bool? in
                    // Checked under the lock: a cancellation that came before is seen here.
                    if Task.isCancelled { return nil }
                    s.waiting[id] = c
                    s.queue.append((id, item))
                    if s.flushing { return false }
                    s.flushing = true
                    return true
                }
                switch start {
                case nil: c.resume(throwing: CancellationError())
                case true?: Task.detached { await self.drain() }  // detached: no caller's task-locals
                case false?: break
                }
            }
        } onCancel: {
            state.withLock { $0.waiting.removeValue(forKey: id) }?.resume(throwing: CancellationError())
        }
    }

    /// Flushes batches until the queue is empty.
    private func drain() async {
        while true {
            let batch = state.withLock { s -> [(id: UInt64, item: Item)] in
                var batch: [(id: UInt64, item: Item)] = []
                while batch.count < maxBatch, let next = s.queue.popFirst() {
                    if s.waiting[next.id] != nil { batch.append(next) }  // skip the cancelled
                }
                if batch.isEmpty { s.flushing = false } else { s.flushes += 1 }
                return batch
            }
            if batch.isEmpty { return }
            let result: Result<[Output], any Error>
            do {
                let outputs = try await flush(batch.map(\.item))
                result = outputs.count == batch.count ? .success(outputs) : .failure(GroupCommitError.outputCount(outputs.count, batch.count))
            } catch {
                result = .failure(error)
            }
            let waiters = state.withLock { s in batch.map { s.waiting.removeValue(forKey: $0.id) } }
            for (i, waiter) in waiters.enumerated() {
                guard let waiter else { continue }
                switch result {
                case .success(let outputs): waiter.resume(returning: outputs[i])
                case .failure(let error): waiter.resume(throwing: error)
                }
            }
        }
    }
}

public enum GroupCommitError: Error, CustomStringConvertible {
    case outputCount(Int, Int)

    public var description: String {
        switch self {
        case .outputCount(let got, let expected): "a group commit's flush returned \(got) outputs for \(expected) items"
        }
    }
}

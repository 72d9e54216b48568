import Synchronization
import ZMQ

/// Runs the jobs of tasks that prefer it on an I/O thread, between that thread's polls.
///
/// A task that calls through `RPCClient` from `withTaskExecutorPreference(client.executor)`
/// sends its request and is resumed by its reply on the client's own I/O thread, with no hop
/// to the concurrency pool and back, as a caller on NIO's event loop is served by it. Such tasks
/// must not block or compute for long: the socket waits meanwhile. Once the thread has stopped,
/// jobs go to the global concurrent executor, so no task is ever stranded.
public final class IOExecutor: TaskExecutor, Sendable {
    private let wake: EventSignal
    private let state = Mutex<(jobs: [UnownedJob], open: Bool)>(([], true))

    init(wake: EventSignal) {
        self.wake = wake
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        let queued = state.withLock { s in
            guard s.open else { return false }
            s.jobs.append(unowned)
            return true
        }
        if queued { wake.signal() } else { globalConcurrentExecutor.enqueue(ExecutorJob(unowned)) }
    }

    /// Whether the caller runs on this executor's I/O thread (as NIO's `inEventLoop`).
    public var isCurrent: Bool { wake.onOwnerThread }

    /// Whether jobs are waiting (the I/O thread then polls without sleeping).
    var hasJobs: Bool { state.withLock { !$0.jobs.isEmpty } }

    /// Runs the jobs queued so far (on the I/O thread); those they enqueue wait for the next turn.
    func runQueued() {
        for job in take(closing: false) { job.runSynchronously(on: asUnownedTaskExecutor()) }
    }

    /// Stops taking jobs (the I/O thread is ending) and hands the waiting ones to the pool.
    func close() {
        for job in take(closing: true) { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }

    private func take(closing: Bool) -> [UnownedJob] {
        state.withLock { s in
            if closing { s.open = false }
            defer { s.jobs = [] }
            return s.jobs
        }
    }
}

import Foundation
import Synchronization

/// A dedicated OS thread for blocking ZeroMQ work, never the Swift concurrency pool: the
/// sockets it creates live and die on it.
public final class IOThread: Sendable {
    private let state = Mutex<(finished: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    private let done = DispatchSemaphore(value: 0)

    /// Starts `body` on a new thread named `name`.
    public init(name: String, _ body: @escaping @Sendable () -> Void) {
        let thread = Thread { [self] in
            body()
            let waiters = state.withLock { s in
                s.finished = true
                defer { s.waiters = [] }
                return s.waiters
            }
            for w in waiters { w.resume() }
            done.signal()
        }
        thread.name = name
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Blocks until the body returned (from a thread that may block, never a task).
    public func join() {
        done.wait()
        done.signal()
    }

    /// Waits for the body to return without blocking a concurrency thread.
    public func joined() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let finished = state.withLock { s in
                if s.finished { return true }
                s.waiters.append(c)
                return false
            }
            if finished { c.resume() }
        }
    }
}

/// A one-shot result handed from an I/O thread to whoever waits for it to start.
public final class StartupResult: Sendable {
    public init() {}
    private let semaphore = DispatchSemaphore(value: 0)
    private let value = Mutex<(any Error)??>(nil)

    public func succeed() { value.withLock { $0 = .some(nil) }; semaphore.signal() }
    public func fail(_ error: any Error) { value.withLock { $0 = .some(error) }; semaphore.signal() }

    /// Blocks until the thread reported; rethrows its error.
    public func wait() throws {
        semaphore.wait()
        if let error = value.withLock({ $0 }) ?? nil { throw error }
    }
}

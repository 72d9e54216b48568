import CZMQ
import Foundation
import Synchronization

/// Waits for several sockets and file descriptors at once (zmq_poll). Like the sockets it
/// polls, it belongs to one thread.
public struct ZMQPoller {
    private var items: [zmq_pollitem_t] = []

    public init() {}

    /// Adds a socket to wait for input on; returns its bit index in `pollMask`'s result.
    @discardableResult
    public mutating func add(_ socket: ZMQSocket) -> Int {
        items.append(zmq_pollitem_t(socket: socket.handle, fd: -1, events: Int16(ZMQ_POLLIN), revents: 0))
        return items.count - 1
    }

    /// Adds a file descriptor (an `EventSignal`) to wait for input on.
    @discardableResult
    public mutating func add(fd: Int32) -> Int {
        items.append(zmq_pollitem_t(socket: nil, fd: fd, events: Int16(ZMQ_POLLIN), revents: 0))
        return items.count - 1
    }

    /// Waits up to `timeoutMs` (-1: forever) for input; bit i of the result is set when item i
    /// is readable (no allocation on the hot path).
    public mutating func pollMask(timeoutMs: Int) -> UInt64 {
        let n = items.withUnsafeMutableBufferPointer { zmq_poll($0.baseAddress, Int32($0.count), timeoutMs) }
        guard n > 0 else { return 0 }
        var mask: UInt64 = 0
        for i in items.indices where items[i].revents & Int16(ZMQ_POLLIN) != 0 { mask |= 1 << UInt64(i) }
        return mask
    }
}

/// Wakes a thread blocked in `ZMQPoller.poll` from any thread or task (an eventfd).
///
/// Signals coalesce: while one is pending (not yet drained) further `signal()` calls are a
/// single atomic operation, no syscall. The waiting thread must `drain()` before it looks at
/// the shared state the signal announces, so nothing published after the drain goes unseen.
///
/// The polling thread may `becomeOwner()`: a signal from the owner thread itself is then
/// skipped (it looks at the shared state again before it next polls, so there is nothing to
/// wake), which saves a write and a wasted poll when work is finished on the I/O thread.
public final class EventSignal: Sendable {
    public let fd: Int32
    private let pending = Atomic<Bool>(false)
    private let owner = Atomic<UInt>(0)

    public init() {
        fd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        precondition(fd >= 0, "eventfd failed")
    }

    deinit { Glibc.close(fd) }

    /// Marks the calling thread as the one that polls this signal (see the type's note).
    public func becomeOwner() { owner.store(UInt(pthread_self()), ordering: .relaxed) }

    /// Whether the caller runs on the owner thread.
    public var onOwnerThread: Bool { owner.load(ordering: .relaxed) == UInt(pthread_self()) }

    /// Makes the fd readable; cheap and safe to call often.
    public func signal() {
        if onOwnerThread { return }
        guard !pending.exchange(true, ordering: .sequentiallyConsistent) else { return }
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { Glibc.write(fd, $0.baseAddress, 8) }
    }

    /// Clears the signal (call on the polling thread after waking, before reading the state).
    ///
    /// Read first, clear second: clearing first would let a `signal()` in between write the fd
    /// and have that write read away here while `pending` stays set, so the next signal would
    /// skip its write and the thread sleep through it.
    public func drain() {
        var value: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &value) { Glibc.read(fd, $0.baseAddress, 8) }
        pending.store(false, ordering: .sequentiallyConsistent)
    }
}

/// Monotonic time in nanoseconds (CLOCK_MONOTONIC), the clock of every deadline here.
@inline(__always)
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

import CZMQ
import Foundation

/// A libzmq context. Thread-safe (libzmq guarantees it), so it may be shared; the sockets it
/// makes may not: each belongs to the thread that created it.
public final class ZMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    /// The process-wide context most code uses.
    public static let shared = ZMQContext()

    public init(ioThreads: Int32 = 1) {
        guard let ctx = zmq_ctx_new() else { fatalError("zmq_ctx_new failed: \(ZMQError.last)") }
        zmq_ctx_set(ctx, ZMQ_IO_THREADS, ioThreads)
        zmq_ctx_set(ctx, ZMQ_BLOCKY, 0)
        handle = ctx
    }

    deinit { zmq_ctx_term(handle) }

    /// Makes a socket owned by the calling thread.
    public func socket(_ type: ZMQSocketType) throws(ZMQError) -> ZMQSocket {
        guard let s = zmq_socket(handle, type.rawValue) else { throw ZMQError.last }
        let socket = ZMQSocket(handle: s)
        try socket.setOption(ZMQ_LINGER, 0)
        return socket
    }
}

/// The socket types CareMesh uses.
public enum ZMQSocketType: Int32, Sendable {
    case router = 6   // ZMQ_ROUTER
    case dealer = 5   // ZMQ_DEALER
    case pair = 0     // ZMQ_PAIR
    case rep = 4      // ZMQ_REP
}

/// A libzmq error: errno and libzmq's text for it.
public struct ZMQError: Error, CustomStringConvertible, Sendable, Equatable {
    public let errno: Int32
    public var description: String { String(cString: zmq_strerror(errno)) }

    public init(errno: Int32) { self.errno = errno }
    static var last: ZMQError { ZMQError(errno: zmq_errno()) }

    public static let again = ZMQError(errno: EAGAIN)
    public static let hostUnreachable = ZMQError(errno: EHOSTUNREACH)
    public static let interrupted = ZMQError(errno: EINTR)
}

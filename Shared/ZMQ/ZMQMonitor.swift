import CZMQ
import Foundation

/// Connection events read from a socket monitor (zmq_socket_monitor).
public enum ZMQMonitorEvent: Sendable, Equatable {
    case connected
    case disconnected
    /// The security handshake failed: the server's ZAP handler refused (its status code, e.g.
    /// 400), or the peer spoke another mechanism or a bad key (0: protocol, no detail).
    case handshakeRefused(status: UInt32)
    case handshakeSucceeded
    case other(UInt16)

    /// Every event decoded here.
    public static let mask: Int32 = connectionMask | ZMQ_EVENT_HANDSHAKE_SUCCEEDED
        | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL
    /// A security handshake that failed before any ZAP handler was asked: another mechanism
    /// (a plain peer on a CurveZMQ socket), or a client holding a wrong server key.
    public static let handshakeFailureMask: Int32 = ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL
    /// Connected and disconnected only.
    public static let connectionMask: Int32 = ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED

    /// Decodes a monitor message (frame 1: 16-bit event, 32-bit value; frame 2: endpoint).
    public init?(frames: [Data]) {
        guard let first = frames.first, first.count >= 6 else { return nil }
        let b = first.startIndex
        let event = UInt16(first[b]) | UInt16(first[b + 1]) << 8
        let value = (2..<6).reduce(UInt32(0)) { $0 | UInt32(first[b + $1]) << (8 * UInt32($1 - 2)) }
        switch Int32(event) {
        case ZMQ_EVENT_CONNECTED: self = .connected
        case ZMQ_EVENT_DISCONNECTED: self = .disconnected
        case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: self = .handshakeSucceeded
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: self = .handshakeRefused(status: value)
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL, ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL: self = .handshakeRefused(status: 0)
        default: self = .other(event)
        }
    }
}

/// The connection events of one socket, read on the socket's own thread.
///
/// libzmq sends monitor events with a *blocking* send, often from its I/O thread (a peer
/// that connects or goes away). If the reading PAIR is gone while the monitor still runs,
/// the next event blocks that thread for good, and with it every socket of the context
/// (libzmq issue #3575). So `close()` stops the monitor before it closes the PAIR, and the
/// monitored socket must not be closed before `close()` (its own close can emit events too).
public final class ZMQEventMonitor {
    /// The PAIR the events arrive on (poll it like any socket).
    public let events: ZMQSocket
    private let socket: ZMQSocket
    private var closed = false

    /// Monitors `socket` for `mask` (e.g. `ZMQMonitorEvent.mask`) on a fresh inproc endpoint.
    public init(_ socket: ZMQSocket, context: ZMQContext, mask: Int32 = ZMQMonitorEvent.mask) throws(ZMQError) {
        let endpoint = "inproc://caremesh-monitor-\(UInt64.random(in: 0...UInt64.max))"
        try socket.monitor(endpoint, events: mask)
        do {
            let pair = try context.socket(.pair)
            try pair.connect(endpoint)
            events = pair
        } catch {
            socket.stopMonitor()
            throw error
        }
        self.socket = socket
    }

    /// The next event, or nil if none is waiting.
    public func next() -> ZMQMonitorEvent? {
        while let frames = try? events.receive() {
            if let event = ZMQMonitorEvent(frames: frames) { return event }
        }
        return nil
    }

    /// Stops the monitor, then closes the PAIR (never the other way round).
    public func close() {
        guard !closed else { return }
        closed = true
        socket.stopMonitor()
        events.close()
    }

    deinit { close() }
}

/// Socket options by name, so callers need not import CZMQ.
public enum ZMQOption {
    public static let linger = ZMQ_LINGER
    public static let routerMandatory = ZMQ_ROUTER_MANDATORY
    public static let routerHandover = ZMQ_ROUTER_HANDOVER
    public static let maxMessageSize = ZMQ_MAXMSGSIZE
    public static let sendHighWaterMark = ZMQ_SNDHWM
    public static let receiveHighWaterMark = ZMQ_RCVHWM
    public static let heartbeatInterval = ZMQ_HEARTBEAT_IVL
    public static let heartbeatTimeout = ZMQ_HEARTBEAT_TIMEOUT
    public static let heartbeatTTL = ZMQ_HEARTBEAT_TTL
    public static let reconnectInterval = ZMQ_RECONNECT_IVL
    public static let reconnectIntervalMax = ZMQ_RECONNECT_IVL_MAX
    public static let immediate = ZMQ_IMMEDIATE
    public static let identity = ZMQ_ROUTING_ID
}

import CZMQ
import Foundation

/// Connection events read from a socket monitor (zmq_socket_monitor).
public enum ZMQMonitorEvent: Sendable, Equatable {
    case connected
    case disconnected
    case other(UInt16)

    public static let mask: Int32 = ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED

    /// Decodes a monitor message (frame 1: 16-bit event, 32-bit value; frame 2: endpoint).
    public init?(frames: [Data]) {
        guard let first = frames.first, first.count >= 6 else { return nil }
        let event = UInt16(first[first.startIndex]) | UInt16(first[first.startIndex + 1]) << 8
        switch Int32(event) {
        case ZMQ_EVENT_CONNECTED: self = .connected
        case ZMQ_EVENT_DISCONNECTED: self = .disconnected
        default: self = .other(event)
        }
    }
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

import CZMQ
import Foundation

/// A ZeroMQ socket. Not thread-safe: it belongs to the thread that created it, for its whole
/// life (create it on that thread, close it there). Hence not Sendable.
public final class ZMQSocket {
    let handle: UnsafeMutableRawPointer
    private var closed = false

    init(handle: UnsafeMutableRawPointer) { self.handle = handle }

    deinit { close() }

    /// Closes the socket; pending outgoing messages wait at most `ZMQ_LINGER`.
    public func close() {
        guard !closed else { return }
        closed = true
        zmq_close(handle)
    }

    public func setOption(_ option: Int32, _ value: Int32) throws(ZMQError) {
        var v = value
        guard zmq_setsockopt(handle, option, &v, MemoryLayout<Int32>.size) == 0 else { throw ZMQError.last }
    }

    public func setOption(_ option: Int32, int64 value: Int64) throws(ZMQError) {
        var v = value
        guard zmq_setsockopt(handle, option, &v, MemoryLayout<Int64>.size) == 0 else { throw ZMQError.last }
    }

    public func setOption(_ option: Int32, bytes: [UInt8]) throws(ZMQError) {
        let rc = bytes.withUnsafeBytes { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) }
        guard rc == 0 else { throw ZMQError.last }
    }

    public func bind(_ endpoint: String) throws(ZMQError) {
        guard zmq_bind(handle, endpoint) == 0 else { throw ZMQError.last }
    }

    public func connect(_ endpoint: String) throws(ZMQError) {
        guard zmq_connect(handle, endpoint) == 0 else { throw ZMQError.last }
    }

    /// The endpoint actually bound (e.g. the port chosen for "tcp://127.0.0.1:*").
    public var lastEndpoint: String {
        var buf = [CChar](repeating: 0, count: 256)
        var len = buf.count
        zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buf, &len)
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Starts a monitor of this socket's connection events on an inproc PAIR endpoint (use
    /// `ZMQEventMonitor`, which also stops it in the one safe order).
    func monitor(_ endpoint: String, events: Int32) throws(ZMQError) {
        guard zmq_socket_monitor(handle, endpoint, events) == 0 else { throw ZMQError.last }
    }

    /// Stops the monitor: libzmq sends no more events, and closes its end of the PAIR.
    func stopMonitor() {
        zmq_socket_monitor(handle, nil, 0)
    }

    /// Sends a multipart message. Throws `ZMQError.again` when it would block (`dontWait`),
    /// `ZMQError.hostUnreachable` for an unknown peer on a ROUTER with ROUTER_MANDATORY.
    public func send(_ frames: [Data], dontWait: Bool = true) throws(ZMQError) {
        let base: Int32 = dontWait ? ZMQ_DONTWAIT : 0
        let last = frames.count - 1
        for (i, frame) in frames.enumerated() {
            let flags = i < last ? base | ZMQ_SNDMORE : base
            let rc = frame.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags) }
            if rc < 0 {
                let error = ZMQError.last
                // A failure after the first frame would leave a half message: libzmq only
                // fails the first frame of a message for these errors, so this is the first.
                throw error
            }
        }
    }

    /// Sends one frame of a multipart message: `more` on every frame but the last. libzmq
    /// refuses (`again`, `hostUnreachable`) only a message's first frame; once that is taken,
    /// the rest are too, so a caller that stops at a failed first frame leaves no half message.
    @inline(__always)
    public func sendFrame(_ frame: Data, more: Bool, dontWait: Bool = true) throws(ZMQError) {
        let flags = (dontWait ? ZMQ_DONTWAIT : 0) | (more ? ZMQ_SNDMORE : 0)
        let rc = frame.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags) }
        if rc < 0 { throw ZMQError.last }
    }

    /// Sends one frame holding `string`'s UTF-8, straight from its storage.
    public func sendFrame(utf8 string: String, more: Bool, dontWait: Bool = true) throws(ZMQError) {
        let flags = (dontWait ? ZMQ_DONTWAIT : 0) | (more ? ZMQ_SNDMORE : 0)
        var s = string
        let rc = s.withUTF8 { zmq_send(handle, $0.baseAddress, $0.count, flags) }
        if rc < 0 { throw ZMQError.last }
    }

    /// Receives one whole multipart message, or nil if none is waiting (`dontWait`).
    public func receive(dontWait: Bool = true) throws(ZMQError) -> [Data]? {
        try receive(dontWait: dontWait) { _, _ in }
    }

    /// Receives one whole multipart message, and the connection's properties (`Peer-Address`,
    /// and the `User-Id` its ZAP handler gave it) when `wanted` says so of its frames (the
    /// router asks only for a worker's READY, so other messages cost no lookup).
    public func receive(dontWait: Bool = true, propertiesIf wanted: ([Data]) -> Bool)
        throws(ZMQError) -> (frames: [Data], properties: ZMQPeerProperties?)? {
        var properties: ZMQPeerProperties?
        let frames = try receive(dontWait: dontWait) { frames, msg in
            guard wanted(frames) else { return }
            properties = ZMQPeerProperties(userID: Self.property(msg, "User-Id"), address: Self.property(msg, "Peer-Address"))
        }
        return frames.map { ($0, properties) }
    }

    private static func property(_ msg: UnsafeMutablePointer<zmq_msg_t>, _ name: String) -> String? {
        guard let value = zmq_msg_gets(msg, name) else { return nil }
        let s = String(cString: value)
        return s.isEmpty ? nil : s
    }

    /// The receive loop; `last` sees the frames and the last frame's message before it is closed.
    @inline(__always)
    private func receive(dontWait: Bool, last: ([Data], UnsafeMutablePointer<zmq_msg_t>) -> Void) throws(ZMQError) -> [Data]? {
        var frames: [Data] = []
        var msg = zmq_msg_t()
        while true {
            zmq_msg_init(&msg)
            let rc = zmq_msg_recv(&msg, handle, dontWait ? ZMQ_DONTWAIT : 0)
            if rc < 0 {
                let error = ZMQError.last
                zmq_msg_close(&msg)
                if error.errno == EAGAIN && frames.isEmpty { return nil }
                if error.errno == EINTR && frames.isEmpty { return nil }
                throw error
            }
            let size = zmq_msg_size(&msg)
            if frames.isEmpty { frames.reserveCapacity(8) }  // one allocation for most messages
            if size == 0 {
                frames.append(Data())
            } else {
                frames.append(Data(bytes: zmq_msg_data(&msg), count: size))
            }
            let more = zmq_msg_more(&msg) != 0
            if !more { last(frames, &msg) }
            zmq_msg_close(&msg)
            if !more { return frames }
        }
    }
}

/// What libzmq knows of the peer a message came from.
public struct ZMQPeerProperties: Sendable, Equatable {
    /// The user id the ZAP handler answered for the connection (nil without one).
    public var userID: String?
    /// The peer's IP address (TCP).
    public var address: String?

    public init(userID: String?, address: String?) {
        self.userID = userID
        self.address = address
    }
}

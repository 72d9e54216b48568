import Foundation

/// The Majordomo Protocol, MDP/0.2 (ZeroMQ RFC 18), in the two dialects of WIRE.md: every
/// frame header, command byte and default in one place, and the codec between frames and
/// typed messages. Pure functions, no sockets.
public enum MDP {
    public static let clientHeader = Data("MDPC02".utf8)
    public static let workerHeader = Data("MDPW02".utf8)

    /// Heartbeat interval (WIRE.md default 1 s) and how many silent intervals mean dead (3).
    public static let defaultHeartbeatIntervalMs = 1_000
    public static let defaultLiveness = 3
    /// Default client and worker endpoints of the router.
    public static let defaultClientEndpoint = "tcp://127.0.0.1:5555"
    public static let defaultWorkerEndpoint = "tcp://127.0.0.1:5556"
    /// The default limit on one message's total size (4 MiB).
    public static let defaultMaxMessageSize = 4 * 1024 * 1024

    /// The two framings of WIRE.md; the router answers each peer in the one it used.
    public enum Dialect: Sendable, Hashable {
        /// 18/MDP as written: no empty frame, client commands 0x01–0x03.
        case strict
        /// A leading empty frame and client commands 0x02–0x04 (majortomo and its broker).
        case delimited
    }

    /// Worker commands (the same bytes in both dialects).
    public enum WorkerCommand: UInt8, Sendable {
        case ready = 0x01, request = 0x02, partial = 0x03, final = 0x04, heartbeat = 0x05, disconnect = 0x06
    }

    /// A client command's byte in each dialect.
    public enum ClientCommand: Sendable {
        case request, partial, final

        func byte(_ dialect: Dialect) -> UInt8 {
            switch (self, dialect) {
            case (.request, .strict): 0x01
            case (.partial, .strict): 0x02
            case (.final, .strict): 0x03
            case (.request, .delimited): 0x02
            case (.partial, .delimited): 0x03
            case (.final, .delimited): 0x04
            }
        }
    }

    // MARK: - What the broker receives (after the ROUTER's identity frame)

    /// A message a broker received from a client or a worker.
    public enum BrokerInbound: Sendable, Equatable {
        case clientRequest(service: String, body: [Data])
        case workerReady(service: String, extra: [Data])
        case workerReply(final: Bool, client: Data, body: [Data])
        case workerHeartbeat
        case workerDisconnect
    }

    /// Whether frames a broker received (identity first) look like a worker's READY: a cheap
    /// test made before the message is decoded, so the router reads a connection's properties
    /// only for the message that registers a worker.
    public static func looksLikeWorkerReady(_ frames: [Data]) -> Bool {
        var i = 1
        if frames.count > i, frames[i].isEmpty { i += 1 }
        return frames.count > i + 1 && frames[i + 1].singleByte == WorkerCommand.ready.rawValue && frames[i] == workerHeader
    }

    /// Decodes frames a broker received (identity already removed); nil means malformed.
    public static func decodeAtBroker(_ frames: ArraySlice<Data>) -> (Dialect, BrokerInbound)? {
        var f = frames
        let dialect: Dialect
        if let first = f.first, first.isEmpty { dialect = .delimited; f = f.dropFirst() } else { dialect = .strict }
        guard f.count >= 2, let cmd = f[f.startIndex + 1].singleByte else { return nil }
        let header = f[f.startIndex]
        let rest = f.dropFirst(2)
        if header == clientHeader {
            guard cmd == ClientCommand.request.byte(dialect), rest.count >= 2,
                  let service = String(data: rest[rest.startIndex], encoding: .utf8), !service.isEmpty
            else { return nil }
            return (dialect, .clientRequest(service: service, body: Array(rest.dropFirst())))
        }
        guard header == workerHeader, let command = WorkerCommand(rawValue: cmd) else { return nil }
        switch command {
        case .ready:
            guard let s = rest.first, let service = String(data: s, encoding: .utf8), !service.isEmpty else { return nil }
            return (dialect, .workerReady(service: service, extra: Array(rest.dropFirst())))
        case .partial, .final:
            // client "" body…
            guard rest.count >= 2, rest[rest.startIndex + 1].isEmpty else { return nil }
            return (dialect, .workerReply(final: command == .final, client: rest[rest.startIndex],
                                          body: Array(rest.dropFirst(2))))
        case .heartbeat: return (dialect, .workerHeartbeat)
        case .disconnect: return (dialect, .workerDisconnect)
        case .request: return nil
        }
    }

    // MARK: - What a worker receives

    public enum WorkerInbound: Sendable, Equatable {
        case request(client: Data, body: [Data])
        case heartbeat
        case disconnect
    }

    /// Decodes frames a worker received from its broker (either dialect); nil means malformed.
    public static func decodeAtWorker(_ frames: [Data]) -> WorkerInbound? {
        var f = frames[...]
        if let first = f.first, first.isEmpty { f = f.dropFirst() }
        guard f.count >= 2, f[f.startIndex] == workerHeader, let cmd = f[f.startIndex + 1].singleByte,
              let command = WorkerCommand(rawValue: cmd) else { return nil }
        let rest = f.dropFirst(2)
        switch command {
        case .request:
            guard rest.count >= 2, rest[rest.startIndex + 1].isEmpty else { return nil }
            return .request(client: rest[rest.startIndex], body: Array(rest.dropFirst(2)))
        case .heartbeat: return .heartbeat
        case .disconnect: return .disconnect
        default: return nil
        }
    }

    // MARK: - What a client receives

    public struct ClientInbound: Sendable, Equatable {
        public var final: Bool
        public var body: [Data]

        public init(final: Bool, body: [Data]) {
            self.final = final
            self.body = body
        }
    }

    /// Decodes a reply a client received (either dialect); nil means malformed.
    public static func decodeAtClient(_ frames: [Data]) -> ClientInbound? {
        var f = frames[...]
        let dialect: Dialect
        if let first = f.first, first.isEmpty { dialect = .delimited; f = f.dropFirst() } else { dialect = .strict }
        guard f.count >= 2, f[f.startIndex] == clientHeader, let cmd = f[f.startIndex + 1].singleByte else { return nil }
        var rest = f.dropFirst(2)
        let final: Bool
        switch cmd {
        case ClientCommand.final.byte(dialect): final = true
        case ClientCommand.partial.byte(dialect): final = false
        default: return nil
        }
        if dialect == .strict { // strict replies carry the service name first
            guard !rest.isEmpty else { return nil }
            rest = rest.dropFirst()
        }
        return ClientInbound(final: final, body: Array(rest))
    }

    // MARK: - Encoders (without the ROUTER identity frame)

    public static func clientRequest(_ dialect: Dialect, service: String, body: [Data]) -> [Data] {
        var frames: [Data] = []
        frames.reserveCapacity(4 + body.count)
        emitClientRequest(dialect, service: service, body: body) { frame, _ in frames.append(frame.data) }
        return frames
    }

    public static func clientReply(_ dialect: Dialect, final: Bool, service: String, body: [Data]) -> [Data] {
        var frames: [Data] = []
        frames.reserveCapacity(4 + body.count)
        emitClientReply(dialect, final: final, service: service, body: body) { frame, _ in frames.append(frame.data) }
        return frames
    }

    public static func worker(_ dialect: Dialect, _ command: WorkerCommand, _ rest: [Data] = []) -> [Data] {
        var frames: [Data] = []
        frames.reserveCapacity(3 + rest.count)
        emitWorker(dialect, command, rest) { frame, _ in frames.append(frame) }
        return frames
    }

    /// A frame given to an `emit` closure: bytes, or a string's UTF-8 (a socket sends it from
    /// the string's storage, with no `Data` built).
    public enum Frame {
        case data(Data)
        case utf8(String)

        /// The frame's bytes as a `Data`.
        public var data: Data {
            switch self {
            case .data(let d): d
            case .utf8(let s): Data(s.utf8)
            }
        }
    }

    /// The frames of `clientRequest`, each given to `emit` with whether more follow.
    public static func emitClientRequest(_ dialect: Dialect, service: String, body: [Data],
                                         _ emit: (Frame, _ more: Bool) throws -> Void) rethrows {
        if dialect == .delimited { try emit(.data(Data()), true) }
        try emit(.data(clientHeader), true)
        try emit(.data(Data([ClientCommand.request.byte(dialect)])), true)
        try emit(.utf8(service), !body.isEmpty)
        for (i, frame) in body.enumerated() { try emit(.data(frame), i < body.count - 1) }
    }

    /// The frames of `clientReply`, each given to `emit` with whether more follow, so a socket
    /// sends them as they come, with no array built.
    public static func emitClientReply(_ dialect: Dialect, final: Bool, service: String, body: [Data],
                                       _ emit: (Frame, _ more: Bool) throws -> Void) rethrows {
        if dialect == .delimited { try emit(.data(Data()), true) }
        try emit(.data(clientHeader), true)
        try emit(.data(Data([(final ? ClientCommand.final : .partial).byte(dialect)])), dialect == .strict || !body.isEmpty)
        if dialect == .strict { try emit(.utf8(service), !body.isEmpty) }
        for (i, frame) in body.enumerated() { try emit(.data(frame), i < body.count - 1) }
    }

    /// The frames of `worker`, each given to `emit` with whether more follow.
    public static func emitWorker(_ dialect: Dialect, _ command: WorkerCommand, _ rest: [Data],
                                  _ emit: (Data, _ more: Bool) throws -> Void) rethrows {
        if dialect == .delimited { try emit(Data(), true) }
        try emit(workerHeader, true)
        try emit(Data([command.rawValue]), !rest.isEmpty)
        for (i, frame) in rest.enumerated() { try emit(frame, i < rest.count - 1) }
    }
}

extension Data {
    @inline(__always) var singleByte: UInt8? { count == 1 ? self[startIndex] : nil }
}

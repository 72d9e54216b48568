import Foundation
import Histogram
import NIOCore
import NIOPosix
import Synchronization
import ZMQ

/// A closed-loop HTTP/1.1 load, as lean as a load generator can be (wrk's design): requests
/// are whole byte strings made before the clock starts, and `concurrency` keep-alive
/// connections each send one, read its response, and send the next, all on NIO's event loops
/// with no task per request. On a small machine the load generator shares the cores with the
/// stack, so every microsecond it spends is taken from what is measured.
///
/// Latency, counts and errors (a status other than 200, a broken connection) as `Load`'s
/// `Result`, over the same warm-up and measured window.
struct HTTPLoad {
    var host: String
    var port: Int
    var concurrency: Int
    var warmup: Double
    var duration: Double
    var processes: StackProcesses?

    /// Requests, handed out in order (and again from the start if the run outlasts them).
    final class Requests: Sendable {
        let all: [ByteBuffer]
        private let next = Atomic<Int>(0)

        init(_ all: [ByteBuffer]) {
            precondition(!all.isEmpty)
            self.all = all
        }

        func take() -> ByteBuffer { all[(next.add(1, ordering: .relaxed).oldValue) % all.count] }
    }

    /// One connection's loop: a request out, its response in, the next out.
    final class Connection: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        // Touched only on the channel's event loop, then read once the channel has closed.
        var histogram = Load.histogram()
        var errors = 0
        private var buffer = ByteBuffer()
        private var started: UInt64 = 0
        private let requests: Requests
        private let measureFrom: UInt64, end: UInt64

        init(requests: Requests, measureFrom: UInt64, end: UInt64) {
            self.requests = requests
            self.measureFrom = measureFrom
            self.end = end
        }

        func channelActive(context: ChannelHandlerContext) { send(context) }

        private func send(_ context: ChannelHandlerContext) {
            started = monotonicNanos()
            if started >= end {
                context.close(promise: nil)
                return
            }
            context.writeAndFlush(wrapOutboundOut(requests.take()), promise: nil)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            buffer.writeBuffer(&bytes)
            while let status = HTTPLoad.response(in: &buffer) {
                let now = monotonicNanos()
                if status != 200 { errors += 1 } else if started >= measureFrom && now <= end { _ = histogram.record(now - started) }
                send(context)
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            errors += 1
            context.close(promise: nil)
        }
    }

    /// Takes one whole response off the front of `buffer` and returns its status, or nil if
    /// it has not all arrived. Responses carry Content-Length (the edge sends no chunked ones).
    static func response(in buffer: inout ByteBuffer) -> Int? {
        let view = buffer.readableBytesView
        guard let headEnd = view.firstRange(of: "\r\n\r\n".utf8) else { return nil }
        let head = String(decoding: view[view.startIndex..<headEnd.lowerBound], as: UTF8.self)
        let lines = head.split(separator: "\r\n")
        guard let statusLine = lines.first, statusLine.split(separator: " ").count >= 2,
              let status = Int(statusLine.split(separator: " ")[1]) else { return -1 }
        var length = 0
        for line in lines.dropFirst() {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "content-length" {
                length = Int(parts[1].trimmingCharacters(in: .whitespaces)) ?? 0
            }
        }
        let total = headEnd.upperBound - view.startIndex + length
        guard buffer.readableBytes >= total else { return nil }
        buffer.moveReaderIndex(forwardBy: total)
        buffer.discardReadBytes()
        return status
    }

    func run(_ requests: [ByteBuffer]) async throws -> Load.Result {
        let source = Requests(requests)
        let measureFrom = monotonicNanos() + UInt64(warmup * 1e9)
        let end = measureFrom + UInt64(duration * 1e9)
        let cpu = Load.cpu(of: processes, from: measureFrom, to: end)
        let group = MultiThreadedEventLoopGroup.singleton
        var handlers: [Connection] = []
        var channels: [any Channel] = []
        for _ in 0..<concurrency {
            let handler = Connection(requests: source, measureFrom: measureFrom, end: end)
            let channel = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) } }
                .connect(host: host, port: port).get()
            handlers.append(handler)
            channels.append(channel)
        }
        for channel in channels { try? await channel.closeFuture.get() }
        var all = Load.histogram()
        var errors = 0
        for (handler, channel) in zip(handlers, channels) {
            // Read on the channel's loop, where it was written.
            let (h, e) = try await channel.eventLoop.submit { (handler.histogram, handler.errors) }.get()
            all.add(h)
            errors += e
        }
        return Load.Result(histogram: all, errors: errors, duration: duration, cpu: await cpu.value)
    }
}

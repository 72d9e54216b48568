import CareMeshRPC
import CareMeshTesting
import Foundation
import Testing
import ZMQ

/// libzmq sends monitor events with a blocking send, from its I/O thread. An event sent while
/// the reading PAIR is being closed blocks that thread for good, and every socket of the
/// context goes deaf (libzmq #3575: it once silenced a whole test process when a router
/// stopped just after its key-fetching client closed). `ZMQEventMonitor.close()` stops the
/// monitor before it closes the PAIR, so no event is sent after it.
@Suite struct ZMQMonitorTests {
    /// Whether `context` still carries a message over loopback TCP within 2 s.
    static func roundTrip(_ context: ZMQContext) -> Bool {
        guard let router = try? context.socket(.router), let dealer = try? context.socket(.dealer) else { return false }
        defer { dealer.close(); router.close() }
        guard (try? router.bind("tcp://127.0.0.1:*")) != nil, (try? dealer.connect(router.lastEndpoint)) != nil,
              (try? dealer.send([Data("ping".utf8)], dontWait: false)) != nil else { return false }
        var poller = ZMQPoller()
        poller.add(router)
        let until = monotonicNanos() + 2_000_000_000
        while monotonicNanos() < until {
            if let frames = try? router.receive(), frames.last == Data("ping".utf8) { return true }
            _ = poller.pollMask(timeoutMs: 100)
        }
        return false
    }

    /// Connects a monitored DEALER to a ROUTER, closes the monitor, and `delayMs` later stops
    /// the ROUTER: the DEALER's DISCONNECTED event comes after the PAIR's close went through
    /// libzmq's reaper. True once it had connected.
    static func closeThenPeerLeaves(_ context: ZMQContext, delayMs: Int) -> Bool {
        guard let peer = try? context.socket(.router), (try? peer.bind("tcp://127.0.0.1:*")) != nil,
              let socket = try? context.socket(.dealer),
              let monitor = try? ZMQEventMonitor(socket, context: context),
              (try? socket.connect(peer.lastEndpoint)) != nil else { return false }
        var poller = ZMQPoller()
        poller.add(monitor.events)
        var connected = false
        let until = monotonicNanos() + 2_000_000_000
        while !connected && monotonicNanos() < until {
            _ = poller.pollMask(timeoutMs: 100)
            while let event = monitor.next() { if event == .connected { connected = true } }
        }
        monitor.close()
        if delayMs > 0 { Thread.sleep(forTimeInterval: Double(delayMs) / 1_000) }
        peer.close()  // the DEALER sees DISCONNECTED on libzmq's I/O thread
        Thread.sleep(forTimeInterval: 0.005)
        socket.close()
        return connected
    }

    @Test("a monitor closed, then its socket's peer goes away (30 times): the context still carries messages")
    func closeRacesDisconnect() async throws {
        let outcome = await TestStack.onThread { () -> (connected: Int, alive: Bool) in
            let context = ZMQContext()  // its own: a blocked one must not silence other suites
            var connected = 0
            for i in 0..<30 {
                guard Self.closeThenPeerLeaves(context, delayMs: i % 6 * 2) else { break }  // deaf: stop here
                connected += 1
            }
            let alive = Self.roundTrip(context)
            // A context whose I/O thread is blocked would hang zmq_ctx_term in deinit: leak it.
            if !alive { _ = Unmanaged.passRetained(context) }
            return (connected, alive)
        }
        #expect(outcome.connected == 30)
        #expect(outcome.alive, "libzmq's I/O thread is blocked sending a monitor event")
    }
}

import CareMeshRPC
import Foundation
import Testing

/// A worker's connection logic, without sockets.
@Suite struct WorkerStateMachineTests {
    let ms: UInt64 = 1_000_000
    let s: UInt64 = 1_000_000_000
    let request = MDP.WorkerInbound.request(client: Data([1]), body: [])

    func machine(capacity: Int = 2) -> WorkerStateMachine {
        var c = WorkerStateMachine.Configuration()
        c.heartbeatIntervalNs = 100 * 1_000_000
        c.liveness = 3
        c.capacity = capacity
        c.drainAckTimeoutNs = 500 * 1_000_000
        return WorkerStateMachine(configuration: c)
    }

    @Test("opens at once, heartbeats when idle, reconnects after 3 silent intervals with 1 s doubling to 32 s backoff")
    func livenessAndBackoff() {
        var m = machine()
        #expect(m.tick(now: 0) == [.openSocket])
        m.socketOpened(now: 0)
        #expect(m.tick(now: 50 * ms) == [])
        #expect(m.tick(now: 100 * ms) == [.send(.heartbeat)])
        #expect(m.tick(now: 150 * ms) == [])
        #expect(m.tick(now: 301 * ms) == [.closeSocket])
        #expect(m.tick(now: 301 * ms + s - 1) == [])
        #expect(m.tick(now: 301 * ms + s) == [.openSocket])
        #expect((0..<8).map { m.backoff($0) / s } == [1, 2, 4, 8, 16, 32, 32, 32])
        // Hearing from the broker resets the backoff.
        m.socketOpened(now: 2 * s)
        _ = m.received(.heartbeat, now: 2 * s + 10 * ms)
        #expect(m.attempt == 0)
    }

    @Test("takes requests up to capacity, then refuses; a reply frees a slot")
    func capacity() {
        var m = machine(capacity: 2)
        m.socketOpened(now: 0)
        #expect(m.received(request, now: 0).0 == .accept)
        #expect(m.received(request, now: 0).0 == .accept)
        #expect(m.received(request, now: 0).0 == .rejectBusy)
        let freed = m.replied(generation: m.generation, now: 1)
        #expect(freed)
        #expect(m.received(request, now: 2).0 == .accept)
    }

    @Test("a DISCONNECT from the broker means register again at once; old replies are dropped")
    func brokerDisconnect() {
        var m = machine()
        m.socketOpened(now: 0)
        _ = m.received(request, now: 0)
        let old = m.generation
        #expect(m.received(.disconnect, now: 10 * ms).1 == [.closeSocket])
        #expect(m.tick(now: 10 * ms) == [.openSocket])
        m.socketOpened(now: 10 * ms)
        let stale = m.replied(generation: old, now: 11 * ms)
        #expect(stale == false)
        #expect(m.inFlight == 0)
    }

    @Test("drain: DISCONNECT goes out, work in transit is still taken, the echo ends intake")
    func drainWithAck() {
        var m = machine()
        m.socketOpened(now: 0)
        #expect(m.beginDrain(now: 0) == [.send(.disconnect)])
        #expect(m.received(request, now: 1).0 == .accept)
        #expect(m.received(.disconnect, now: 2).1 == [.finishIntake])
        #expect(m.intakeFinished)
        let sent = m.replied(generation: m.generation, now: 3)
        #expect(sent)
    }

    @Test("drain with a broker that does not echo: intake ends after the ack timeout")
    func drainWithoutAck() {
        var m = machine()
        m.socketOpened(now: 0)
        _ = m.beginDrain(now: 0)
        #expect(!m.tick(now: 99 * ms).contains(.finishIntake))
        #expect(m.tick(now: 500 * ms).contains(.finishIntake))
    }
}

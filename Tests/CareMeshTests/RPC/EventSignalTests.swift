import CareMeshRPC
import Foundation
import Synchronization
import Testing
import ZMQ

/// `EventSignal` skips the eventfd write while a signal is pending. A wake lost that way would
/// leave an I/O thread asleep with work queued, so producers hammer it from several threads
/// while a consumer polls it the way the I/O threads do.
@Suite struct EventSignalTests {
    final class Shared: Sendable {
        let signal = EventSignal()
        let queue = Mutex<Int>(0)
        let stalls = Mutex(0)
        let seen = Mutex(0)
    }

    @Test("coalesced signals never lose a wake: every item is seen without waiting out a poll")
    func noLostWake() async throws {
        let shared = Shared()
        let producers = 3, perProducer = 50_000, total = producers * perProducer
        let consumer = IOThread(name: "consumer") {
            var poller = ZMQPoller()
            poller.add(fd: shared.signal.fd)
            var taken = 0
            while taken < total {
                // 2 s is far beyond any scheduling delay: a poll that times out with items
                // queued means a signal was swallowed (and, `pending` stuck, every later one).
                let mask = poller.pollMask(timeoutMs: 2_000)
                if mask & 1 != 0 { shared.signal.drain() }
                let batch = shared.queue.withLock { q in defer { q = 0 }; return q }
                taken += batch
                if mask == 0 && batch > 0 { shared.stalls.withLock { $0 += 1 }; break }
            }
            shared.seen.withLock { $0 = taken }
        }
        let workers = (0..<producers).map { _ in
            IOThread(name: "producer") {
                for _ in 0..<perProducer {
                    shared.queue.withLock { $0 += 1 }
                    shared.signal.signal()
                }
            }
        }
        for w in workers { await w.joined() }
        await consumer.joined()
        #expect(shared.stalls.withLock { $0 } == 0)
        #expect(shared.seen.withLock { $0 } == total)
    }
}

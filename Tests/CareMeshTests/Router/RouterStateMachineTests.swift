import CareMeshContracts
import CareMeshRPC
@testable import CareMeshRouter
import Foundation
import Testing

/// The router's dispatch and liveness logic, without sockets.
@Suite struct RouterStateMachineTests {
    typealias SM = RouterStateMachine
    let ms: UInt64 = 1_000_000

    let client = PeerAddress(socket: 0, identity: Data([1]))
    let client2 = PeerAddress(socket: 0, identity: Data([2]))
    let w1 = PeerAddress(socket: 1, identity: Data([0xA1]))
    let w2 = PeerAddress(socket: 1, identity: Data([0xA2]))

    func config(queue: Int = 10) -> SM.Configuration {
        var c = SM.Configuration()
        c.heartbeatIntervalNs = 100 * 1_000_000
        c.liveness = 3
        c.maxQueuePerService = queue
        c.maxMessageSize = 1_000
        return c
    }

    func header(_ id: UInt64, timeoutMs: UInt32 = 1_000, caller: String? = nil) -> Data {
        var h = RequestHeader()
        h.method = "/caremesh.bench.v1.Bench/Echo"
        h.requestID = id
        h.timeoutMs = timeoutMs
        h.metadata = ["traceparent": "t\(id)"]
        if let caller { h.caller.subject = caller; h.caller.roles = ["admin"] }
        return h.wireBytes()
    }

    func ready(_ sm: inout SM, _ peer: PeerAddress, capacity: UInt32?, service: String = "echo",
               dialect: MDP.Dialect = .delimited, now: UInt64 = 0) -> [SM.Action] {
        var extra: [Data] = []
        if let capacity { var i = WorkerInfo(); i.capacity = capacity; i.instanceID = "\(peer)"; extra = [i.wireBytes()] }
        var actions: [SM.Action] = []
        sm.handle(.fromWorker(peer, dialect, .workerReady(service: service, extra: extra)), now: now, into: &actions)
        return actions
    }

    func request(_ sm: inout SM, from peer: PeerAddress? = nil, id: UInt64, timeoutMs: UInt32 = 1_000,
                 service: String = "echo", dialect: MDP.Dialect = .delimited, now: UInt64 = 0, caller: String? = nil) -> [SM.Action] {
        var actions: [SM.Action] = []
        sm.handle(.fromClient(peer ?? client, dialect, service: service,
                              body: [header(id, timeoutMs: timeoutMs, caller: caller), Data("m\(id)".utf8)]),
                  now: now, into: &actions)
        return actions
    }

    func reply(_ sm: inout SM, from worker: PeerAddress, token: Data, final: Bool = true, now: UInt64 = 0) -> [SM.Action] {
        var actions: [SM.Action] = []
        sm.handle(.fromWorker(worker, .delimited, .workerReply(final: final, client: token,
                                                               body: [ResponseHeader(requestID: 9).wireBytes(), Data("r".utf8)])),
                  now: now, into: &actions)
        return actions
    }

    /// The (worker, token, header) of each REQUEST sent to a worker.
    func dispatched(_ actions: [SM.Action]) -> [(PeerAddress, Data, RequestHeader)] {
        actions.compactMap {
            guard case .toWorker(let p, _, .request, let frames) = $0 else { return nil }
            return (p, frames[0], try! RequestHeader(serializedBytes: frames[2]))
        }
    }

    /// The status of each FINAL sent to a client.
    func answers(_ actions: [SM.Action]) -> [(PeerAddress, ResponseHeader)] {
        actions.compactMap {
            guard case .toClient(let p, _, _, true, let body) = $0 else { return nil }
            return (p, try! ResponseHeader(serializedBytes: body[0]))
        }
    }

    @Test("a READY worker gets requests; its reply goes back to the caller")
    func registrationAndReply() throws {
        var sm = SM(configuration: config())
        #expect(ready(&sm, w1, capacity: nil).isEmpty)
        #expect(sm.liveWorkers(of: "echo") == 1)
        let sent = dispatched(request(&sm, id: 1))
        try #require(sent.count == 1)
        #expect(sent[0].0 == w1)
        #expect(sent[0].2.requestID == 1)
        let back = reply(&sm, from: w1, token: sent[0].1)
        guard case .toClient(let p, .delimited, "echo", true, let body) = back.first else { Issue.record("no reply"); return }
        #expect(p == client)
        #expect(body[1] == Data("r".utf8))
        #expect(sm.inFlight == 0)
        #expect(sm.stats.replies == 1)
    }

    @Test("workers by service for /metrics: registered, lost and disconnected workers change it; names only asked for are not in it")
    func workersByService() {
        var sm = SM(configuration: config())
        #expect(sm.workersByService.isEmpty && !sm.workersChanged)
        _ = request(&sm, id: 1, service: "nobody")
        #expect(sm.workersByService.isEmpty && !sm.workersChanged)
        _ = ready(&sm, w1, capacity: 1)
        _ = ready(&sm, w2, capacity: 1)
        #expect(sm.workersChanged)
        #expect(sm.workersByService == ["echo": 2])
        sm.workersChanged = false
        var actions: [SM.Action] = []
        sm.handle(.fromWorker(w1, .delimited, .workerDisconnect), now: 0, into: &actions)
        #expect(sm.workersChanged)
        #expect(sm.workersByService == ["echo": 1])
        sm.workersChanged = false
        // w2 falls silent past its liveness: gone, and the service stays listed with none.
        sm.tick(now: 400 * ms, into: &actions)
        #expect(sm.workersChanged)
        #expect(sm.workersByService == ["echo": 0])
    }

    @Test("a name only asked for is forgotten once its requests expire; asked again it queues as before, and a worker that comes serves it")
    func unservedNamesAreForgotten() {
        var sm = SM(configuration: config())
        _ = ready(&sm, w1, capacity: 1)
        // Many names nobody serves, two requests each with different deadlines.
        for i in 0..<100 {
            _ = request(&sm, from: client, id: UInt64(2 * i), timeoutMs: 10, service: "nobody-\(i)")
            _ = request(&sm, from: client2, id: UInt64(2 * i + 1), timeoutMs: 30, service: "nobody-\(i)")
        }
        #expect(sm.knownServiceCount == 101)
        var actions: [SM.Action] = []
        sm.tick(now: 20 * ms, into: &actions)
        #expect(answers(actions).count == 100)
        #expect(sm.knownServiceCount == 101)  // each still has a request waiting
        actions = []
        sm.tick(now: 40 * ms, into: &actions)
        #expect(answers(actions).map { $0.1.error?.code } == Array(repeating: .unavailable, count: 100))
        #expect(sm.knownServiceCount == 1)  // only "echo", which a worker serves
        #expect(sm.workersByService == ["echo": 1])
        // Asked again (a reused entry), then served by a worker that registers late.
        #expect(request(&sm, id: 500, timeoutMs: 1_000, service: "late", now: 40 * ms).isEmpty)
        let sent = dispatched(ready(&sm, w2, capacity: 1, service: "late", now: 50 * ms))
        #expect(sent.map(\.0) == [w2] && sent.map(\.2.requestID) == [500])
        // A served name is kept after its requests and workers are gone.
        actions = []
        _ = reply(&sm, from: w2, token: sent[0].1, now: 60 * ms)
        sm.tick(now: 2_000 * ms, into: &actions)
        #expect(sm.workersByService == ["echo": 0, "late": 0])
        #expect(sm.knownServiceCount == 2)
    }

    @Test("capacity from WorkerInfo; least-loaded worker first; the rest queue in order")
    func capacityAndLeastLoaded() throws {
        var sm = SM(configuration: config())
        _ = ready(&sm, w1, capacity: 2)
        _ = ready(&sm, w2, capacity: 1)
        var sent: [(PeerAddress, Data, RequestHeader)] = []
        for id in 1...3 { sent += dispatched(request(&sm, id: UInt64(id))) }
        #expect(sent.map(\.0) == [w1, w1, w2])  // 2 free vs 1, then 1 vs 1 (the first), then w2's slot
        #expect(dispatched(request(&sm, id: 4)).isEmpty)
        #expect(dispatched(request(&sm, id: 5)).isEmpty)
        #expect(sm.queued(in: "echo") == 2)
        // w2 answers: the oldest queued request (4) goes to it.
        let next = dispatched(reply(&sm, from: w2, token: sent[2].1))
        #expect(next.map(\.2.requestID) == [4])
        #expect(next.map(\.0) == [w2])
    }

    @Test("a full queue answers RESOURCE_EXHAUSTED with a retry-after")
    func queueBound() throws {
        var sm = SM(configuration: config(queue: 2))
        _ = ready(&sm, w1, capacity: 1)
        _ = request(&sm, id: 1)
        _ = request(&sm, id: 2)
        _ = request(&sm, id: 3)
        let a = answers(request(&sm, id: 4))
        try #require(a.count == 1)
        #expect(a[0].1.status.code == .resourceExhausted)
        #expect(a[0].1.requestID == 4)
        #expect(a[0].1.error?.retryAfterMs == 100)
        #expect(sm.stats.queueFull == 1)
    }

    @Test("a queued request past its deadline gets DEADLINE_EXCEEDED; with no worker, UNAVAILABLE")
    func queuedDeadlines() throws {
        var sm = SM(configuration: config())
        _ = ready(&sm, w1, capacity: 1)
        _ = request(&sm, id: 1, timeoutMs: 1_000)
        _ = request(&sm, id: 2, timeoutMs: 50)
        _ = request(&sm, id: 3, timeoutMs: 1_000, service: "nobody")
        var actions: [SM.Action] = []
        sm.tick(now: 49 * ms, into: &actions)
        #expect(answers(actions).isEmpty)
        sm.tick(now: 51 * ms, into: &actions)
        #expect(answers(actions).map(\.1.requestID) == [2])
        #expect(answers(actions).first?.1.status.code == .deadlineExceeded)
        actions = []
        // Keep w1 alive while time passes.
        var hb: [SM.Action] = []
        sm.handle(.fromWorker(w1, .delimited, .workerHeartbeat), now: 900 * ms, into: &hb)
        sm.tick(now: 1_001 * ms, into: &actions)
        let a = answers(actions)
        #expect(a.map(\.1.requestID) == [3])
        #expect(a.first?.1.status.code == .unavailable)
        #expect(a.first?.1.error?.reason == "NO_WORKER")
        #expect(sm.nextWakeup < .max)
    }

    @Test("time spent queued is subtracted; the caller a client sent is removed; no timeout gets the default")
    func headerRewrite() throws {
        var sm = SM(configuration: config())
        _ = ready(&sm, w1, capacity: 1)
        let first = dispatched(request(&sm, id: 1, timeoutMs: 0, caller: "mallory"))
        try #require(first.count == 1)
        #expect(first[0].2.hasCaller == false)
        #expect(first[0].2.timeoutMs == 30_000)
        _ = request(&sm, id: 2, timeoutMs: 1_000, now: 0)
        let second = dispatched(reply(&sm, from: w1, token: first[0].1, now: 300 * ms))
        try #require(second.count == 1)
        #expect(second[0].2.timeoutMs == 700)
        // The rest of the header goes through untouched whichever way it was rewritten.
        #expect(first[0].2.metadata == ["traceparent": "t1"] && second[0].2.metadata == ["traceparent": "t2"])
        #expect(first[0].2.method == "/caremesh.bench.v1.Bench/Echo" && second[0].2.requestID == 2)
    }

    @Test("the timeout is rewritten in place: the last occurrence of the field wins", arguments: [1, 127, 128, 30_000, UInt32.max])
    func timeoutPatch(ms: UInt32) throws {
        var h = RequestHeader()
        h.requestID = 7
        h.timeoutMs = 5
        h.metadata = ["a": "b"]
        let patched = try RequestHeader(serializedBytes: SM.setting(timeoutMs: ms, in: h.wireBytes()))
        #expect(patched.timeoutMs == ms && patched.requestID == 7 && patched.metadata == ["a": "b"])
    }

    @Test("a worker that never answers: the caller gets DEADLINE_EXCEEDED after the grace, the slot frees on the late reply")
    func expiredInWorker() throws {
        var c = config()
        c.inFlightGraceNs = 500 * ms
        var sm = SM(configuration: c)
        _ = ready(&sm, w1, capacity: 1)
        let first = dispatched(request(&sm, id: 1, timeoutMs: 1_000))
        try #require(first.count == 1)
        #expect(dispatched(request(&sm, id: 2, timeoutMs: 5_000, now: 10 * ms)).isEmpty)  // queued behind it
        func alive(at t: UInt64) -> [SM.Action] {
            var actions: [SM.Action] = []
            sm.handle(.fromWorker(w1, .delimited, .workerHeartbeat), now: t, into: &actions)  // hung, but heartbeating
            sm.tick(now: t, into: &actions)
            return actions
        }
        var t: UInt64 = 0
        while t < 1_400 * ms { t += 100 * ms; #expect(answers(alive(at: t)).isEmpty) }
        let expired = answers(alive(at: 1_500 * ms))
        #expect(expired.count == 1 && expired.first?.1.requestID == 1)
        #expect(expired.first?.1.error?.code == .deadlineExceeded)
        #expect(expired.first?.1.error?.reason == "EXPIRED_IN_WORKER")
        #expect(sm.stats.expiredInWorker == 1)
        // Still busy: request 2 waits for the slot, which the late reply frees.
        let late = reply(&sm, from: w1, token: first[0].1, now: 1_600 * ms)
        #expect(answers(late).isEmpty, "the late reply is not forwarded")
        let next = dispatched(late)
        #expect(next.count == 1 && next.first?.2.requestID == 2)
        #expect(sm.stats.lateReplies == 1 && sm.stats.staleReplies == 0)
    }

    @Test("a dead worker's callers get UNAVAILABLE at once; idle workers are heartbeaten")
    func workerExpiry() throws {
        var sm = SM(configuration: config())
        _ = ready(&sm, w1, capacity: 4, now: 0)
        _ = ready(&sm, w2, capacity: 4, now: 0)
        _ = request(&sm, id: 1)
        _ = request(&sm, from: client2, id: 2)
        var actions: [SM.Action] = []
        sm.tick(now: 100 * ms, into: &actions)
        #expect(actions.contains { if case .toWorker(_, _, .heartbeat, _) = $0 { true } else { false } })
        // w2 keeps talking, w1 goes silent for 3 intervals.
        var hb: [SM.Action] = []
        sm.handle(.fromWorker(w2, .delimited, .workerHeartbeat), now: 250 * ms, into: &hb)
        actions = []
        sm.tick(now: 301 * ms, into: &actions)
        let lost = answers(actions)
        #expect(lost.count == 1)
        #expect(lost.allSatisfy { $0.1.status.code == .unavailable && $0.1.error?.reason == "WORKER_LOST" })
        #expect(actions.contains(.toWorker(w1, .delimited, .disconnect, [])))
        #expect(sm.liveWorkers(of: "echo") == 1)
        #expect(sm.stats.workersLost == 1)
    }

    @Test("both dialects: each peer is answered in the dialect it used")
    func dialects() throws {
        var sm = SM(configuration: config())
        _ = ready(&sm, w1, capacity: 2, dialect: .strict)
        let a = request(&sm, id: 1, dialect: .strict)
        guard case .toWorker(_, .strict, .request, let frames) = a.first else { Issue.record("strict worker"); return }
        let b = reply(&sm, from: w1, token: frames[0])
        guard case .toClient(_, .strict, _, _, _) = b.first else { Issue.record("strict client"); return }
        let c = request(&sm, from: client2, id: 2, dialect: .delimited)
        let d = reply(&sm, from: w1, token: dispatched(c)[0].1)
        guard case .toClient(client2, .delimited, _, _, _) = d.first else { Issue.record("delimited client"); return }
    }

    @Test("a bad header is INVALID_ARGUMENT, an oversized request RESOURCE_EXHAUSTED; nothing is dispatched")
    func badRequests() throws {
        var sm = SM(configuration: config())
        _ = ready(&sm, w1, capacity: 1)
        var actions: [SM.Action] = []
        sm.handle(.fromClient(client, .delimited, service: "echo", body: [Data([0xFF, 0xFF, 0xFF])]), now: 0, into: &actions)
        #expect(answers(actions).first?.1.status.code == .invalidArgument)
        actions = []
        sm.handle(.fromClient(client, .delimited, service: "echo", body: [header(7), Data(count: 2_000)]), now: 0, into: &actions)
        #expect(answers(actions).first?.1.status.code == .resourceExhausted)
        #expect(answers(actions).first?.1.requestID == 7)
        #expect(dispatched(actions).isEmpty)
        #expect(sm.stats.malformed == 1)
        #expect(sm.stats.oversized == 1)
    }

    @Test("stale and forged replies are dropped; an unknown worker is told to reconnect")
    func staleReplies() throws {
        var sm = SM(configuration: config())
        _ = ready(&sm, w1, capacity: 1)
        _ = ready(&sm, w2, capacity: 1)
        let sent = dispatched(request(&sm, id: 1))
        // w2 answers w1's request: dropped.
        #expect(reply(&sm, from: w2, token: sent[0].1).isEmpty)
        #expect(reply(&sm, from: w1, token: Data([1, 2, 3])).isEmpty)
        #expect(sm.stats.staleReplies == 2)
        let stranger = PeerAddress(socket: 1, identity: Data([0xEE]))
        var actions: [SM.Action] = []
        sm.handle(.fromWorker(stranger, .strict, .workerHeartbeat), now: 0, into: &actions)
        #expect(actions == [.toWorker(stranger, .strict, .disconnect, [])])
    }

    @Test("a draining worker gets no new work, is acknowledged, and its replies still arrive")
    func drain() throws {
        var sm = SM(configuration: config())
        _ = ready(&sm, w1, capacity: 2)
        _ = ready(&sm, w2, capacity: 2)
        let sent = dispatched(request(&sm, id: 1))
        #expect(sent[0].0 == w1)
        var actions: [SM.Action] = []
        sm.handle(.fromWorker(w1, .delimited, .workerDisconnect), now: 0, into: &actions)
        #expect(actions == [.toWorker(w1, .delimited, .disconnect, [])])
        #expect(sm.liveWorkers(of: "echo") == 1)
        #expect(dispatched(request(&sm, id: 2)).map(\.0) == [w2])
        #expect(dispatched(request(&sm, id: 3)).map(\.0) == [w2])
        let back = reply(&sm, from: w1, token: sent[0].1)
        #expect(answers(back).map(\.0) == [client])
        #expect(sm.workerSummaries.count == 1)
    }

    @Test("mmi.service answers 200 or 404")
    func mmi() {
        var sm = SM(configuration: config())
        _ = ready(&sm, w1, capacity: 1)
        for (name, expected) in [("echo", "200"), ("nobody", "404")] {
            var actions: [SM.Action] = []
            sm.handle(.fromClient(client, .strict, service: "mmi.service", body: [Data(name.utf8)]), now: 0, into: &actions)
            #expect(actions == [.toClient(client, .strict, service: "mmi.service", final: true, body: [Data(expected.utf8)])])
        }
    }

    @Test("partial replies are forwarded and keep the call open")
    func partials() throws {
        var sm = SM(configuration: config())
        _ = ready(&sm, w1, capacity: 1)
        let sent = dispatched(request(&sm, id: 1))
        let p = reply(&sm, from: w1, token: sent[0].1, final: false)
        guard case .toClient(_, _, _, false, _) = p.first else { Issue.record("partial"); return }
        #expect(sm.inFlight == 1)
        _ = reply(&sm, from: w1, token: sent[0].1, final: true)
        #expect(sm.inFlight == 0)
    }
}

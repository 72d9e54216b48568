import AlertsService
import CareMeshContracts
import CareMeshRPC
import CareMeshRouter
import CareMeshStore
import CareMeshTesting
import DispatchService
import Foundation
import IdentityService
import MessagingService
import Synchronization
import Testing

typealias EchoRequest = Caremesh_Bench_V1_EchoRequest
typealias EchoResponse = Caremesh_Bench_V1_EchoResponse

/// Counts what handlers did, for assertions.
final class Probe: Sendable {
    let started = Atomic<Int>(0)
    let cancelled = Atomic<Int>(0)
    let seen = Mutex<[RPCContext]>([])
}

/// A bench-like service whose handlers report to a probe.
func echoHandlers(_ probe: Probe, instance: String = "w", start: RPCHandlers.Start = .pool) -> RPCHandlers {
    var h = RPCHandlers()
    let echo: @Sendable (EchoRequest, RPCContext) async throws -> EchoResponse = { request, context in
        probe.started.add(1, ordering: .relaxed)
        probe.seen.withLock { $0.append(context) }
        if request.delayMs > 0 {
            do { try await Task.sleep(for: .milliseconds(Int64(request.delayMs))) } catch {
                probe.cancelled.add(1, ordering: .relaxed)
                throw error
            }
        }
        var r = EchoResponse()
        r.payload = request.payload
        r.instanceID = instance
        return r
    }
    h.register(BenchMethods.echo, start: start, echo)
    h.register(BenchMethods.write, start: start, echo)
    return h
}

/// A router with one "bench" worker serving `handlers` and a client of it, for `body`.
func withBenchStack(router configuration: RouterConfiguration = TestStack.routerConfiguration(), capacity: Int = 64,
                    handlers: RPCHandlers, _ body: @Sendable (Router, RPCClient) async throws -> Void) async throws {
    let router = try TestStack.startRouter(configuration)
    defer { router.stop() }
    let worker = ServiceWorker(configuration: TestStack.workerConfiguration("bench", endpoint: router.boundEndpoints.worker,
                                                                            capacity: capacity),
                               handlers: handlers, logger: TestStack.quietLogger("w"))
    let client = TestStack.client(router)
    defer { client.close() }
    try await TestStack.withWorkers([worker]) {
        try await TestStack.waitUntilServing(client, "bench")
        try await body(router, client)
    }
}

/// The RPCError a call threw (typed throws are not inferred through every `do`).
func rpcError(_ error: any Error) -> RPCError { error as? RPCError ?? RPCError(.unknown, "\(error)") }

func echo(_ payload: String, delayMs: UInt32 = 0) -> EchoRequest {
    var r = EchoRequest()
    r.payload = Data(payload.utf8)
    r.delayMs = delayMs
    return r
}

/// The bus end to end in one process: real router, real sockets on loopback.
@Suite(.timeLimit(.minutes(1)))
struct BusTests {
    @Test("the four services register and answer health through the router")
    func fourServicesServeHealth() async throws {
        let router = try TestStack.startRouter()
        defer { router.stop() }
        let db = try await TestDatabase.fresh("four")
        let env = db.environment.merging(TestStack.workerEnvironment(router)) { $1 }
        let logger = TestDatabase.logger
        let hosts = [try await IdentityService.make(environment: env, logger: logger),
                     try await DispatchService.make(environment: env, logger: logger),
                     try await AlertsService.make(environment: env, logger: logger),
                     try await MessagingService.make(environment: env, logger: logger)]
        let client = TestStack.client(router)
        defer { client.close() }
        try await TestStack.withHosts(hosts) {
            for name in Provisioner.services {
                try await TestStack.waitUntilServing(client, name)
                let r = try await client.call(HealthMethods.check, service: name, request: .init())
                #expect(r.status == .serving)
                #expect(r.instanceID.hasPrefix(name))
            }
            var other = Caremesh_Health_V1_HealthCheckRequest()
            other.service = "nope"
            #expect(try await client.call(HealthMethods.check, service: "identity", request: other).status == .serviceUnknown)
        }
    }

    @Test("many calls in flight on one client socket, spread over workers, each answered with its own reply")
    func manyInFlight() async throws {
        let router = try TestStack.startRouter()
        defer { router.stop() }
        let probe = Probe()
        let ep = router.boundEndpoints.worker
        let workers = (0..<2).map { i in
            ServiceWorker(configuration: TestStack.workerConfiguration("bench", endpoint: ep, capacity: 100),
                          handlers: echoHandlers(probe, instance: "w\(i)"), logger: TestStack.quietLogger("w"))
        }
        let client = TestStack.client(router)
        defer { client.close() }
        try await TestStack.withWorkers(workers) {
            try await TestStack.waitUntilServing(client, "bench")
            try await Task.sleep(for: .milliseconds(200))  // both registered
            let start = ContinuousClock.now
            let instances = try await withThrowingTaskGroup(of: String.self) { group in
                for i in 0..<200 {
                    group.addTask {
                        let r = try await client.call(BenchMethods.echo, request: echo("call \(i)", delayMs: 100))
                        #expect(r.payload == Data("call \(i)".utf8))
                        return r.instanceID
                    }
                }
                return try await group.reduce(into: [String]()) { $0.append($1) }
            }
            // 200 calls of 100 ms each, 200 slots: concurrent, not one after another.
            #expect(ContinuousClock.now - start < .seconds(3))
            #expect(Set(instances) == ["w0", "w1"])
        }
    }

    @Test("an expired deadline is DEADLINE_EXCEEDED and the handler never runs")
    func expiredDeadlineNeverRuns() async throws {
        let probe = Probe()
        try await withBenchStack(capacity: 1, handlers: echoHandlers(probe)) { router, client in
            async let busy = client.call(BenchMethods.echo, request: echo("busy", delayMs: 600))
            try await Task.sleep(for: .milliseconds(100))
            let before = probe.started.load(ordering: .relaxed)
            do {
                _ = try await client.call(BenchMethods.write, request: echo("late"), options: .init(timeout: .milliseconds(100)))
                Issue.record("the call should have expired")
            } catch {
                #expect(rpcError(error).code == .deadlineExceeded)
            }
            _ = try await busy
            try await Task.sleep(for: .milliseconds(100))
            #expect(probe.started.load(ordering: .relaxed) == before)
            #expect(probe.seen.withLock { $0.allSatisfy { $0.method.hasSuffix("Echo") } })
        }
    }

    @Test("heartbeats never stall behind busy handlers: handlers blocking every pool thread past the liveness window")
    func heartbeatsDuringBusyHandlers() async throws {
        var h = RPCHandlers()
        h.register(BenchMethods.write) { request, _ in
            usleep(800_000)  // blocks its thread, far past 3 × 100 ms heartbeats
            var r = EchoResponse()
            r.payload = request.payload
            return r
        }
        try await withBenchStack(capacity: 2, handlers: h) { router, client in
            async let a = client.call(BenchMethods.write, request: echo("a"))
            async let b = client.call(BenchMethods.write, request: echo("b"))
            let (ra, rb) = try await (a, b)
            #expect(ra.payload == Data("a".utf8) && rb.payload == Data("b".utf8))
            #expect(router.stats.workersLost == 0)
            #expect(router.stats.callsLost == 0)
        }
    }

    @Test("running work is cancelled at its deadline and the caller gets DEADLINE_EXCEEDED on time")
    func runningWorkCancelled() async throws {
        let probe = Probe()
        try await withBenchStack(handlers: echoHandlers(probe)) { router, client in
            let start = ContinuousClock.now
            do {
                _ = try await client.call(BenchMethods.write, request: echo("slow", delayMs: 5_000),
                                          options: .init(timeout: .milliseconds(300)))
                Issue.record("the call should have failed")
            } catch {
                #expect(rpcError(error).code == .deadlineExceeded)
            }
            #expect(ContinuousClock.now - start < .seconds(2))
            try await Task.sleep(for: .milliseconds(100))
            #expect(probe.cancelled.load(ordering: .relaxed) == 1)
        }
    }

    @Test("inline handlers (started on the worker's I/O thread) answer many in flight and are cancelled at their deadline")
    func inlineHandlers() async throws {
        let probe = Probe()
        try await withBenchStack(handlers: echoHandlers(probe, start: .inline)) { router, client in
            try await Self.inlineHandlersBody(probe, client)
        }
    }

    static func inlineHandlersBody(_ probe: Probe, _ client: RPCClient) async throws {
        let payloads = try await withThrowingTaskGroup(of: (Int, Data).self) { group in
            for i in 0..<100 {
                group.addTask {
                    (i, try await client.call(BenchMethods.echo, request: echo("call \(i)", delayMs: i % 2 == 0 ? 0 : 20)).payload)
                }
            }
            return try await group.reduce(into: [Int: Data]()) { $0[$1.0] = $1.1 }
        }
        #expect(payloads.count == 100)
        #expect(payloads.allSatisfy { $0.value == Data("call \($0.key)".utf8) })
        let start = ContinuousClock.now
        let late = await #expect(throws: RPCError.self) {
            _ = try await client.call(BenchMethods.write, request: echo("slow", delayMs: 5_000), options: .init(timeout: .milliseconds(300)))
        }
        #expect(late?.code == .deadlineExceeded)
        #expect(ContinuousClock.now - start < .seconds(2))
        try await Task.sleep(for: .milliseconds(100))
        #expect(probe.cancelled.load(ordering: .relaxed) == 1)
    }

    @Test("an inline handler runs on the worker's I/O thread: while it blocks there, the worker answers nothing else")
    func inlineHandlerHoldsTheThread() async throws {
        let started = Atomic<Bool>(false)
        var h = RPCHandlers()
        h.register(BenchMethods.write, start: .inline) { request, _ in
            started.store(true, ordering: .relaxed)
            usleep(400_000)  // what an inline handler must never do: it holds the I/O thread
            var r = EchoResponse()
            r.payload = request.payload
            return r
        }
        // Liveness windows of 2 s, so that the 400 ms block loses nobody.
        let router = try TestStack.startRouter(TestStack.routerConfiguration(liveness: 20))
        defer { router.stop() }
        let worker = ServiceWorker(configuration: TestStack.workerConfiguration("bench", endpoint: router.boundEndpoints.worker, liveness: 20),
                                   handlers: h, logger: TestStack.quietLogger("w"))
        let client = TestStack.client(router)
        defer { client.close() }
        try await TestStack.withWorkers([worker]) {
            try await TestStack.waitUntilServing(client, "bench")
            let clock = ContinuousClock()
            async let blocked = client.call(BenchMethods.write, request: echo("b"))
            while !started.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(5)) }
            let start = clock.now
            _ = try await client.call(HealthMethods.check, service: "bench", request: .init())
            // Health is answered only once the blocking handler gave the thread back.
            #expect(clock.now - start >= .milliseconds(250))
            #expect(try await blocked.payload == Data("b".utf8))
            #expect(router.stats.workersLost == 0)
        }
    }

    @Test("callers on the client's executor are served on its I/O thread; a task still there when it closes is not stranded")
    func callersOnTheClientExecutor() async throws {
        try await withBenchStack(handlers: echoHandlers(Probe())) { router, client in
            try await Self.clientExecutorBody(router, client)
        }
    }

    static func clientExecutorBody(_ router: Router, _ client: RPCClient) async throws {
        let payloads = try await withTaskExecutorPreference(client.executor) {
            try await withThrowingTaskGroup(of: (Int, Data).self) { group in
                for i in 0..<64 {
                    group.addTask {
                        var last = Data()
                        for j in 0..<5 {
                            last = try await client.call(BenchMethods.echo, request: echo("\(i).\(j)")).payload
                            #expect(client.executor.isCurrent)  // resumed by the reply on the client's thread
                        }
                        return (i, last)
                    }
                }
                return try await group.reduce(into: [Int: Data]()) { $0[$1.0] = $1.1 }
            }
        }
        #expect(payloads.count == 64)
        #expect(payloads.allSatisfy { $0.value == Data("\($0.key).4".utf8) })

        // A second client, closed while its callers wait: on a call, and on a plain sleep.
        let other = TestStack.client(router)
        let waiting = Task(executorPreference: other.executor) { () -> StatusCode in
            do { _ = try await other.call(BenchMethods.echo, request: echo("slow", delayMs: 3_000)); return .ok }
            catch { return rpcError(error).code }
        }
        let sleeping = Task(executorPreference: other.executor) { () -> Int in
            try? await Task.sleep(for: .milliseconds(300))
            return other.executor.isCurrent ? -1 : 42  // the thread has ended: the pool runs it
        }
        try await Task.sleep(for: .milliseconds(100))
        other.close()
        #expect(await waiting.value == .cancelled)
        #expect(await sleeping.value == 42)  // resumed after the close: on the pool
    }

    @Test("a handler that ignores cancellation is answered for a second after its deadline, and its slot freed")
    func abandonedHandler() async throws {
        var h = RPCHandlers()
        h.register(BenchMethods.echo) { request, _ in
            if request.delayMs > 0 {
                // Not cancellable: what postgres-nio does on a connection closed under it.
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(Int(request.delayMs))) { c.resume() }
                }
            }
            var r = Caremesh_Bench_V1_EchoResponse()
            r.payload = request.payload
            return r
        }
        try await withBenchStack(capacity: 1, handlers: h) { router, client in
            let clock = ContinuousClock()
            let start = clock.now
            let stuck = await #expect(throws: RPCError.self) {
                _ = try await client.call(BenchMethods.echo, request: echo("stuck", delayMs: 4_000),
                                          options: .init(timeout: .milliseconds(300)))
            }
            #expect(stuck?.code == .deadlineExceeded)
            // The worker's own answer (deadline + 1 s), not the client's local timer alone.
            try await Task.sleep(for: .milliseconds(1_300) - (clock.now - start))
            // Capacity 1: this is served only because the stuck handler's slot was freed.
            let next = try await client.call(BenchMethods.echo, request: echo("next"), options: .init(timeout: .seconds(1)))
            #expect(next.payload == Data("next".utf8))
            #expect(clock.now - start < .seconds(3))
        }
    }

    @Test("a service with no worker is UNAVAILABLE by the deadline")
    func unknownService() async throws {
        let router = try TestStack.startRouter()
        defer { router.stop() }
        let client = TestStack.client(router)
        defer { client.close() }
        let start = ContinuousClock.now
        do {
            _ = try await client.call(HealthMethods.check, service: "nobody", request: .init(),
                                      options: .init(timeout: .milliseconds(400)))
            Issue.record("should fail")
        } catch {
            #expect(rpcError(error).code == .unavailable)
            #expect(rpcError(error).reason == "NO_WORKER")
        }
        let elapsed = ContinuousClock.now - start
        #expect(elapsed >= .milliseconds(350) && elapsed < .seconds(2))
    }

    @Test("a full queue is RESOURCE_EXHAUSTED with a retry-after")
    func fullQueue() async throws {
        var config = TestStack.routerConfiguration()
        config.dispatch.maxQueuePerService = 2
        try await withBenchStack(router: config, capacity: 1, handlers: echoHandlers(Probe())) { router, client in
            let codes = await withTaskGroup(of: StatusCode.self) { group in
                for i in 0..<6 {
                    group.addTask {
                        do { _ = try await client.call(BenchMethods.write, request: echo("\(i)", delayMs: 300)); return .ok }
                        catch { return rpcError(error).code }
                    }
                }
                return await group.reduce(into: [StatusCode]()) { $0.append($1) }
            }
            #expect(codes.filter { $0 == .ok }.count == 3)  // 1 running + 2 queued
            #expect(codes.filter { $0 == .resourceExhausted }.count == 3)
            #expect(router.stats.queueFull == 3)
        }
    }

    @Test("oversized and malformed frames are refused or dropped, and the router keeps serving")
    func badFrames() async throws {
        var config = TestStack.routerConfiguration()
        config.dispatch.maxMessageSize = 64 * 1024
        try await withBenchStack(router: config, handlers: echoHandlers(Probe())) { router, client in
            let endpoint = router.boundEndpoints.client, link = TestStack.BusKeys.clientLink(router)
            let replies = await TestStack.onThread { () -> Int in
                guard let raw = try? RawPeer(connect: endpoint, link: link) else { return -1 }
                let garbage: [[Data]] = [
                    [Data("hello".utf8)],
                    [Data(), Data("MDPC02".utf8), Data([0x09]), Data("bench".utf8)],
                    [Data(), Data("MDPW02".utf8), Data([0x04]), Data("x".utf8), Data("y".utf8)],
                    [Data(repeating: 0, count: 10_000)],
                ]
                for g in garbage { try? raw.send(g) }
                return raw.receive(timeoutMs: 300) == nil ? 0 : 1
            }
            #expect(replies == 0)  // dropped, not answered
            do {
                _ = try await client.call(BenchMethods.echo, request: echo(String(repeating: "x", count: 100_000)))
                Issue.record("oversized request should fail")
            } catch {
                #expect(rpcError(error).code == .resourceExhausted)
            }
            let ok = try await client.call(BenchMethods.echo, request: echo("still here"))
            #expect(ok.payload == Data("still here".utf8))
            #expect(router.stats.malformed >= 3)
            #expect(router.stats.oversized == 1)
        }
    }

    @Test("a handler's calls inherit its deadline and its trace")
    func deadlineAndTracePropagate() async throws {
        let router = try TestStack.startRouter()
        defer { router.stop() }
        let inner = Probe()
        let ep = router.boundEndpoints.worker
        let downstream = ServiceWorker(configuration: TestStack.workerConfiguration("inner", endpoint: ep),
                                       handlers: echoHandlers(inner), logger: TestStack.quietLogger("w"))
        let nested = TestStack.client(router, timeout: .seconds(20))
        defer { nested.close() }
        var h = RPCHandlers()
        h.register(BenchMethods.echo) { request, context in
            try await Task.sleep(for: .milliseconds(200))
            return try await nested.call(BenchMethods.echo, service: "inner", request: request)
        }
        let upstream = ServiceWorker(configuration: TestStack.workerConfiguration("outer", endpoint: ep),
                                     handlers: h, logger: TestStack.quietLogger("w"))
        let client = TestStack.client(router)
        defer { client.close() }
        try await TestStack.withWorkers([downstream, upstream]) {
            try await TestStack.waitUntilServing(client, "inner")
            try await TestStack.waitUntilServing(client, "outer")
            let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            _ = try await client.call(BenchMethods.echo, service: "outer", request: echo("x"),
                                      options: .init(timeout: .milliseconds(2_000), metadata: ["traceparent": trace]))
            let seen = try #require(inner.seen.withLock { $0.last })
            // 2 s minus the 200 ms the outer handler spent, not the nested client's 20 s default.
            #expect(seen.remainingMs < 1_850)
            #expect(seen.remainingMs > 500)
            #expect(seen.traceparent.flatMap(TraceParent.traceID) == "0af7651916cd43dd8448eb211c80319c")
            #expect(seen.traceparent != trace)  // a new span of the same trace
        }
    }

    @Test("retries only where safe: reads and keyed writes are retried, plain writes are not")
    func retriesOnlyWhereSafe() async throws {
        let router = try TestStack.startRouter()
        defer { router.stop() }
        let attempts = Mutex<[String: Int]>([:])
        var h = RPCHandlers()
        let flaky: @Sendable (EchoRequest, RPCContext) async throws -> EchoResponse = { request, context in
            let key = String(decoding: request.payload, as: UTF8.self)
            let n = attempts.withLock { $0[key, default: 0] += 1; return $0[key]! }
            if n == 1 { throw RPCError(.unavailable, "try again") }
            return EchoResponse()
        }
        h.register(BenchMethods.echo, flaky)
        h.register(BenchMethods.write, flaky)
        let worker = ServiceWorker(configuration: TestStack.workerConfiguration("bench", endpoint: router.boundEndpoints.worker),
                                   handlers: h, logger: TestStack.quietLogger("w"))
        let client = TestStack.client(router)
        defer { client.close() }
        try await TestStack.withWorkers([worker]) {
            try await TestStack.waitUntilServing(client, "bench")
            _ = try await client.call(BenchMethods.echo, request: echo("read"))
            _ = try await client.call(BenchMethods.write, request: echo("keyed"), options: .init(idempotencyKey: "k1"))
            do {
                _ = try await client.call(BenchMethods.write, request: echo("plain"))
                Issue.record("a write without a key must not be retried")
            } catch {
                #expect(rpcError(error).code == .unavailable)
            }
            #expect(attempts.withLock { $0 } == ["read": 2, "keyed": 2, "plain": 1])
        }
    }

    @Test("unexpected errors are INTERNAL with a correlation id and nothing internal; unknown methods UNIMPLEMENTED")
    func errorMapping() async throws {
        struct SecretFailure: Error { let detail = "patient Jane Doe, DOB 1950-01-01" }
        struct NotFound: RPCErrorConvertible { var rpcError: RPCError { RPCError(.notFound, "no such thing") } }
        var h = RPCHandlers()
        h.register(BenchMethods.echo) { _, _ in throw SecretFailure() }
        h.register(BenchMethods.write) { _, _ in throw NotFound() }
        try await withBenchStack(handlers: h) { router, client in
            do { _ = try await client.call(BenchMethods.echo, request: echo("x")); Issue.record("should fail") } catch {
                #expect(rpcError(error).code == .internal)
                #expect(rpcError(error).correlationID?.isEmpty == false)
                #expect(!rpcError(error).message.contains("Jane") && !rpcError(error).message.contains("SecretFailure"))
            }
            do { _ = try await client.call(BenchMethods.write, request: echo("x")); Issue.record("should fail") } catch {
                #expect(rpcError(error).code == .notFound)
                #expect(rpcError(error).message == "no such thing")
            }
            do {
                _ = try await client.callRaw(service: "bench", method: "/caremesh.bench.v1.Bench/Nope", message: Data())
                Issue.record("should fail")
            } catch {
                #expect(rpcError(error).code == .unimplemented)
            }
        }
    }

    @Test("strict 18/MDP workers and clients work through the router as well")
    func strictDialect() async throws {
        let router = try TestStack.startRouter()
        defer { router.stop() }
        var config = TestStack.workerConfiguration("bench", endpoint: router.boundEndpoints.worker)
        config.dialect = .strict
        let worker = ServiceWorker(configuration: config, handlers: echoHandlers(Probe()), logger: TestStack.quietLogger("w"))
        let strict = TestStack.client(router, dialect: .strict)
        let delimited = TestStack.client(router, dialect: .delimited)
        defer { strict.close(); delimited.close() }
        try await TestStack.withWorkers([worker]) {
            try await TestStack.waitUntilServing(strict, "bench")
            #expect(try await strict.call(BenchMethods.echo, request: echo("s")).payload == Data("s".utf8))
            #expect(try await delimited.call(BenchMethods.echo, request: echo("d")).payload == Data("d".utf8))
        }
    }

    @Test("graceful shutdown under load: no call in flight fails")
    func gracefulDrainInProcess() async throws {
        let router = try TestStack.startRouter()
        defer { router.stop() }
        let ep = router.boundEndpoints.worker
        let leaving = ServiceWorker(configuration: TestStack.workerConfiguration("bench", endpoint: ep, capacity: 8),
                                    handlers: echoHandlers(Probe(), instance: "leaving"), logger: TestStack.quietLogger("w"))
        let staying = ServiceWorker(configuration: TestStack.workerConfiguration("bench", endpoint: ep, capacity: 8),
                                    handlers: echoHandlers(Probe(), instance: "staying"), logger: TestStack.quietLogger("w"))
        let client = TestStack.client(router)
        defer { client.close() }
        try await TestStack.withWorkers([staying]) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await leaving.run() }
                try await TestStack.waitUntilServing(client, "bench")
                try await Task.sleep(for: .milliseconds(200))
                let failures = await withTaskGroup(of: Int.self) { calls in
                    for i in 0..<40 {
                        calls.addTask {
                            // Writes: never retried, so a lost call would show.
                            do { _ = try await client.call(BenchMethods.write, request: echo("\(i)", delayMs: 150)); return 0 }
                            catch { return 1 }
                        }
                    }
                    try? await Task.sleep(for: .milliseconds(100))
                    leaving.beginGracefulShutdown()
                    return await calls.reduce(0, +)
                }
                #expect(failures == 0)
                try await group.waitForAll()
            }
        }
    }
}

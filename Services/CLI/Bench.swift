import ArgumentParser
import CareMeshContracts
import CareMeshRPC
import Foundation
import Histogram
import ZMQ

/// `caremesh bench rpc|identity|sos|alerts`.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks (record results in BENCHMARKS.md).",
        subcommands: [RPC.self, IdentityBench.self, SosBench.self, AlertsBench.self, MessagingBench.self, NotifyBench.self]
    )

    struct RPC: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rpc",
            abstract: "Round trips through the router to Bench/Echo: p50/p99 (HdrHistogram) and throughput.",
            discussion: """
            Without --router, starts its own router and worker processes (release build \
            recommended: swift build -c release) on --port and --port+1, like the peers' \
            zmq-c harness: client, router and workers are separate processes. Each line also \
            gives the CPU time per request of each (user + system, and the user part, from /proc \
            over the measured window; only the client's with --router): on a machine whose speed \
            varies, user time per request stays put between runs while throughput does not.
            """
        )

        @Option(help: "Concurrency levels to run (calls in flight on one client socket).")
        var concurrency: [Int] = [1, 64]
        @Option(help: "Payload bytes.") var payload = 64
        @Option(help: "Warm-up seconds.") var warmup = 2.0
        @Option(help: "Measured seconds.") var duration = 10.0
        @Option(help: "Worker processes to start.") var workers = 2
        @Option(help: "Client endpoint port of the router to start.") var port = 27655
        @Option(help: "Use this running router (with a bench-worker registered) instead.") var router: String?
        @Option(help: "The bus's security for the router it starts: curve (the default: CurveZMQ, keys made for the run) or off.")
        var busSecurity = "curve"
        @Flag(inversion: .prefixedNo,
              help: "Run the calling tasks on the client's I/O thread (withTaskExecutorPreference(client.executor)).")
        var clientThread = true

        func run() async throws {
            var children: [Process] = []
            defer {
                for p in children where p.isRunning { kill(p.processIdentifier, SIGTERM) }
                for p in children { p.waitUntilExit() }
            }
            let endpoint: String
            var roles: [(name: String, pid: Int32)] = [("client", getpid())]
            var link = BusLink.plain
            if let router {
                endpoint = router
                link = try ClientConfiguration(environment: StackLayout.clientEnvironment()).link
            } else {
                endpoint = "tcp://127.0.0.1:\(port)"
                let bin = StackLayout.binaries
                var env = ProcessInfo.processInfo.environment
                env["CAREMESH_ROUTER_CLIENT_ENDPOINT"] = endpoint
                env["CAREMESH_ROUTER_WORKER_ENDPOINT"] = "tcp://127.0.0.1:\(port + 1)"
                env["CAREMESH_LOG_LEVEL"] = "warning"
                // Its own router has no HTTP edge: a stack running beside it keeps its port.
                env["CAREMESH_HTTP_ADDRESS"] = "off"
                env[BusSettings.security] = busSecurity
                if try BusSettings.secured(env) {
                    // Keys for this run only: the router's, and the bench workers' bound to "bench".
                    let routerKeys = CurveKeyPair.generate(), workerKeys = CurveKeyPair.generate()
                    env[BusSettings.routerSecretKey] = routerKeys.secretKey.z85
                    env[BusSettings.workerKeys] = "bench \(workerKeys.publicKey.z85)"
                    env[BusSettings.routerPublicKey] = routerKeys.publicKey.z85
                    env["BENCH_BUS_SECRET_KEY"] = workerKeys.secretKey.z85
                    link = .curve(router: routerKeys.publicKey, own: .generate())
                }
                func start(_ role: String, _ exe: String, _ args: [String]) throws {
                    let child = try spawn(bin.appendingPathComponent(exe), args, env)
                    children.append(child)
                    roles.append((role, child.processIdentifier))
                }
                try start("router", "router", [])
                for _ in 0..<workers { try start("workers", "caremesh", ["bench-worker"]) }
            }
            var config = ClientConfiguration(endpoint: endpoint)
            config.defaultTimeout = .seconds(10)
            config.link = link
            let client = RPCClient(configuration: config)
            defer { client.close() }
            try await waitForWorkers(client)
            print(machineLine())
            for c in concurrency {
                let result = try await measure(client, concurrency: c, processes: StackProcesses(processes: roles))
                print(result)
            }
        }

        private func spawn(_ exe: URL, _ args: [String], _ env: [String: String]) throws -> Process {
            let p = Process()
            p.executableURL = exe
            p.arguments = args
            p.environment = env
            try p.run()
            return p
        }

        private func waitForWorkers(_ client: RPCClient) async throws {
            let until = Date().addingTimeInterval(30)
            while Date() < until {
                if (try? await client.call(BenchMethods.echo, request: .init(), options: .init(timeout: .seconds(1)))) != nil {
                    try await Task.sleep(for: .milliseconds(500))  // let every worker register
                    return
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            throw ValidationError("no bench worker answered within 30 s")
        }

        private func measure(_ client: RPCClient, concurrency: Int, processes: StackProcesses) async throws -> String {
            var request = Caremesh_Bench_V1_EchoRequest()
            request.payload = Data(repeating: 0x61, count: payload)
            let req = request
            let load = Load(concurrency: concurrency, warmup: warmup, duration: duration, processes: processes)
            let call: @Sendable (Int) async throws -> Void = { _ in _ = try await client.call(BenchMethods.echo, request: req) }
            let result = clientThread
                ? await withTaskExecutorPreference(client.executor) { await load.run(call) }
                : await load.run(call)
            let n = result.histogram.totalCount
            let cpu = result.cpu + [result.cpu.reduce(CPUTime(name: "total", seconds: 0, user: 0), +)]
            let perRequest = 1e6 / Double(max(n, 1))
            let bus = if case .curve = client.configuration.link { "curve" } else { "off" }
            return "caremesh rpc: bus=\(bus) concurrency=\(concurrency) callers=\(clientThread ? "client-thread" : "pool") payload=\(payload)B duration_s=\(duration) requests=\(n) "
                + "rps=\(Int(result.rate)) p50_us=\(result.us(50)) p90_us=\(result.us(90)) p99_us=\(result.us(99)) "
                + "p999_us=\(result.us(99.9)) errors=\(result.errors)"
                + cpu.map { String(format: " cpu_us_%@=%.1f(user %.1f)", $0.name, $0.seconds * perRequest, $0.user * perRequest) }.joined()
        }
    }
}

import ArgumentParser
import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import IdentityService
import Foundation
import ServiceLifecycle
import UnixSignals
import ZMQ

/// `caremesh up [--detach]`: the local stack, supervised, until Ctrl-C / SIGTERM / `down`.
struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start the router and the four services, wait until healthy, and supervise them.",
        discussion: "State, logs and the supervisor's pid live in $CAREMESH_HOME (default ./.caremesh)."
    )

    @Flag(help: "Run the supervisor in the background and return once the stack is healthy.")
    var detach = false

    @Option(help: "Seconds to wait for every service to answer health.")
    var waitSeconds: Int = 60

    @Flag(help: .hidden) var supervise = false

    func run() async throws {
        let layout = StackLayout()
        try layout.prepare()
        if let pid = layout.runningSupervisor() {
            writeError("caremesh: a stack is already up (supervisor pid \(pid)); `caremesh down` stops it")
            throw ExitCode.failure
        }
        // The bus's keys exist before anything waits on the router (a detached supervisor
        // wires them into its children; this process reads the router's public key).
        var keys = ProcessInfo.processInfo.environment
        try layout.busEnvironment(&keys)
        if detach && !supervise {
            try await startDetached(layout)
            return
        }
        try "\(getpid())\n".write(to: layout.supervisorPID, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: layout.supervisorPID) }
        var env = ProcessInfo.processInfo.environment
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        // No DATABASE_URL: the stack's own PostgreSQL, made once under $CAREMESH_HOME/pg.
        var cluster: EmbeddedPostgres?
        if !LocalDatabase.isExternal(env) {
            let pg = LocalDatabase.cluster(layout)
            progress(pg.isInitialized ? "starting PostgreSQL" : "creating PostgreSQL in \(pg.directory.path) (once)")
            let admin = try await pg.start()
            for (service, url) in try pg.serviceURLs(admin: admin) {
                env["\(service.uppercased())_DATABASE_URL"] = url.urlString
            }
            progress("PostgreSQL on 127.0.0.1:\(admin.port), database \(admin.database)")
            cluster = pg
        }
        defer {
            if let cluster {
                do { try cluster.stop() } catch { writeError("caremesh: \(error)") }
            }
        }
        if (env["IDENTITY_KEY_ENCRYPTION_KEY"] ?? "").isEmpty {
            env["IDENTITY_KEY_ENCRYPTION_KEY"] = try layout.identityKeyEncryptionKey()
        }
        // Each service's sign-in secret (a local stack gives every child the same environment).
        for service in IdentityConfiguration.servicesWithSecrets where (env[ServiceCredentials.variable(for: service)] ?? "").isEmpty {
            env[ServiceCredentials.variable(for: service)] = try layout.serviceSecret(service)
        }
        // The bus's keys: the router's, and each service's bound to its name.
        try layout.busEnvironment(&env)
        // No real SMS provider configured: the sandbox plays Twilio and Orange, and posts its
        // callbacks to the router's HTTP edge.
        let sandboxed = (env["MESSAGING_TWILIO_ACCOUNT_SID"] ?? "").isEmpty && (env["MESSAGING_ORANGE_CLIENT_ID"] ?? "").isEmpty
        if sandboxed { try layout.sandboxEnvironment(&env) }
        let supervisor = Supervisor(layout: layout, environment: env)
        do {
            for name in ["router"] + (sandboxed ? ["sandbox"] : []) + StackLayout.services {
                progress("starting \(name)")
                try supervisor.start(name)
            }
            try await waitHealthy(seconds: waitSeconds)
        } catch {
            supervisor.stopAll()
            throw error
        }
        printEndpoints(layout)
        for await _ in signals { break }
        progress("stopping")
        supervisor.stopAll()
        progress("stopped")
    }

    private func startDetached(_ layout: StackLayout) async throws {
        let me = StackLayout.binaries.appendingPathComponent("caremesh")
        let log = layout.log("supervisor")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
        p.arguments = [me.path, "up", "--supervise", "--wait-seconds", "\(waitSeconds)"]
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        try p.run()
        progress("supervisor started in the background (log: \(log.path))")
        try await waitHealthy(seconds: waitSeconds)
        printEndpoints(layout)
    }

    private func waitHealthy(seconds: Int) async throws {
        let client = RPCClient(configuration: try ClientConfiguration(environment: StackLayout.clientEnvironment()))
        defer { client.close() }
        let until = monotonicNanos() + UInt64(seconds) * 1_000_000_000
        for name in StackLayout.services {
            progress("waiting for \(name)")
            while true {
                if let reply = try? await client.call(HealthMethods.check, service: name, request: .init(),
                                                      options: .init(timeout: .seconds(1))),
                   reply.status == .serving {
                    progress("\(name) SERVING (\(reply.instanceID))")
                    break
                }
                if monotonicNanos() > until {
                    writeError("caremesh: \(name) did not become healthy in \(seconds) s; see its log")
                    throw ExitCode(Int32(StatusCode.unavailable.rawValue))
                }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    private func printEndpoints(_ layout: StackLayout) {
        let env = ProcessInfo.processInfo.environment
        print("""
        CareMesh is up.
          clients: \(env["CAREMESH_ROUTER_CLIENT_ENDPOINT"] ?? MDP.defaultClientEndpoint)
          workers: \(env["CAREMESH_ROUTER_WORKER_ENDPOINT"] ?? MDP.defaultWorkerEndpoint)
          http:    http://\(env["CAREMESH_HTTP_ADDRESS"] ?? "127.0.0.1:8080") (POST /v1/{service}/{Method}, /webhooks/{kind}/{provider}, /healthz, /metrics)
          logs:    \(layout.logs.path)/{router,identity,dispatch,alerts,messaging}.log
          data:    \(LocalDatabase.isExternal(env) ? "DATABASE_URL" : layout.home.appendingPathComponent("pg").path)
          schemas: caremesh migrate identity status
          try:     caremesh call identity /caremesh.health.v1.Health/Check '{}'
          stop:    caremesh down
        """)
    }
}

func progress(_ text: String) {
    FileHandle.standardOutput.write(Data("caremesh: \(text)\n".utf8))
}

/// `caremesh down`: stops a stack started by `up`.
struct Down: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop the stack started by `caremesh up`.")

    @Option(help: "Seconds to wait for a graceful stop.") var waitSeconds: Int = 30

    func run() async throws {
        let layout = StackLayout()
        guard let pid = layout.runningSupervisor() else {
            print("caremesh: no stack is up")
            return
        }
        kill(pid, SIGTERM)
        let until = Date().addingTimeInterval(TimeInterval(waitSeconds))
        while kill(pid, 0) == 0 && Date() < until { try await Task.sleep(for: .milliseconds(100)) }
        if kill(pid, 0) == 0 {
            writeError("caremesh: the supervisor (pid \(pid)) did not stop in \(waitSeconds) s")
            throw ExitCode.failure
        }
        print("caremesh: stopped")
    }
}

/// `caremesh status`: whether a stack is up, and each service's health.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show whether a stack is up and each service's health.")

    @OptionGroup var router: RouterOptions

    func run() async throws {
        let layout = StackLayout()
        if let pid = layout.runningSupervisor() {
            print("supervisor pid \(pid); logs in \(layout.logs.path)")
        } else {
            print("no supervisor is running here (\(layout.home.path))")
        }
        try await checkHealth([], router: router)
    }
}

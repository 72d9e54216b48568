import AsyncHTTPClient
import CareMeshContracts
import CareMeshRPC
import CareMeshRouter
import CareMeshTesting
import Foundation
import IdentityService
import Testing

/// The `caremesh` executable, run as a user would.
@Suite(.timeLimit(.minutes(3)))
struct CLITests {
    var caremesh: URL { TestStack.binaries.appendingPathComponent("caremesh") }

    @Test("call: JSON in and out; errors exit non-zero with the code's name")
    func call() async throws {
        try await withBenchStack(handlers: echoHandlers(Probe(), instance: "cli")) { router, client in
            let ep = router.boundEndpoints.client
            let ok = try await TestStack.run(caremesh, ["call", "bench", "/caremesh.bench.v1.Bench/Echo", #"{"payload":"aGk="}"#, "--router", ep])
            #expect(ok.status == 0, "\(ok.stderr)")
            #expect(ok.stdout.contains(#""payload":"aGk=""#))
            #expect(ok.stdout.contains(#""instanceId":"cli""#))
            let health = try await TestStack.run(caremesh, ["call", "bench", "Health/Check", "--router", ep])
            #expect(health.stdout.contains("SERVING"))
            let missing = try await TestStack.run(caremesh, ["call", "nobody", "Health/Check", "{}", "--router", ep, "--timeout-ms", "300"])
            #expect(missing.status == 14)
            #expect(missing.stderr.contains("UNAVAILABLE"))
            let badJSON = try await TestStack.run(caremesh, ["call", "bench", "Bench/Echo", #"{"nope":1}"#, "--router", ep])
            #expect(badJSON.status == 3)
            #expect(badJSON.stderr.contains("INVALID_ARGUMENT"))
            let badMethod = try await TestStack.run(caremesh, ["call", "bench", "Bench/Nope", "{}", "--router", ep])
            #expect(badMethod.status != 0)
        }
    }

    @Test("up --detach / status / health / a crashed child restarted / down")
    func upStatusDown() async throws {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("caremesh-up-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: home) }
        // Two ports each found free (port + 1 may be any connection's ephemeral source port).
        let port = TestStack.freePort(), workerPort = TestStack.freePort(), httpPort = TestStack.freePort(), sandboxPort = TestStack.freePort()
        // CAREMESH_ROUTER too: a caller's own (it wins over the client endpoint) must not leak in.
        let env = ["CAREMESH_HOME": home.path,
                   "CAREMESH_ROUTER": "tcp://127.0.0.1:\(port)",
                   "CAREMESH_ROUTER_CLIENT_ENDPOINT": "tcp://127.0.0.1:\(port)",
                   "CAREMESH_ROUTER_WORKER_ENDPOINT": "tcp://127.0.0.1:\(workerPort)",
                   "CAREMESH_HTTP_ADDRESS": "127.0.0.1:\(httpPort)", "SANDBOX_PORT": "\(sandboxPort)",
                   // scrypt at its production cost takes ~4 s a password in a debug build on two
                   // busy vCPUs, which a Register's 5 s deadline cannot be sure of.
                   "IDENTITY_SCRYPT_LN": "12",
                   // The stack's own bus keys (made under CAREMESH_HOME), not the test routers'.
                   BusSettings.routerPublicKey: ""]
        let up = try await TestStack.run(caremesh, ["up", "--detach"], environment: env, timeout: .seconds(90))
        defer { _ = try? FileManager.default.contentsOfDirectory(atPath: home.path) }
        // On failure, the stack's own logs say why (they go with the temporary home).
        let logs = ["supervisor", "router", "identity"].map { name in
            let lines = ((try? String(contentsOf: home.appendingPathComponent("logs/\(name).log"), encoding: .utf8)) ?? "").split(separator: "\n")
            // A crash's first lines say what trapped and where (its backtrace's end is registers).
            let crash = lines.filter { $0.contains("Fatal error") || $0.contains("Crash") || $0.hasPrefix("0 ") || $0.hasPrefix("1 ") }
            return "--- \(name).log (crash lines, then last lines)\n" + (crash.prefix(10) + lines.suffix(15)).joined(separator: "\n")
        }.joined(separator: "\n")
        #expect(up.status == 0, "\(up.stdout)\n\(up.stderr)\n\(logs)")
        #expect(up.stdout.contains("CareMesh is up"))
        #expect(up.stdout.contains("identity SERVING"))
        var migrationsText = ""
        do {
            let status = try await TestStack.run(caremesh, ["status"], environment: env)
            #expect(status.status == 0, "\(status.stdout)")
            #expect(status.stdout.components(separatedBy: "SERVING").count - 1 == 4)
            let call = try await TestStack.run(caremesh, ["call", "identity", "/caremesh.health.v1.Health/Check", "{}"], environment: env)
            #expect(call.stdout.contains(#""status":"SERVING""#))
            // Its own PostgreSQL, schemas migrated on start.
            // down N / up through the CLI, on the stack's own database.
            // (The latest of identity's migrations, whichever it is now.)
            let latest = IdentityService.migrations.last!.version
            let down = try await TestStack.run(caremesh, ["migrate", "identity", "down", "1"], environment: env)
            #expect(down.status == 0 && down.stdout.contains("reverted \(latest)"), "\(down.stdout)\(down.stderr)")
            let reup = try await TestStack.run(caremesh, ["migrate", "identity", "up"], environment: env)
            #expect(reup.status == 0 && reup.stdout.contains("applied \(latest)"), "\(reup.stdout)\(reup.stderr)")
            let migrations = try await TestStack.run(caremesh, ["migrate", "identity", "status"], environment: env)
            #expect(migrations.status == 0, "\(migrations.stderr)")
            #expect(migrations.stdout.contains("0102 people") && migrations.stdout.contains("0103 refresh_rotation") && !migrations.stdout.contains("pending"))
            migrationsText = migrations.stdout
            try await StackChecks.verify(router: "tcp://127.0.0.1:\(port)", environment: env)

            // A crashed child comes back.
            let pidFile = home.appendingPathComponent("run/identity.pid")
            let pid = try #require(Int32(try String(contentsOf: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
            kill(pid, SIGKILL)
            var back = false
            for _ in 0..<100 {
                try await Task.sleep(for: .milliseconds(100))
                let again = try await TestStack.run(caremesh, ["call", "identity", "Health/Check", "{}", "--timeout-ms", "500"], environment: env)
                let newPid = Int32((try? String(contentsOf: pidFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "")
                if again.status == 0 && newPid != pid { back = true; break }
            }
            #expect(back, "identity was not restarted")
        }
        // The router's HTTP edge answers; the provider sandbox runs as a child too.
        let health = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(httpPort)/healthz"), timeout: .seconds(10))
        #expect(health.status == .ok)
        let sandboxPid = Int32((try? String(contentsOf: home.appendingPathComponent("run/sandbox.pid"), encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "")
        #expect(sandboxPid.map { kill($0, 0) == 0 } == true)
        let down = try await TestStack.run(caremesh, ["down"], environment: env, timeout: .seconds(60))
        #expect(down.status == 0, "\(down.stderr)")
        // Every child stopped with the stack, the sandbox included.
        if let sandboxPid { #expect(kill(sandboxPid, 0) != 0) }
        let after = try await TestStack.run(caremesh, ["status"], environment: env)
        #expect(after.status != 0)
        #expect(after.stdout.contains("no supervisor"))
        #expect(!FileManager.default.fileExists(atPath: home.appendingPathComponent("pg/data/postmaster.pid").path),
                "down stops PostgreSQL too")

        // The data survives down/up: the migrations applied the first time are not applied again.
        let before = try await TestStack.run(caremesh, ["up", "--detach"], environment: env, timeout: .seconds(90))
        #expect(before.status == 0, "\(before.stdout)\n\(before.stderr)")
        let again = try await TestStack.run(caremesh, ["migrate", "identity", "status"], environment: env)
        #expect(again.stdout.contains("0003 jobs") && !again.stdout.contains("pending"))
        let firstApplied = migrationsText.split(separator: "\n").filter { $0.contains("applied") }
        #expect(again.stdout.split(separator: "\n").filter { $0.contains("applied") } == firstApplied)
        _ = try await TestStack.run(caremesh, ["down"], environment: env, timeout: .seconds(60))
    }
}

import ArgumentParser
import CareMeshAuth
import CareMeshContracts
import CareMeshRPC
import Crypto
import Foundation
import Synchronization
import ZMQ

/// `caremesh bench identity`: sign-ins, refreshes and authenticated calls through a running
/// stack's router, and the router's token verification in-process.
struct IdentityBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "identity",
        abstract: "Logins/s, refreshes/s and authenticated calls/s through the router; token verification µs.",
        discussion: """
            Needs a running stack (caremesh up, release build recommended) whose router requires \
            tokens. It registers --accounts accounts (bench-…@example.org) and then runs each load for \
            --duration seconds after --warmup. Logins are bounded by the password hash: the stack's \
            IDENTITY_SCRYPT_LN (default 17: N=2^17, r=8, p=1, 128 MiB) and IDENTITY_HASH_CONCURRENCY. \
            When CAREMESH_HOME is the stack's, each line also gives the CPU seconds the router, identity and \
            PostgreSQL spent in the measured window, and calls per CPU-second of each.
            """
    )

    @OptionGroup var router: RouterOptions
    @Option(help: "Calls in flight (default: twice the cores).") var concurrency: Int?
    @Option(help: "Accounts to register (default: the concurrency).") var accounts: Int?
    @Option(help: "Warm-up seconds per load.") var warmup = 2.0
    @Option(help: "Measured seconds per load.") var duration = 10.0
    @Option(help: "Tokens verified in the in-process verification benchmark.") var tokens = 20_000
    @Option(help: "Loads to run, of verify (in-process, needs no stack), login, refresh, whoami, health.")
    var loads: [String] = ["verify", "login", "refresh", "whoami", "health"]

    static let knownLoads: Set = ["verify", "login", "refresh", "whoami", "health"]

    func validate() throws {
        if let concurrency, concurrency < 1 { throw ValidationError("--concurrency must be at least 1") }
        if let accounts, accounts < 1 { throw ValidationError("--accounts must be at least 1") }
        if tokens < 1 { throw ValidationError("--tokens must be at least 1") }
        if let unknown = loads.first(where: { !Self.knownLoads.contains($0) }) {
            throw ValidationError("unknown load '\(unknown)': choose from \(Self.knownLoads.sorted().joined(separator: ", "))")
        }
    }

    func run() async throws {
        print(machineLine())
        if loads.contains("verify") { print(Self.verification(count: tokens)) }
        guard loads.contains(where: { $0 != "verify" }) else { return }
        let c = concurrency ?? 2 * ProcessInfo.processInfo.activeProcessorCount
        let n = accounts ?? c
        let client = RPCClient(configuration: try router.clientConfiguration(), logger: cliLogger("caremesh.bench"))
        defer { client.close() }
        let password = "bench passphrase \(UInt64.random(in: 0...UInt64.max))"
        let run = UInt32.random(in: 0...UInt32.max)

        // Accounts, registered at `c` at a time (each costs one hash too).
        let started = monotonicNanos()
        let emails = (0..<n).map { "bench-\(run)-\($0)@example.org" }
        _ = try await registerBenchAccounts(client, emails: emails, password: password, concurrency: c)
        let seconds = Double(monotonicNanos() - started) / 1e9
        print(String(format: "identity register: accounts=%d seconds=%.1f per_s=%.1f", n, seconds, Double(n) / seconds))

        /// A sign-in as task `task`'s account.
        @Sendable func login(_ task: Int, timeout: Duration) async throws(RPCError) -> Caremesh_Identity_V1_Session {
            var r = Caremesh_Identity_V1_LoginRequest()
            r.email = emails[task % n]
            r.password = password
            return try await client.call(IdentityMethods.login, request: r, options: .init(timeout: timeout)).session
        }

        let processes = StackProcesses(layout: StackLayout(), names: ["router", "identity"])
        let load = Load(concurrency: c, warmup: warmup, duration: duration, processes: processes)
        let hashing = "scrypt_ln=\(ProcessInfo.processInfo.environment["IDENTITY_SCRYPT_LN"] ?? "17 (default)") concurrency=\(c)"
        if loads.contains("login") {
            let logins = await load.run { task in _ = try await login(task, timeout: .seconds(60)) }
            print(logins.line("identity login", hashing))
        }

        // One session per task, refreshed back to back (each refresh rotates the token).
        let sessions = try await withThrowingTaskGroup(of: (Int, Caremesh_Identity_V1_Session).self) { group in
            for task in 0..<c {
                group.addTask { (task, try await login(task, timeout: .seconds(120))) }
            }
            var out = [Caremesh_Identity_V1_Session](repeating: .init(), count: c)
            for try await (task, session) in group { out[task] = session }
            return out
        }
        let current = sessions.map(SessionBox.init)
        if loads.contains("refresh") {
            let refreshes = await load.run { task in
                var r = Caremesh_Identity_V1_RefreshRequest()
                r.refreshToken = current[task].session.withLock { $0.refreshToken }
                let session = try await client.call(IdentityMethods.refresh, request: r).session
                current[task].session.withLock { $0 = session }
            }
            print(refreshes.line("identity refresh", "concurrency=\(c)"))
        }

        // Authenticated calls: the router verifies the token (cached after its first call).
        @Sendable func auth(_ task: Int) -> CallOptions {
            CallOptions(metadata: ["authorization": "Bearer \(current[task].session.withLock { $0.accessToken })"])
        }
        if loads.contains("whoami") {
            let whoAmI = await load.run { task in _ = try await client.call(IdentityMethods.whoAmI, request: .init(), options: auth(task)) }
            print(whoAmI.line("identity whoami (token + a database read)", "concurrency=\(c)"))
        }
        if loads.contains("health") {
            let health = await load.run { task in
                _ = try await client.call(HealthMethods.check, service: "identity", request: .init(), options: auth(task))
            }
            print(health.line("identity health with a token (router verification, no database)", "concurrency=\(c)"))
        }
    }

    /// A task's current session (its refresh token rotates on every refresh).
    final class SessionBox: Sendable {
        let session: Mutex<Caremesh_Identity_V1_Session>
        init(_ session: Caremesh_Identity_V1_Session) { self.session = Mutex(session) }
    }

    /// What the router spends on a token: Ed25519 signature checks of `count` distinct tokens
    /// (the first call of each), then the cached path they take afterwards.
    static func verification(count: Int) -> String {
        let key = Curve25519.Signing.PrivateKey()
        let now = Int64(Date().timeIntervalSince1970)
        let tokens = (0..<count).map { i in
            let claims = AccessClaims(iss: AccessToken.issuer, aud: AccessToken.audience, sub: UUID().uuidString.lowercased(),
                                      roles: ["volunteer"], sid: UUID().uuidString.lowercased(), iat: now, nbf: now,
                                      exp: now + 900, jti: "\(i)")
            return try! AccessToken.sign(claims, kid: "bench", key: key)
        }
        var verifier = TokenVerifier(cacheLimit: count + 1)
        verifier.setKeys(["bench": key.publicKey])
        var failures = 0
        let t0 = monotonicNanos()
        for t in tokens where (try? verifier.verify(t, now: now)) == nil { failures += 1 }
        let t1 = monotonicNanos()
        for t in tokens where (try? verifier.verify(t, now: now)) == nil { failures += 1 }
        let t2 = monotonicNanos()
        // The Ed25519 check alone, on the same bytes (what no parser change can remove).
        let message = Data(tokens[0].utf8.prefix { $0 != UInt8(ascii: ".") }), signature = try! key.signature(for: message)
        let t3 = monotonicNanos()
        for _ in 0..<count where !key.publicKey.isValidSignature(signature, for: message) { failures += 1 }
        let t4 = monotonicNanos()
        func us(_ a: UInt64, _ b: UInt64) -> Double { Double(b - a) / Double(count) / 1000 }
        return String(format: "router token verification: tokens=%d first_us=%.2f cached_us=%.3f ed25519_only_us=%.2f failures=%d",
                      count, us(t0, t1), us(t1, t2), us(t3, t4), failures)
    }
}

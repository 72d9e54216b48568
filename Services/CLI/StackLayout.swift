import CareMeshRPC
import CareMeshStore
import Foundation
import ZMQ

/// Where a local stack keeps its state: `$CAREMESH_HOME`, else `.caremesh` in the current
/// folder. `logs/NAME.log` per process, `run/supervisor.pid` while `up` supervises.
struct StackLayout {
    /// The domain services, started after the router.
    static let services = Provisioner.services

    let home: URL

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        let path = environment["CAREMESH_HOME"] ?? FileManager.default.currentDirectoryPath + "/.caremesh"
        home = URL(fileURLWithPath: path).standardizedFileURL
    }

    var logs: URL { home.appendingPathComponent("logs") }
    var run: URL { home.appendingPathComponent("run") }
    var supervisorPID: URL { run.appendingPathComponent("supervisor.pid") }
    func log(_ name: String) -> URL { logs.appendingPathComponent("\(name).log") }

    /// Identity's key-encryption key for this stack: 32 random bytes (base64), made once and
    /// kept in `$CAREMESH_HOME/identity-kek` (0600). It seals the token-signing keys stored in
    /// the database, so it must outlive restarts.
    func identityKeyEncryptionKey() throws -> String { try secret("identity-kek") }

    /// A service's own sign-in secret (`<SERVICE>_SERVICE_SECRET`), kept like the KEK in
    /// `$CAREMESH_HOME/<service>-secret`.
    func serviceSecret(_ service: String) throws -> String { try secret("\(service)-secret") }

    /// The sandbox provider's settings and messaging's, pointing at each other: the sandbox on
    /// `SANDBOX_PORT` (8090) with this stack's own credentials, messaging sending there with
    /// Twilio first and Orange as failover, emails through its SendGrid, pushes through its FCM and
    /// APNs (credentials made once in `$CAREMESH_HOME`), callbacks to the router's HTTP edge.
    /// Values already in `env` are kept.
    func sandboxEnvironment(_ env: inout [String: String]) throws {
        func hex(_ name: String) throws -> String {
            Data(base64Encoded: try secret(name))!.map { String(format: "%02x", $0) }.joined()
        }
        let port = env["SANDBOX_PORT"] ?? "8090"
        let base = "http://127.0.0.1:\(port)"
        let values: [String: String] = [
            "SANDBOX_PORT": port,
            "SANDBOX_TWILIO_AUTH_TOKEN": try hex("sandbox-twilio-token"),
            "SANDBOX_ORANGE_CLIENT_SECRET": try hex("sandbox-orange-secret"),
            "MESSAGING_TWILIO_URL": base,
            "MESSAGING_TWILIO_ACCOUNT_SID": "AC00000000000000000000000000000000",
            "MESSAGING_TWILIO_FROM": "+15005550006",
            "MESSAGING_ORANGE_URL": base,
            "MESSAGING_ORANGE_CLIENT_ID": "sandbox-orange-client",
            "MESSAGING_ORANGE_SENDER": "+33700000000",
            "MESSAGING_ORANGE_WEBHOOK_KEY": try hex("sandbox-orange-webhook-key"),
            "MESSAGING_WEBHOOK_BASE_URL": "http://" + (env["CAREMESH_HTTP_ADDRESS"] ?? "127.0.0.1:8080"),
            "SANDBOX_SENDGRID_API_KEY": "SG." + (try hex("sandbox-sendgrid-key")),
            "MESSAGING_SENDGRID_URL": base,
            "MESSAGING_EMAIL_FROM": "no-reply@caremesh.local",
        ]
        for (key, value) in values where (env[key] ?? "").isEmpty { env[key] = value }
        // Push: FCM and APNs credentials of the stack's own, which the sandbox verifies.
        if (env["MESSAGING_FCM_CREDENTIALS_FILE"] ?? "").isEmpty && (env["MESSAGING_APNS_KEY_FILE"] ?? "").isEmpty {
            let (fcm, apns) = try SandboxPushKeys.make(in: home, sandboxURL: base)
            env.merge(SandboxPushKeys.environment(fcm: fcm.path, apns: apns.path, sandboxURL: base)) { $1 }
        }
        env["MESSAGING_TWILIO_AUTH_TOKEN"] = env["SANDBOX_TWILIO_AUTH_TOKEN"]
        env["MESSAGING_ORANGE_CLIENT_SECRET"] = env["SANDBOX_ORANGE_CLIENT_SECRET"]
        env["MESSAGING_SENDGRID_API_KEY"] = env["SANDBOX_SENDGRID_API_KEY"]
    }

    /// The bus's keys, made once under `$CAREMESH_HOME/bus/` (`BusKeyFiles.makeStack`: the
    /// router's pair, one per service, and the allowlist `workers`), wired into `env` as files: the
    /// router's secret and public key, each service's secret key, the allowlist. Values already in
    /// `env` are kept; nothing is done when `CAREMESH_BUS_SECURITY=off`.
    func busEnvironment(_ env: inout [String: String]) throws {
        guard try BusSettings.secured(env) else { return }
        try BusKeyFiles.makeStack(in: bus)
        func setIfUnset(_ name: String, _ file: String) {
            if !BusSettings.isSet(name, env) { env["\(name)_FILE"] = bus.appendingPathComponent(file).path }
        }
        setIfUnset(BusSettings.routerSecretKey, "router.key")
        setIfUnset(BusSettings.routerPublicKey, "router.pub")
        setIfUnset(BusSettings.workerKeys, "workers")
        for service in Self.services { setIfUnset("\(service.uppercased())_BUS_SECRET_KEY", "\(service).key") }
    }

    /// Where `up` keeps the bus's keys.
    var bus: URL { home.appendingPathComponent("bus") }

    /// The environment of a command that calls the router: the process's own, plus the local
    /// stack's router key (`$CAREMESH_HOME/bus/router.pub`) when no router key is given.
    static func clientEnvironment() -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        let pub = StackLayout(environment: env).bus.appendingPathComponent("router.pub")
        if !BusSettings.isSet(BusSettings.routerPublicKey, env),
           FileManager.default.fileExists(atPath: pub.path) {
            env["\(BusSettings.routerPublicKey)_FILE"] = pub.path
        }
        return env
    }

    /// 32 random bytes (base64) made once and kept in `$CAREMESH_HOME/<name>` (0600).
    private func secret(_ name: String) throws -> String {
        let file = home.appendingPathComponent(name)
        if let text = try? String(contentsOf: file, encoding: .utf8) {
            return text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        var bytes = [UInt8](repeating: 0, count: 32)
        var g = SystemRandomNumberGenerator()
        for i in bytes.indices { bytes[i] = g.next() }
        let key = Data(bytes).base64EncodedString()
        guard FileManager.default.createFile(atPath: file.path, contents: Data(key.utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw CocoaError(.fileWriteUnknown)
        }
        return key
    }

    func prepare() throws {
        try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true)
    }

    /// The pid of a running supervisor, if any.
    func runningSupervisor() -> pid_t? {
        guard let text = try? String(contentsOf: supervisorPID, encoding: .utf8),
              let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), kill(pid, 0) == 0 else { return nil }
        return pid
    }

    /// The folder holding this executable and its siblings (router, identity, …).
    static var binaries: URL {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    }
}

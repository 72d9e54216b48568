import Foundation
import Logging
import PostgresNIO

/// A private PostgreSQL cluster under a folder of the project: made once (`initdb`), started
/// on a free loopback port, stopped, started again with its data. What `caremesh up` runs when
/// no `DATABASE_URL` is set, and what the tests run.
///
/// Layout of `directory`: `data/` (the cluster, owned by the `postgres` user when we run as
/// root, since initdb refuses root), `run/` (its unix socket), `log/postgres.log`, and
/// `secrets.json` (0600: the superuser's and each service role's password, made once).
public struct EmbeddedPostgres: Sendable {
    public let directory: URL
    public let databaseName: String
    public let logger: Logger

    public init(directory: URL, databaseName: String = "caremesh", logger: Logger) {
        self.directory = directory
        self.databaseName = databaseName
        self.logger = logger
    }

    var dataDirectory: URL { directory.appendingPathComponent("data") }
    var socketDirectory: URL { directory.appendingPathComponent("run") }
    var logDirectory: URL { directory.appendingPathComponent("log") }
    var logFile: URL { logDirectory.appendingPathComponent("postgres.log") }
    var secretsFile: URL { directory.appendingPathComponent("secrets.json") }
    var portFile: URL { directory.appendingPathComponent("port") }

    struct Secrets: Codable {
        var superuser: String
        var services: [String: String]
    }

    /// The server binaries: `$CAREMESH_PG_BIN`, else the newest /usr/lib/postgresql/*/bin.
    public static func binDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> URL {
        if let dir = environment["CAREMESH_PG_BIN"] { return URL(fileURLWithPath: dir) }
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
            .compactMap(Int.init).sorted()
        guard let v = versions.last, FileManager.default.isExecutableFile(atPath: "\(root)/\(v)/bin/initdb") else {
            throw StoreError.configuration("PostgreSQL server binaries not found under \(root): apt-get install -y postgresql postgresql-15-postgis-3")
        }
        return URL(fileURLWithPath: "\(root)/\(v)/bin")
    }

    public var isInitialized: Bool {
        FileManager.default.fileExists(atPath: dataDirectory.appendingPathComponent("PG_VERSION").path)
    }

    /// Creates the cluster if it does not exist yet, starts it if it is not running, makes the
    /// database, provisions roles, schemas and extensions; returns the superuser URL.
    @discardableResult
    public func start() async throws -> DatabaseURL {
        let fm = FileManager.default
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        let secrets = try loadOrCreateSecrets()
        if !isInitialized { try initialize(secrets) }
        let port: Int
        if let running = runningPort() {
            port = running
        } else {
            port = try choosePort()
            for dir in [socketDirectory, logDirectory] {
                try fm.createDirectory(at: dir, withIntermediateDirectories: true)
                try handToPostgres(dir)
            }
            let bin = try Self.binDirectory()
            try run(bin.appendingPathComponent("pg_ctl").path, [
                "-D", dataDirectory.path, "-l", logFile.path, "-w", "-t", "60",
                "-o", "-p \(port) -k \(socketDirectory.path) -c listen_addresses=127.0.0.1", "start",
            ], asPostgres: true, what: "starting PostgreSQL (log: \(logFile.path))")
            logger.info("PostgreSQL started", metadata: ["port": "\(port)", "data": "\(dataDirectory.path)"])
        }
        let server = superuser(port: port, secrets)
        try await Provisioner.createDatabase(databaseName, on: server, logger: logger)
        let admin = server.with(database: databaseName)
        try await Provisioner.provision(admin: admin, passwords: secrets.services, logger: logger)
        return admin
    }

    /// Stops the cluster if it runs (fast shutdown: sessions end, data is safe).
    public func stop() throws {
        guard isInitialized, runningPort() != nil else { return }
        let bin = try Self.binDirectory()
        try run(bin.appendingPathComponent("pg_ctl").path, ["-D", dataDirectory.path, "-m", "fast", "-w", "stop"],
                asPostgres: true, what: "stopping PostgreSQL")
    }

    /// The superuser URL of the running cluster's database, or nil if it is not running.
    public func runningAdminURL() throws -> DatabaseURL? {
        guard isInitialized, let port = runningPort() else { return nil }
        return superuser(port: port, try loadOrCreateSecrets()).with(database: databaseName)
    }

    /// Each service's URL (its own role) on the running cluster.
    public func serviceURLs(admin: DatabaseURL) throws -> [String: DatabaseURL] {
        Provisioner.serviceURLs(admin: admin, passwords: try servicePasswords())
    }

    /// Each service role's password (made once, kept in `secrets.json`).
    public func servicePasswords() throws -> [String: String] {
        try loadOrCreateSecrets().services
    }

    /// The superuser on loopback, `postgres` database.
    private func superuser(port: Int, _ secrets: Secrets) -> DatabaseURL {
        DatabaseURL(host: "127.0.0.1", port: port, username: "postgres", password: secrets.superuser,
                    database: "postgres", sslMode: .disable)
    }

    /// The port of the running postmaster (from `postmaster.pid`), if it runs.
    public func runningPort() -> Int? {
        guard let text = try? String(contentsOf: dataDirectory.appendingPathComponent("postmaster.pid"), encoding: .utf8) else {
            return nil
        }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count > 3, let pid = Int32(lines[0]), let port = Int(lines[3]), kill(pid, 0) == 0 else { return nil }
        return port
    }

    // MARK: - Plumbing

    private func loadOrCreateSecrets() throws -> Secrets {
        if let data = try? Data(contentsOf: secretsFile), let s = try? JSONDecoder().decode(Secrets.self, from: data) {
            return s
        }
        var services: [String: String] = [:]
        for s in Provisioner.services { services[s] = Provisioner.newPassword() }
        let s = Secrets(superuser: Provisioner.newPassword(), services: services)
        let data = try JSONEncoder().encode(s)
        guard FileManager.default.createFile(atPath: secretsFile.path, contents: data, attributes: [.posixPermissions: 0o600]) else {
            throw StoreError.configuration("cannot write \(secretsFile.path)")
        }
        return s
    }

    private func initialize(_ secrets: Secrets) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: dataDirectory, withIntermediateDirectories: true)
        try fm.setAttributes([.posixPermissions: 0o700], ofItemAtPath: dataDirectory.path)
        try handToPostgres(dataDirectory)
        // The password file is read by initdb (as postgres) and removed at once.
        let pwfile = directory.appendingPathComponent("initdb.pw")
        guard fm.createFile(atPath: pwfile.path, contents: Data(secrets.superuser.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw StoreError.configuration("cannot write \(pwfile.path)")
        }
        try handToPostgres(pwfile)
        defer { try? fm.removeItem(at: pwfile) }
        let bin = try Self.binDirectory()
        try run(bin.appendingPathComponent("initdb").path, [
            "-D", dataDirectory.path, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
            "--pwfile=\(pwfile.path)", "--encoding=UTF8", "--locale=C.UTF-8",
        ], asPostgres: true, what: "initdb")
        logger.info("PostgreSQL cluster created", metadata: ["data": "\(dataDirectory.path)"])
    }

    /// A free loopback port: the one used before if it is still free, else a new one.
    private func choosePort() throws -> Int {
        if let text = try? String(contentsOf: portFile, encoding: .utf8),
           let p = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), LoopbackPort.isFree(p) {
            return p
        }
        for _ in 0..<50 {
            let p = Int.random(in: 20_000...40_000)
            if LoopbackPort.isFree(p) {
                try String(p).write(to: portFile, atomically: true, encoding: .utf8)
                return p
            }
        }
        throw StoreError.configuration("no free port for PostgreSQL")
    }

    private var isRoot: Bool { getuid() == 0 }

    /// initdb and the server refuse root: as root, the server's files belong to `postgres`.
    private func handToPostgres(_ url: URL) throws {
        guard isRoot else { return }
        try run("/bin/chown", ["-R", "postgres:postgres", url.path], asPostgres: false, what: "chown to postgres")
        // The server must be able to reach its folder: every parent needs search permission.
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory)
        let check = try? runCapture("/usr/sbin/runuser", ["-u", "postgres", "--", "test", isDirectory.boolValue ? "-x" : "-r", url.path])
        if check?.0 != 0 {
            throw StoreError.configuration("the postgres user cannot reach \(url.path) (a parent folder is not searchable); set CAREMESH_HOME to a folder it can reach")
        }
    }

    private func run(_ executable: String, _ arguments: [String], asPostgres: Bool, what: String) throws {
        let (status, output) = asPostgres && isRoot
            ? try runCapture("/usr/sbin/runuser", ["-u", "postgres", "--", executable] + arguments)
            : try runCapture(executable, arguments)
        guard status == 0 else {
            throw StoreError.configuration("\(what) failed (exit \(status)): \(output.suffix(2_000))")
        }
    }

    /// Runs a command to completion with its output in a file, by posix_spawn and a blocking
    /// waitpid (start-up only). Not Foundation's Process: its exit monitor was seen to miss the
    /// exit of `runuser … pg_ctl start`, whose server lives on, and to wait forever.
    private func runCapture(_ executable: String, _ arguments: [String]) throws -> (Int32, String) {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("caremesh-pg-\(UUID().uuidString).out")
        defer { try? FileManager.default.removeItem(at: out) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, out.path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Run from / (postgres may not read our folder), through env(1).
        let argv = (["/usr/bin/env", "-C", "/", executable] + arguments).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, "/usr/bin/env", &actions, nil, argv, environ)
        guard rc == 0 else { throw StoreError.configuration("cannot run \(executable): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exited = (status & 0x7f) == 0
        let code = exited ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        let data = (try? Data(contentsOf: out)) ?? Data()
        return (code, String(decoding: data, as: UTF8.self))
    }

}

/// TCP ports on 127.0.0.1, found by binding a socket and closing it again.
public enum LoopbackPort {
    /// Whether `port` can be bound now. With SO_REUSEADDR, as PostgreSQL binds: connections it
    /// closed linger in TIME_WAIT on its port after a stop, and must not make the port look
    /// taken (the services keep the URL they got).
    public static func isFree(_ port: Int) -> Bool { bind(port) != nil }

    /// A port that was free a moment ago (the kernel's choice for port 0).
    public static func ephemeral() -> Int { bind(0) ?? 0 }

    /// Binds `port` (0: any), returns the port bound, closes the socket.
    private static func bind(_ port: Int) -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) { a in
            a.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
            }
        }
        return bound ? Int(UInt16(bigEndian: addr.sin_port)) : nil
    }
}

import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import ServiceLifecycle

/// PostgreSQL for tests, found the way the stack finds it: `CAREMESH_TEST_DATABASE_URL` (a
/// superuser URL, e.g. the docker-compose server: postgres://postgres:…@127.0.0.1:5432/postgres)
/// if set, else a private cluster under `.build/caremesh-test-pg`, started once per test
/// process (scripts/test.sh wipes it before and stops it after the run). Each suite asks for
/// a fresh database, provisioned like production: one role and schema per service.
public struct TestDatabase: Sendable {
    /// Superuser on the fresh database.
    public let admin: DatabaseURL
    /// Each service's own role on the fresh database.
    public let services: [String: DatabaseURL]

    public func url(_ service: String) -> DatabaseURL { services[service]! }

    /// Environment a service process would get: `<SERVICE>_DATABASE_URL` for each, each
    /// service's sign-in secret, and identity's key-encryption key (one per test process) with
    /// a cheaper scrypt cost (N = 2^14) so sign-in tests do not spend seconds hashing.
    public var environment: [String: String] {
        var env: [String: String] = ["IDENTITY_KEY_ENCRYPTION_KEY": Self.keyEncryptionKey, "IDENTITY_SCRYPT_LN": "14"]
        for service in Provisioner.servicesWithSecrets {
            env[ServiceCredentials.variable(for: service)] = Self.serviceSecret(service)
        }
        for (s, u) in services { env["\(s.uppercased())_DATABASE_URL"] = u.urlString }
        // The test bus's keys: a service made from this environment can reach a test router.
        env.merge(TestStack.BusKeys.environment(secured: true)) { old, _ in old }
        return env
    }

    public static let logger = ServiceRunner.quietLogger("caremesh.test.db")

    /// The sign-in secret of `service` in tests (one per test process).
    public static func serviceSecret(_ service: String) -> String { "\(service)-\(secretSeed)" }
    static let secretSeed = UUID().uuidString + UUID().uuidString

    static let keyEncryptionKey: String = {
        var g = SystemRandomNumberGenerator()
        return Data((0..<32).map { _ in UInt8.random(in: 0...255, using: &g) }).base64EncodedString()
    }()

    /// The server: a superuser URL to its `postgres` database, plus the role passwords.
    struct Server: Sendable {
        var superuser: DatabaseURL
        var passwords: [String: String]
    }

    static let server = Task<Server, any Error> {
        let env = ProcessInfo.processInfo.environment
        if let text = env["CAREMESH_TEST_DATABASE_URL"], !text.isEmpty {
            var passwords: [String: String] = [:]
            for s in Provisioner.services { passwords[s] = Provisioner.newPassword() }
            return Server(superuser: try DatabaseURL(parsing: text), passwords: passwords)
        }
        let cluster = EmbeddedPostgres(directory: clusterDirectory, databaseName: "postgres", logger: logger)
        let admin = try await cluster.start()
        return Server(superuser: admin, passwords: try cluster.servicePasswords())
    }

    public static var clusterDirectory: URL {
        TestStack.packageRoot.appendingPathComponent(".build/caremesh-test-pg")
    }

    /// A new database named after `label`, provisioned (extensions, roles, schemas).
    public static func fresh(_ label: String) async throws -> TestDatabase {
        let server = try await server.value
        let clean = label.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "_" }
        let name = "t_\(String(clean.prefix(30)))_\(UInt32.random(in: 0...UInt32.max))"
        try await Provisioner.createDatabase(name, on: server.superuser, logger: logger)
        let admin = server.superuser.with(database: name)
        try await Provisioner.provision(admin: admin, passwords: server.passwords, logger: logger)
        return TestDatabase(admin: admin, services: Provisioner.serviceURLs(admin: admin, passwords: server.passwords))
    }
}

extension TestStack {
    /// Runs whole services (store, outbox, jobs, worker) around `body`, then shuts them down
    /// gracefully as SIGTERM would: workers drain first, the pool last.
    public static func withHosts<T: Sendable>(_ hosts: [ServiceHost], _ body: @Sendable () async throws -> T) async throws -> T {
        try await withServices(hosts.flatMap(\.services), body)
    }
}

import CareMeshRPC
import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import ServiceLifecycle

/// Assembles a domain service: its store (from `<SERVICE>_DATABASE_URL` or `DATABASE_URL`,
/// checked at once), its migrations (the platform's, then its own; applied on start unless
/// `<SERVICE>_MIGRATE_ON_START` or `CAREMESH_MIGRATE_ON_START` is `false`), its outbox
/// (served as `Events.Pull`), what it has waiting (`Health/Backlog`), its job runner (with the platform tables' retention,
/// `PlatformRetention`), and its worker.
///
/// The services are returned in start order; a `ServiceGroup` stops them in reverse: the
/// worker drains first, then jobs, the outbox listener, and the pool last.
public struct ServiceHost: Sendable {
    public let name: String
    public let store: Store
    public let outbox: Outbox
    public let worker: ServiceWorker
    public let jobs: JobRunner
    /// The service's own background parts (event consumers, its client of other services),
    /// started after the outbox and stopped after the job runner and the worker.
    public let background: [any Service]

    public var services: [any Service] { [store, outbox] + background + [jobs, worker] }

    /// What a service brings to its host: its RPC handlers, its job handlers by kind, its
    /// background parts, and what to do to its schema before it serves (seed rows, arm its
    /// timers). Built in one place, so an object serving both RPCs and jobs (a desk with a
    /// cache, say) exists once.
    public struct Parts {
        public typealias Prepare = @Sendable (PostgresConnection) async throws -> Void

        public var handlers: RPCHandlers
        public var jobs: [String: JobRunner.Handler]
        public var background: [any Service]
        /// Run in order on the host's one start-up connection, after the migrations.
        public var prepare: [Prepare]
        /// The service's own work queues, counted for `Health/Backlog` (see `Backlog`).
        public var queues: Backlog.Queues?

        public init(handlers: RPCHandlers = RPCHandlers(), jobs: [String: JobRunner.Handler] = [:], background: [any Service] = [],
                    prepare: [Prepare] = [], queues: Backlog.Queues? = nil) {
            self.handlers = handlers
            self.jobs = jobs
            self.background = background
            self.prepare = prepare
            self.queues = queues
        }
    }

    public static func make(
        service name: String, migrations: [Migration], environment: [String: String], logger: Logger,
        parts: (Store, Outbox) -> Parts = { _, _ in Parts() }
    ) async throws -> ServiceHost {
        let url = try DatabaseURL.forService(name, environment: environment)
        let store = try await Store.connect(url: url, logger: logger)
        let migrator = try Migrator.forService(name, own: migrations, logger: logger)
        if migrateOnStart(name, environment) {
            try await migrator.up(url)
        } else {
            // Not migrating is not an excuse to run against a schema this build does not match.
            try await migrator.requireUpToDate(url)
        }
        let outbox = Outbox(schema: name, store: store)
        var own = parts(store, outbox)
        let workerConfiguration = try WorkerConfiguration(service: name, environment: environment)
        outbox.register(in: &own.handlers)
        Backlog.register(in: &own.handlers, store: store, queues: own.queues, instanceID: workerConfiguration.instanceID)
        if let retention = try PlatformRetention(environment: environment) {
            own.jobs[PlatformRetention.job] = { job, c in try await retention.run(job, c, logger: logger) }
            own.prepare.insert({ c in try await PlatformRetention.arm(on: c, logger: logger) }, at: 0)
        }
        if !own.prepare.isEmpty {
            let prepare = own.prepare
            try await Store.withSingleConnection(url, timeout: .seconds(10), logger: logger) { c in
                for step in prepare { try await step(c) }
            }
        }
        let worker = ServiceWorker(configuration: workerConfiguration, handlers: own.handlers, logger: logger)
        let runner = JobRunner(store: store, handlers: own.jobs, logger: logger)
        return ServiceHost(name: name, store: store, outbox: outbox, worker: worker, jobs: runner, background: own.background)
    }

    static func migrateOnStart(_ name: String, _ environment: [String: String]) -> Bool {
        isOn(environment["\(name.uppercased())_MIGRATE_ON_START"] ?? environment["CAREMESH_MIGRATE_ON_START"])
    }

    /// A switch from the environment: on unless it says false, 0, no or off.
    static func isOn(_ value: String?) -> Bool {
        !["false", "0", "no", "off"].contains((value ?? "true").lowercased())
    }
}

/// Keeps a service's client of the others open until shutdown, then closes it (list it before
/// the parts that use it: services stop in reverse order).
public struct ClientLifetime: Service {
    public let client: RPCClient

    public init(_ client: RPCClient) { self.client = client }

    public func run() async throws {
        try? await gracefulShutdown()
        client.close()
    }
}

extension ServiceHost {
    /// The body of every service executable: logging from the environment, the host, then
    /// serving until SIGTERM/SIGINT. A start-up failure (database unreachable, a refused
    /// migration) is printed with its reason and exits 1.
    ///
    /// Swift concurrency's tasks run on NIO's event loops (the threads postgres-nio already
    /// uses) unless `CAREMESH_NIO_EXECUTOR=false`: a handler's query then resumes where its
    /// answer was read, instead of hopping to another pool's thread after every statement.
    /// Nothing blocking may run on the task pool (identity hashes on its own queue).
    public static func main(_ name: String, _ make: (Logger) async throws -> ServiceHost) async -> Never {
        if isOn(ProcessInfo.processInfo.environment["CAREMESH_NIO_EXECUTOR"]) {
            NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        }
        ServiceRunner.bootstrapLogging()
        let logger = Logger(label: "caremesh.\(name)")
        do {
            let host = try await make(logger)
            try await ServiceRunner.run(host.services, logger: logger)
            exit(0)
        } catch {
            FileHandle.standardError.write(Data("\(name): \(error)\n".utf8))
            exit(1)
        }
    }
}

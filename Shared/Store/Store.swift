import _ConnectionPoolModule
import CareMeshRPC
import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import ServiceLifecycle
import Synchronization
import ZMQ

/// A service's PostgreSQL: postgres-nio's `PostgresClient` pool, run as a `Service`.
///
/// - Start-up: `Store.connect` opens one connection first and fails at once with the server's
///   own reason (wrong password, unknown database, connection refused) instead of the pool's
///   minute of silent retries.
/// - Outage: the first connection failure marks the store down; while down every call fails
///   `UNAVAILABLE` at once, and a probe reconnects every `probeInterval` until the server is
///   back, then the store heals by itself. A call that waits longer than `acquireTimeout` for
///   a connection fails `UNAVAILABLE` too, so no call waits on a dead server until its deadline.
///
/// ```swift
/// let store = try await Store.connect(service: "identity", environment: env, logger: logger)
/// // run `store` in the ServiceGroup, then:
/// let n = try await store.withConnection { try await $0.query("SELECT 1", logger: logger) }
/// ```
public final class Store: Service, Sendable {
    public let url: DatabaseURL
    public let client: PostgresClient
    public let logger: Logger
    public let acquireTimeout: Duration
    /// The most any one call may take (a call inside an RPC handler also ends at its deadline).
    public let operationTimeout: Duration
    public let probeInterval: Duration
    private let down = Mutex<Bool>(false)
    private let downSignal: AsyncStream<Void>.Continuation
    private let downSignals: AsyncStream<Void>

    public init(url: DatabaseURL, logger: Logger, maximumConnections: Int = 10,
                acquireTimeout: Duration = .seconds(2), operationTimeout: Duration = .seconds(60),
                probeInterval: Duration = .milliseconds(250)) throws(StoreError) {
        var configuration = try url.clientConfiguration()
        configuration.options.maximumConnections = maximumConnections
        // Fewer pool timers per lease: postgres-nio arms a keep-alive timer each time a
        // connection goes back to the pool (a sleeping task: a libdispatch timer and two thread
        // hops). So no keep-alive queries: a dead server is noticed by the first failed call and
        // the store's own probe.
        //
        // No minimum of open connections: postgres-nio 1.33.2's pool traps (a precondition in
        // `ConnectionGroup.createNewDemandConnectionIfPossible`, minimum <= active) when a lease
        // arrives while fewer than the minimum are open, which is what a database outage
        // leaves; it crashed the outage test. Without a minimum each connection above zero arms
        // an idle timer on release, a small cost beside taking every service down with the
        // database. (A request the pool strands when its last connection dies, postgres-nio
        // #657, ends at the store's acquire and operation timeouts.)
        configuration.options.minimumConnections = 0
        configuration.options.keepAliveBehavior = nil
        configuration.options.connectTimeout = .seconds(5)
        self.url = url
        self.logger = logger
        self.acquireTimeout = acquireTimeout
        self.operationTimeout = operationTimeout
        self.probeInterval = probeInterval
        self.client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        (downSignals, downSignal) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Checks that `url` answers (one connection, `SELECT 1`), then makes the store.
    public static func connect(url: DatabaseURL, logger: Logger, maximumConnections: Int = 10) async throws(StoreError) -> Store {
        try await checkConnectivity(url, logger: logger)
        return try Store(url: url, logger: logger, maximumConnections: maximumConnections)
    }

    /// One connection and `SELECT 1` within `timeout`; the server's reason if not.
    public static func checkConnectivity(_ url: DatabaseURL, timeout: Duration = .seconds(5), logger: Logger) async throws(StoreError) {
        do {
            try await withSingleConnection(url, timeout: timeout, logger: logger) { c in
                try await c.query("SELECT 1", logger: logger)
            }
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError.cannotConnect("\(url): \(Self.reason(error))")
        }
    }

    /// Runs `body` on a fresh connection (not from the pool), closed afterwards; fails with
    /// `StoreError.cannotConnect` if none is made within `timeout`.
    @discardableResult
    public static func withSingleConnection<R: Sendable>(
        _ url: DatabaseURL, timeout: Duration = .seconds(5), logger: Logger,
        _ body: @Sendable (PostgresConnection) async throws -> R
    ) async throws -> R {
        var configuration = try url.connectionConfiguration()
        configuration.options.connectTimeout = .nanoseconds(Int64(timeout.nanoseconds))
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
        } catch {
            throw StoreError.cannotConnect("\(url): \(reason(error))")
        }
        do {
            let r = try await body(connection)
            try? await connection.close()
            return r
        } catch {
            try? await connection.close()
            throw error
        }
    }

    /// The server's message, or the network error: what a person needs to fix it. (The
    /// server's messages at connect time name the user or database, never row data.)
    public static func reason(_ error: any Error) -> String {
        if let e = error as? PSQLError {
            if let message = e.serverInfo?[.message] {
                return "\(message) (SQLSTATE \(e.serverInfo?[.sqlState] ?? "?"))"
            }
            if let underlying = e.underlying { return "\(underlying)" }
            return "\(e.code)"
        }
        if let e = error as? PostgresTransactionError { return reason(e.cause) }
        return "\(error)"
    }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.client.run() }
            group.addTask { await self.probe() }
            try? await gracefulShutdown()
            downSignal.finish()
            group.cancelAll()
        }
    }

    /// Whether calls are failing fast because the server is down.
    public var isDown: Bool { down.withLock { $0 } }

    private func markDown(_ error: any Error) {
        let wasDown = down.withLock { d in defer { d = true }; return d }
        if !wasDown {
            logger.warning("database unreachable; answering UNAVAILABLE until it is back",
                           metadata: ["database": "\(url)", "reason": "\(Self.reason(error))"])
            downSignal.yield()
        }
    }

    /// No connection in time: a full pool, or a server gone with no connection open to notice
    /// it. One probe tells which.
    private func checkSoon() {
        Task {
            do { try await Self.checkConnectivity(url, timeout: .seconds(1), logger: logger) } catch { markDown(error) }
        }
    }

    /// While down: reconnect every `probeInterval`; the first success heals the store.
    private func probe() async {
        for await _ in downSignals {
            while down.withLock({ $0 }) && !Task.isCancelled {
                try? await Task.sleep(for: probeInterval)
                do {
                    try await Self.checkConnectivity(url, timeout: .seconds(1), logger: logger)
                    down.withLock { $0 = false }
                    logger.info("database reachable again", metadata: ["database": "\(url)"])
                } catch {}
            }
        }
    }

    // MARK: - Calls

    /// Leases a pooled connection for `body`. `timeout` bounds this call below
    /// `operationTimeout` (work outside a handler, which has no deadline of its own to inherit).
    public func withConnection<R: Sendable>(timeout: Duration? = nil,
                                            _ body: @escaping @Sendable (PostgresConnection) async throws -> R) async throws -> R {
        try await guarded(timeout: timeout) { leased in try await self.client.withConnection { c in leased.set(); return try await body(c) } }
    }

    /// Runs `body` in a transaction (committed if it returns, rolled back if it throws). The
    /// error `body` threw is rethrown as it was (not wrapped).
    public func withTransaction<R: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> R) async throws -> R {
        try await guarded { leased in
            try await self.client.withConnection { c in
                leased.set()
                do {
                    return try await c.withTransaction(logger: self.logger) { tx in try await body(tx) }
                } catch let e as PostgresTransactionError {
                    throw e.cause
                }
            }
        }
    }

    /// `withTransaction` in which row-level security sees `actor` with `roles`: the settings
    /// every RLS policy of CareMesh reads (`caremesh.actor_id`, `caremesh.actor_roles`),
    /// transaction-scoped, set before `body` runs.
    public func withActor<R: Sendable>(_ actor: String, roles: [String],
                                       _ body: @escaping @Sendable (PostgresConnection) async throws -> R) async throws -> R {
        try await withTransaction { c in
            try await Self.setActor(actor, roles: roles, on: c, logger: self.logger)
            return try await body(c)
        }
    }

    /// Sets the actor row-level security sees on `c`: for the rest of its transaction, or for
    /// the session when not `local` (tools). `""` and no roles: nobody.
    public static func setActor(_ actor: String, roles: [String], on c: PostgresConnection, local: Bool = true,
                                logger: Logger) async throws {
        try await c.run(Prepared<SetActor>(actor, roles.joined(separator: ","), local), logger: logger)
    }

    /// Prepared: every transaction under row-level security starts with it.
    enum SetActor: PreparedSQL {
        static let sql = "SELECT set_config('caremesh.actor_id', $1, $3), set_config('caremesh.actor_roles', $2, $3)"
        static let types: [PostgresDataType] = [.text, .text, .bool]
    }

    /// Runs one statement and collects its rows.
    @discardableResult
    public func query(_ query: PostgresQuery) async throws -> [PostgresRow] {
        try await withConnection { c in try await c.query(query, logger: self.logger).collect() }
    }

    /// Fails fast while down; bounds the wait for a connection and the whole operation;
    /// notices outages.
    ///
    /// The operation runs in its own task, and the caller waits for whichever comes first: its
    /// result, no connection within `acquireTimeout`, or `operationTimeout` (in a handler,
    /// `RPCContext.answerBy`, just before the RPC's deadline, if sooner). postgres-nio 1.33 never completes a query written to a
    /// connection the server has just closed, and ignores cancellation there (the write's
    /// failure is dropped), so an operation caught by a server-side disconnect could hang for
    /// ever: the caller gets UNAVAILABLE instead and the stuck task is left behind, cancelled.
    private func guarded<R: Sendable>(timeout: Duration? = nil,
                                      _ operation: @escaping @Sendable (LeaseFlag) async throws -> R) async throws -> R {
        if isDown { throw StoreError.unavailable("PostgreSQL is not reachable") }
        let leased = LeaseFlag()
        var limit = min(operationTimeout, timeout ?? operationTimeout)
        if let answerBy = RPCContext.current?.answerBy {
            // Give up before the caller's deadline, so a query stuck on a connection the
            // server dropped ends as UNAVAILABLE that reaches the caller, not as the worker's
            // DEADLINE_EXCEEDED racing it.
            let now = monotonicNanos()
            limit = min(limit, .nanoseconds(Int64(answerBy > now ? answerBy - now : 0)))
        }
        let outcome = FirstOutcome<R>()
        let work = Task { outcome.settle(await Result(catching: { try await operation(leased) })) }
        // The two limits are timers on an event loop (a heap entry each, cancelled below), not
        // sleeping tasks: a `Task.sleep` per call is a libdispatch timer and two thread hops,
        // which cost a fifth of dispatch's CPU at 2 000 location updates/s.
        let loop = MultiThreadedEventLoopGroup.singleton.any()
        let acquireTimeout = self.acquireTimeout, bound = limit
        let noConnection = loop.scheduleTask(in: .nanoseconds(Int64(min(acquireTimeout, limit).nanoseconds))) {
            if !leased.started {
                outcome.settle(.failure(StoreError.unavailable("no database connection within \(acquireTimeout)")))
            }
        }
        let noAnswer = loop.scheduleTask(in: .nanoseconds(Int64(bound.nanoseconds))) {
            outcome.settle(.failure(StoreError.unavailable("the database did not answer within \(bound)")))
        }
        let result = await withTaskCancellationHandler {
            await outcome.value
        } onCancel: {
            work.cancel()
            outcome.settle(.failure(CancellationError()))
        }
        noConnection.cancel()
        noAnswer.cancel()
        work.cancel()  // a no-op when it finished; otherwise it is stuck and abandoned
        switch result {
        case .success(let value):
            return value
        case .failure(let error):
            if let e = error as? PSQLError, e.meansServerDown { markDown(e) }
            else if error is StoreError { checkSoon() }
            else if let e = error as? ConnectionPoolError, e == .connectionCreationCircuitBreakerTripped { markDown(error) }
            throw error
        }
    }

}

/// Set once the pool handed the operation a connection.
final class LeaseFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var started: Bool { value.load(ordering: .acquiring) }

    func set() { value.store(true, ordering: .releasing) }
}

/// The first of several outcomes, awaited once.
final class FirstOutcome<R: Sendable>: Sendable {
    private let state = Mutex<(result: Result<R, any Error>?, waiter: CheckedContinuation<Result<R, any Error>, Never>?)>((nil, nil))

    func settle(_ r: Result<R, any Error>) {
        let waiter = state.withLock { s -> CheckedContinuation<Result<R, any Error>, Never>? in
            guard s.result == nil else { return nil }
            s.result = r
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: r)
    }

    var value: Result<R, any Error> {
        get async {
            await withCheckedContinuation { c in
                let ready = state.withLock { s -> Result<R, any Error>? in
                    if let r = s.result { return r }
                    s.waiter = c
                    return nil
                }
                if let ready { c.resume(returning: ready) }
            }
        }
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}

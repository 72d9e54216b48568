import Crypto
import Foundation
import Logging
import PostgresNIO

/// One numbered migration: SQL to apply and SQL to revert. Files live beside the code that
/// owns them (`NNNN_name.up.sql` / `NNNN_name.down.sql`) and are embedded by
/// `scripts/generate-migrations.py`; a test fails when the embedded copy is stale.
public struct Migration: Sendable, Equatable {
    public var version: Int
    public var name: String
    public var up: String
    public var down: String

    public init(version: Int, name: String, up: String, down: String) {
        self.version = version
        self.name = name
        self.up = up
        self.down = down
    }

    /// SHA-256 of the up SQL: an applied migration whose file changed is refused.
    public var checksum: String {
        SHA256.hash(data: Data(up.utf8)).map { String($0, radix: 16).leftPadded(2) }.joined()
    }

    public var label: String { "\(String(version).leftPadded(4, with: "0"))_\(name)" }
}

extension String {
    /// Padded on the left to `width` (zeros by default): "7" → "0007".
    public func leftPadded(_ width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}

/// Applies and reverts a schema's migrations, recorded in `<schema>.schema_migrations`
/// (version, name, checksum, applied_at, duration_ms).
///
/// Everything runs on one dedicated connection holding a session advisory lock on the
/// schema, so concurrent instances migrate once: the second waits, then finds nothing to do.
/// Each migration and its record commit in one transaction. `up` first verifies what is
/// applied: a changed checksum (an edited file) or a version this build does not know
/// refuses, and nothing is applied.
public struct Migrator: Sendable {
    public let schema: String
    public let migrations: [Migration]
    public let logger: Logger

    public struct Entry: Sendable, Equatable {
        public var version: Int
        public var name: String
        /// Nil when pending.
        public var appliedAt: Date?
        public var durationMs: Int?
        /// False when the applied checksum differs from this build's file.
        public var intact: Bool
        /// False when the database has it and this build does not.
        public var known: Bool
    }

    public init(schema: String, migrations: [Migration], logger: Logger) throws(StoreError) {
        guard schema.range(of: "^[a-z_][a-z0-9_]*$", options: .regularExpression) != nil else {
            throw StoreError.configuration("'\(schema)' is not a plain schema name")
        }
        let sorted = migrations.sorted { $0.version < $1.version }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.version == b.version {
            throw StoreError.migration("two migrations have version \(a.version): \(a.name) and \(b.name)")
        }
        self.schema = schema
        self.migrations = sorted
        self.logger = logger
    }

    /// A service's migrator: the platform's migrations (outbox, event cursors, jobs), then its own.
    public static func forService(_ schema: String, own: [Migration], logger: Logger) throws(StoreError) -> Migrator {
        try Migrator(schema: schema, migrations: PlatformMigrations.all + own, logger: logger)
    }

    /// The lock key: the same for every instance migrating this schema.
    var lockKey: Int64 { advisoryLockKey("caremesh.migrate.\(schema)") }

    public func status(_ url: DatabaseURL) async throws -> [Entry] {
        try await locked(url) { c in try await self.entries(c) }
    }

    /// Applies every pending migration (up to `target` if given); returns the versions applied.
    @discardableResult
    public func up(_ url: DatabaseURL, to target: Int? = nil) async throws -> [Int] {
        try await locked(url) { c in
            let entries = try await self.entries(c)
            try self.verify(entries)
            var applied: [Int] = []
            for m in self.migrations where !entries.contains(where: { $0.version == m.version && $0.appliedAt != nil }) {
                if let target, m.version > target { break }
                let started = ContinuousClock.now
                var ms = 0
                try await self.transaction(c, "\(m.label) up") {
                    try await self.execute(m.up, on: c)
                    ms = Int((ContinuousClock.now - started) / .milliseconds(1))
                    try await c.query("""
                        INSERT INTO schema_migrations (version, name, checksum, duration_ms)
                        VALUES (\(m.version), \(m.name), \(m.checksum), \(ms))
                        """, logger: self.logger)
                }
                applied.append(m.version)
                self.logger.info("migration applied", metadata: [
                    "schema": "\(self.schema)", "migration": "\(m.label)", "duration.ms": "\(ms)",
                ])
            }
            return applied
        }
    }

    /// Reverts the `count` most recent migrations; returns the versions reverted.
    @discardableResult
    public func down(_ url: DatabaseURL, count: Int) async throws -> [Int] {
        try await locked(url) { c in
            let entries = try await self.entries(c)
            try self.verify(entries)
            let applied = entries.filter { $0.appliedAt != nil }.sorted { $0.version > $1.version }.prefix(count)
            var reverted: [Int] = []
            for e in applied {
                guard let m = self.migrations.first(where: { $0.version == e.version }) else { continue }
                try await self.transaction(c, "\(m.label) down") {
                    try await self.execute(m.down, on: c)
                    try await c.query("DELETE FROM schema_migrations WHERE version = \(m.version)", logger: self.logger)
                }
                reverted.append(m.version)
                self.logger.info("migration reverted", metadata: ["schema": "\(self.schema)", "migration": "\(m.label)"])
            }
            return reverted
        }
    }

    /// Refuses edited or unknown applied migrations.
    public func verify(_ entries: [Entry]) throws(StoreError) {
        if let e = entries.first(where: { $0.appliedAt != nil && !$0.known }) {
            throw StoreError.migration("\(schema) has migration \(e.version) (\(e.name)) applied, which this build does not have: the database is newer than this build")
        }
        if let e = entries.first(where: { $0.appliedAt != nil && !$0.intact }) {
            throw StoreError.migration("\(schema) migration \(e.version) (\(e.name)) was edited after it was applied (its checksum changed): restore the file and put the change in a new migration")
        }
    }

    /// Refuses to go on unless every migration is applied and none was edited: what a
    /// service told not to migrate on start checks instead.
    public func requireUpToDate(_ url: DatabaseURL) async throws {
        let entries = try await status(url)
        try verify(entries)
        if let pending = entries.first(where: { $0.appliedAt == nil }) {
            throw StoreError.migration("\(schema) has pending migrations (first: \(pending.version) \(pending.name)); run `caremesh migrate \(schema) up`")
        }
    }

    // MARK: - Plumbing

    /// A migration file's statements, one by one (the extended protocol takes one at a time).
    private func execute(_ sql: String, on c: PostgresConnection) async throws {
        for statement in SQLScript.statements(sql) {
            try await c.query(PostgresQuery(unsafeSQL: statement), logger: logger)
        }
    }

    private func entries(_ c: PostgresConnection) async throws -> [Entry] {
        var applied: [Int: (String, String, Date, Int)] = [:]
        let rows = try await c.query("SELECT version, name, checksum, applied_at, duration_ms FROM schema_migrations",
                                     logger: logger)
        for try await (version, name, checksum, at, ms) in rows.decode((Int, String, String, Date, Int).self) {
            applied[version] = (name, checksum, at, ms)
        }
        var out: [Entry] = migrations.map { m in
            let a = applied[m.version]
            return Entry(version: m.version, name: m.name, appliedAt: a?.2, durationMs: a?.3,
                         intact: a.map { $0.1 == m.checksum } ?? true, known: true)
        }
        for (v, a) in applied where !migrations.contains(where: { $0.version == v }) {
            out.append(Entry(version: v, name: a.0, appliedAt: a.2, durationMs: a.3, intact: true, known: false))
        }
        return out.sorted { $0.version < $1.version }
    }

    private func transaction(_ c: PostgresConnection, _ what: String, _ body: () async throws -> Void) async throws {
        try await c.query("BEGIN", logger: logger)
        do {
            try await body()
            try await c.query("COMMIT", logger: logger)
        } catch {
            _ = try? await c.query("ROLLBACK", logger: logger)
            throw StoreError.migration("\(schema) \(what) failed: \(Store.reason(error))")
        }
    }

    /// A dedicated connection with the schema's advisory lock and search path.
    private func locked<R: Sendable>(_ url: DatabaseURL, _ body: @escaping @Sendable (PostgresConnection) async throws -> R) async throws -> R {
        try await Store.withSingleConnection(url, logger: logger) { c in
            let schema = self.schema
            try await c.query("SELECT pg_advisory_lock(\(self.lockKey))", logger: self.logger)
            // Creating the schema needs CREATE on the database: a provisioned service role
            // finds its schema there already; a developer's own superuser URL makes it.
            let exists = try await c.query("SELECT 1 FROM pg_namespace WHERE nspname = \(schema)", logger: self.logger).hasRows()
            if !exists {
                do {
                    try await c.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(schema)"), logger: self.logger)
                } catch {
                    throw StoreError.migration("schema \(schema) does not exist and \(url.username) may not create it: provision the database first (caremesh db provision)")
                }
            }
            let allowed = try await c.query("SELECT has_schema_privilege(current_user, \(schema), 'CREATE')",
                                            logger: self.logger).first(Bool.self) ?? false
            guard allowed else {
                throw StoreError.migration("\(url.username) may not create objects in schema \(schema): connect as the role that owns it")
            }
            try await c.query(PostgresQuery(unsafeSQL: "SET search_path TO \(schema), public"), logger: self.logger)
            try await c.query("""
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now(),
                    duration_ms integer NOT NULL CHECK (duration_ms >= 0))
                """, logger: self.logger)
            let r = try await body(c)  // if it throws, closing the connection releases the lock
            try await c.query("SELECT pg_advisory_unlock(\(self.lockKey))", logger: self.logger)
            return r
        }
    }
}

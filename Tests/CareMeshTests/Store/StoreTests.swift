import CareMeshRPC
import CareMeshStore
import CareMeshTesting
import Foundation
import Logging
import PostgresNIO
import Testing

@Suite(.serialized) struct StoreTests {
    let logger = TestDatabase.logger

    @Test("start-up fails fast with the server's reason: wrong password, unknown database, server down")
    func failFast() async throws {
        let db = try await TestDatabase.fresh("failfast")
        let clock = ContinuousClock()
        let started = clock.now
        await #expect {
            try await Store.checkConnectivity(db.url("identity").with(username: "caremesh_identity", password: "wrong"), logger: logger)
        } throws: { error in
            "\(error)".contains("password authentication failed")
        }
        await #expect {
            try await Store.checkConnectivity(db.url("identity").with(database: "no_such_db"), logger: logger)
        } throws: { error in
            "\(error)".contains("does not exist")
        }
        var down = db.url("identity")
        down.port = TestStack.freePort()
        await #expect {
            try await Store.checkConnectivity(down, logger: logger)
        } throws: { error in
            guard let e = error as? StoreError, case .cannotConnect(let m) = e else { return false }
            return m.lowercased().contains("refused")
        }
        #expect(clock.now - started < .seconds(5))
        #expect(throws: StoreError.self) { try DatabaseURL.forService("identity", environment: [:]) }
    }

    @Test("each service role owns its schema and cannot read another's")
    func schemaIsolation() async throws {
        let db = try await TestDatabase.fresh("isolation")
        try await Store.withSingleConnection(db.url("dispatch"), logger: logger) { c in
            try await c.query("CREATE TABLE sos (id int PRIMARY KEY)", logger: self.logger)  // lands in schema dispatch
            try await c.query("INSERT INTO dispatch.sos VALUES (1)", logger: self.logger)
        }
        let error = await #expect(throws: PSQLError.self) {
            try await Store.withSingleConnection(db.url("identity"), logger: logger) { c in
                try await c.query("SELECT * FROM dispatch.sos", logger: self.logger)
            }
        }
        #expect(error?.serverInfo?[.sqlState] == "42501")  // insufficient_privilege
        await #expect(throws: PSQLError.self) {
            try await Store.withSingleConnection(db.url("identity"), logger: logger) { c in
                try await c.query("CREATE TABLE dispatch.stolen (id int)", logger: self.logger)
            }
        }
        await #expect(throws: PSQLError.self) {
            try await Store.withSingleConnection(db.url("identity"), logger: logger) { c in
                try await c.query("CREATE EXTENSION IF NOT EXISTS hstore", logger: self.logger)
            }
        }
        // The extensions the superuser made are usable by every service.
        let distance = try await Store.withSingleConnection(db.url("identity"), logger: logger) { c in
            let rows = try await c.query("""
                SELECT ST_Distance('SRID=4326;POINT(2.35 48.85)'::geography, 'SRID=4326;POINT(2.29 48.86)'::geography)
                """, logger: self.logger)
            var d = 0.0
            for try await v in rows.decode(Double.self) { d = v }
            return d
        }
        #expect(distance > 4_000 && distance < 5_000)
    }

    @Test("database errors reach callers with canonical codes, no values")
    func errorMapping() async throws {
        let db = try await TestDatabase.fresh("errors")
        let store = try await Store.connect(url: db.url("alerts"), logger: logger)
        try await withRunning(store) {
            try await store.query("CREATE TABLE t (id int PRIMARY KEY, email text UNIQUE, n int CHECK (n > 0))")
            try await store.query("INSERT INTO t VALUES (1, 'a@example.org', 1)")
            let dup = await #expect(throws: PSQLError.self) {
                try await store.query("INSERT INTO t VALUES (2, \("a@example.org"), 1)")
            }
            let mapped = RPCError(mapping: try #require(dup))
            #expect(mapped.code == .alreadyExists)
            #expect(!mapped.message.contains("a@example.org"))
            let check = await #expect(throws: PSQLError.self) { try await store.query("INSERT INTO t VALUES (3, 'b', 0)") }
            #expect(RPCError(mapping: try #require(check)).code == .invalidArgument)
            let syntax = await #expect(throws: PSQLError.self) { try await store.query("SELEC 1") }
            let internalError = RPCError(mapping: try #require(syntax))
            #expect(internalError.code == .internal && internalError.correlationID != nil)
            // A transaction's own error comes back as thrown, and nothing of it stays.
            await #expect(throws: RPCError.self) {
                try await store.withTransaction { c in
                    try await c.query("INSERT INTO t VALUES (4, 'c', 1)", logger: self.logger)
                    throw RPCError(.failedPrecondition, "no")
                }
            }
            let rows = try await store.query("SELECT count(*)::int FROM t WHERE id = 4")
            #expect(try rows.first?.decode(Int.self) == 0)
        }
    }

    @Test("SQL scripts split on semicolons outside quotes, dollar bodies and comments")
    func scriptSplitting() {
        let sql = """
            -- a comment; not a statement
            CREATE TABLE a (x text DEFAULT 'a;b');
            /* block; /* nested; */ still */
            CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;
            CREATE FUNCTION g() RETURNS int AS $body$ BEGIN RETURN 2; END $body$ LANGUAGE plpgsql;
            INSERT INTO "we;ird" VALUES ('it''s; fine'), ($1);
            SELECT 1
            """
        let parts = SQLScript.statements(sql)
        #expect(parts.count == 5)
        #expect(parts[0].hasSuffix("DEFAULT 'a;b')"))
        #expect(parts[1].hasSuffix("LANGUAGE sql"))
        #expect(parts[2].contains("$body$ BEGIN RETURN 2; END $body$"))
        #expect(parts[3].contains("'it''s; fine'"))
        #expect(parts[4] == "SELECT 1")
        #expect(SQLScript.statements("-- only\n/* comments */ ;  ").isEmpty)
    }

    @Test("database URLs: per-service variable first, passwords decoded, never printed")
    func urls() throws {
        let env = ["DATABASE_URL": "postgres://app:s%40cret@db.local:6543/care?sslmode=disable",
                   "ALERTS_DATABASE_URL": "postgresql://alerts:pw@127.0.0.1/alertsdb?host=/run/pg"]
        let shared = try DatabaseURL.forService("identity", environment: env)
        #expect(shared.host == "db.local" && shared.port == 6543 && shared.password == "s@cret" && shared.database == "care")
        #expect(!shared.description.contains("s@cret"))
        #expect(try DatabaseURL(parsing: shared.urlString) == shared)
        let own = try DatabaseURL.forService("alerts", environment: env)
        #expect(own.username == "alerts" && own.socketDirectory == "/run/pg" && own.port == 5432)
        #expect(throws: StoreError.self) { try DatabaseURL(parsing: "mysql://x@y/z") }
        #expect(throws: StoreError.self) { try DatabaseURL(parsing: "postgres://x@y/") }
    }
}

/// Runs `body` while `store` runs (its pool needs `run()`), then stops it.
func withRunning<R: Sendable>(_ store: Store, _ body: () async throws -> R) async throws -> R {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await store.run() }
        defer { group.cancelAll() }
        return try await body()
    }
}

import CareMeshStore
import CareMeshTesting
import Foundation
import PostgresNIO
import Testing

@Suite(.serialized) struct MigratorTests {
    let logger = TestDatabase.logger

    let migrations = [
        Migration(version: 1, name: "people", up: """
            CREATE TABLE people (id bigint PRIMARY KEY, name text NOT NULL);
            CREATE INDEX people_name ON people (name);
            """, down: "DROP TABLE people;"),
        Migration(version: 2, name: "places", up: """
            CREATE TABLE places (id bigint PRIMARY KEY, at geography(Point, 4326) NOT NULL);
            CREATE FUNCTION places_count() RETURNS bigint AS $$ SELECT count(*) FROM places; $$ LANGUAGE sql;
            """, down: "DROP FUNCTION places_count(); DROP TABLE places;"),
    ]

    func tables(_ url: DatabaseURL) async throws -> Set<String> {
        try await Store.withSingleConnection(url, logger: logger) { c in
            var names = Set<String>()
            let rows = try await c.query("SELECT tablename::text FROM pg_tables WHERE schemaname = 'dispatch'", logger: self.logger)
            for try await n in rows.decode(String.self) { names.insert(n) }
            return names
        }
    }

    @Test("up, status, down, re-up; records checksum and duration")
    func upDownReUp() async throws {
        let db = try await TestDatabase.fresh("migrate")
        let url = db.url("dispatch")
        let m = try Migrator(schema: "dispatch", migrations: migrations, logger: logger)
        #expect(try await m.up(url) == [1, 2])
        #expect(try await m.up(url) == [])
        #expect(try await tables(url) == ["schema_migrations", "people", "places"])
        let status = try await m.status(url)
        #expect(status.map(\.version) == [1, 2] && status.allSatisfy { $0.appliedAt != nil && $0.intact && ($0.durationMs ?? -1) >= 0 })
        #expect(try await m.down(url, count: 1) == [2])
        #expect(try await tables(url) == ["schema_migrations", "people"])
        #expect(try await m.status(url).map { $0.appliedAt != nil } == [true, false])
        #expect(try await m.up(url) == [2])
        #expect(try await m.down(url, count: 5) == [2, 1])
        #expect(try await tables(url) == ["schema_migrations"])
        #expect(try await m.up(url, to: 1) == [1])
        #expect(try await m.up(url) == [2])
    }

    @Test("an applied migration that was edited, or that this build lacks, is refused and nothing runs")
    func refusals() async throws {
        let db = try await TestDatabase.fresh("refuse")
        let url = db.url("dispatch")
        try await Migrator(schema: "dispatch", migrations: [migrations[0]], logger: logger).up(url)
        var edited = migrations
        edited[0].up += "\nALTER TABLE people ADD COLUMN sneaky int;"
        let refused = await #expect(throws: StoreError.self) {
            try await Migrator(schema: "dispatch", migrations: edited, logger: logger).up(url)
        }
        #expect("\(refused!)".contains("edited"))
        #expect(try await tables(url) == ["schema_migrations", "people"])  // 2 was not applied either
        try await Migrator(schema: "dispatch", migrations: migrations, logger: logger).up(url)
        let older = await #expect(throws: StoreError.self) {
            try await Migrator(schema: "dispatch", migrations: [migrations[0]], logger: logger).up(url)
        }
        #expect("\(older!)".contains("newer than this build"))
    }

    @Test("a failing migration rolls back whole and is not recorded")
    func failingMigration() async throws {
        let db = try await TestDatabase.fresh("failing")
        let url = db.url("dispatch")
        let bad = Migration(version: 3, name: "bad", up: "CREATE TABLE ok (id int); CREATE TABLE broken (id nosuchtype);", down: "")
        await #expect(throws: StoreError.self) {
            try await Migrator(schema: "dispatch", migrations: migrations + [bad], logger: logger).up(url)
        }
        #expect(try await tables(url) == ["schema_migrations", "people", "places"])
        #expect(try await Migrator(schema: "dispatch", migrations: migrations, logger: logger).status(url).count == 2)
    }

    @Test("two migrators at once: each migration applied exactly once")
    func concurrent() async throws {
        let db = try await TestDatabase.fresh("concurrent")
        let url = db.url("dispatch")
        let slow = Migration(version: 3, name: "slow", up: "SELECT pg_sleep(0.5); CREATE TABLE slow (id int);", down: "DROP TABLE slow;")
        let m = try Migrator(schema: "dispatch", migrations: migrations + [slow], logger: logger)
        async let a = m.up(url)
        async let b = m.up(url)
        let (ra, rb) = try await (a, b)
        #expect((ra + rb).sorted() == [1, 2, 3])
        #expect(ra.isEmpty || rb.isEmpty)
    }

    @Test("services migrate on start; told not to, they refuse to start on pending migrations")
    func migrateOnStart() async throws {
        let db = try await TestDatabase.fresh("onstart")
        let env = db.environment.merging(["ALERTS_MIGRATE_ON_START": "false"]) { $1 }
        let refused = await #expect(throws: StoreError.self) {
            _ = try await ServiceHost.make(service: "alerts", migrations: [], environment: env, logger: logger)
        }
        #expect("\(refused!)".contains("pending"))
        _ = try await ServiceHost.make(service: "alerts", migrations: [], environment: db.environment, logger: logger)
        let status = try await Migrator(schema: "alerts", migrations: PlatformMigrations.all, logger: logger).status(db.url("alerts"))
        #expect(!status.isEmpty && status.allSatisfy { $0.appliedAt != nil })
        _ = try await ServiceHost.make(service: "alerts", migrations: [], environment: env, logger: logger)  // now up to date
    }

    @Test("a role may not migrate a schema it does not own")
    func otherSchema() async throws {
        let db = try await TestDatabase.fresh("otherschema")
        await #expect(throws: StoreError.self) {
            try await Migrator(schema: "dispatch", migrations: migrations, logger: logger).up(db.url("identity"))
        }
    }
}

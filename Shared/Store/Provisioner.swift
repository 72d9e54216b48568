import Foundation
import Logging
import PostgresNIO

/// What a superuser sets up once per database, before any service starts: the extensions the
/// services use, and for each service a login role that owns its own schema and has no rights
/// on the others. Safe to run again (it converges: missing things are made, passwords reset).
public enum Provisioner {
    /// The services that own a schema, in start order.
    public static let services = ["identity", "dispatch", "alerts", "messaging"]
    /// The processes that sign in to identity with a secret of their own (`<NAME>_SERVICE_SECRET`):
    /// the services that call others, and the router, which pulls identity's token revocations.
    public static let servicesWithSecrets = services.filter { $0 != "identity" } + ["router"]
    /// Created by the superuser; service migrations may use them but never create them.
    public static let extensions = ["postgis", "btree_gist", "pgcrypto"]

    /// The login role of a service.
    public static func role(of service: String) -> String { "caremesh_\(service)" }

    /// Provisions the database `admin` points at; `passwords` maps each service to its role's
    /// password. Every value is bound (`format(%I, %L)` inside the server), none is spliced.
    public static func provision(admin: DatabaseURL, passwords: [String: String], logger: Logger) async throws {
        try await Store.withSingleConnection(admin, logger: logger) { c in
            for ext in extensions {
                try await c.query(PostgresQuery(unsafeSQL: "CREATE EXTENSION IF NOT EXISTS \(ext) SCHEMA public"), logger: logger)
            }
            for service in services {
                guard let password = passwords[service] else { continue }
                try await c.query("""
                    SELECT set_config('caremesh.role', \(role(of: service)), false),
                           set_config('caremesh.password', \(password), false),
                           set_config('caremesh.schema', \(service), false)
                    """, logger: logger)
                try await c.query("""
                    DO $$
                    DECLARE
                        r text := current_setting('caremesh.role');
                        p text := current_setting('caremesh.password');
                        s text := current_setting('caremesh.schema');
                    BEGIN
                        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
                            EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', r, p);
                        ELSE
                            EXECUTE format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', r, p);
                        END IF;
                        EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I', s, r);
                        EXECUTE format('ALTER SCHEMA %I OWNER TO %I', s, r);
                        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', s);
                        EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), r);
                        EXECUTE format('ALTER ROLE %I IN DATABASE %I SET search_path = %I, public', r, current_database(), s);
                    END
                    $$
                    """, logger: logger)
                try await c.query("RESET caremesh.password", logger: logger)
            }
        }
    }

    /// Makes `name` on the server if it is missing (also used for the tests' fresh databases).
    public static func createDatabase(_ name: String, on server: DatabaseURL, logger: Logger) async throws {
        try await Store.withSingleConnection(server, logger: logger) { c in
            if try await !c.query("SELECT 1 FROM pg_database WHERE datname = \(name)", logger: logger).hasRows() {
                guard name.range(of: "^[a-z_][a-z0-9_]*$", options: .regularExpression) != nil else {
                    throw StoreError.configuration("'\(name)' is not a plain database name")
                }
                try await c.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: logger)
            }
        }
    }

    /// A fresh random password (hex, 32 bytes of entropy).
    public static func newPassword() -> String {
        var g = SystemRandomNumberGenerator()
        return (0..<4).map { _ in String(g.next() as UInt64, radix: 16).leftPadded(16) }.joined()
    }

    /// Each service's URL: the admin URL's server and database, the service's role.
    public static func serviceURLs(admin: DatabaseURL, passwords: [String: String]) -> [String: DatabaseURL] {
        var out: [String: DatabaseURL] = [:]
        for (service, password) in passwords { out[service] = admin.with(username: role(of: service), password: password) }
        return out
    }
}

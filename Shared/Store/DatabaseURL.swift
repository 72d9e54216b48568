import Foundation
import NIOSSL
import PostgresNIO

/// Where a service's PostgreSQL is, from a libpq-style URL:
/// `postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=disable|prefer|require&host=/socket/dir`.
/// `host=` (a folder) selects the unix socket `DIR/.s.PGSQL.PORT`, as libpq does.
public struct DatabaseURL: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String
    public var socketDirectory: String?
    public var sslMode: SSLMode

    public enum SSLMode: String, Sendable {
        case disable, prefer, require
    }

    public init(host: String = "127.0.0.1", port: Int = 5432, username: String, password: String?, database: String,
                socketDirectory: String? = nil, sslMode: SSLMode = .disable) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.socketDirectory = socketDirectory
        self.sslMode = sslMode
    }

    public init(parsing text: String) throws(StoreError) {
        guard let c = URLComponents(string: text), c.scheme == "postgres" || c.scheme == "postgresql" else {
            throw StoreError.configuration("the database URL must look like postgres://USER:PASSWORD@HOST:PORT/DATABASE")
        }
        guard let user = c.percentEncodedUser?.removingPercentEncoding, !user.isEmpty else {
            throw StoreError.configuration("the database URL names no user")
        }
        let database = String(c.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty else { throw StoreError.configuration("the database URL names no database") }
        var sslMode = SSLMode.prefer
        var socketDirectory: String?
        for item in c.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                switch item.value {
                case "disable", "allow": sslMode = .disable
                case "prefer": sslMode = .prefer
                case "require", "verify-ca", "verify-full": sslMode = .require
                default: throw StoreError.configuration("sslmode '\(item.value ?? "")' is not one of disable, prefer, require")
                }
            case "host": socketDirectory = item.value
            default: break
            }
        }
        self.init(host: c.host?.isEmpty == false ? c.host! : "127.0.0.1", port: c.port ?? 5432, username: user,
                  password: c.percentEncodedPassword?.removingPercentEncoding, database: database,
                  socketDirectory: socketDirectory, sslMode: sslMode)
    }

    /// The URL for `service`: `<SERVICE>_DATABASE_URL`, else `DATABASE_URL`.
    public static func forService(_ service: String, environment: [String: String]) throws(StoreError) -> DatabaseURL {
        let specific = "\(service.uppercased())_DATABASE_URL"
        guard let text = environment[specific] ?? environment["DATABASE_URL"], !text.isEmpty else {
            throw StoreError.configuration("set \(specific) or DATABASE_URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)")
        }
        return try DatabaseURL(parsing: text)
    }

    /// The same server and credentials, another database.
    public func with(database: String) -> DatabaseURL {
        var u = self
        u.database = database
        return u
    }

    /// The same server and database, other credentials.
    public func with(username: String, password: String?) -> DatabaseURL {
        var u = self
        u.username = username
        u.password = password
        return u
    }

    /// The URL text (with the password: for handing to a child process, never for logs).
    public var urlString: String {
        var c = URLComponents()
        c.scheme = "postgres"
        c.user = username
        c.password = password
        c.host = host
        c.port = port
        c.path = "/" + database
        var items = [URLQueryItem(name: "sslmode", value: sslMode.rawValue)]
        if let socketDirectory { items.append(URLQueryItem(name: "host", value: socketDirectory)) }
        c.queryItems = items
        return c.string ?? ""
    }

    /// For logs and messages: no password.
    public var description: String {
        "postgres://\(username)@\(socketDirectory.map { "[\($0)]" } ?? host):\(port)/\(database)"
    }

    /// postgres-nio's pool configuration.
    public func clientConfiguration() throws(StoreError) -> PostgresClient.Configuration {
        if let socketDirectory {
            return PostgresClient.Configuration(unixSocketPath: "\(socketDirectory)/.s.PGSQL.\(port)", username: username,
                                                password: password, database: database)
        }
        return PostgresClient.Configuration(host: host, port: port, username: username, password: password,
                                            database: database, tls: try tls())
    }

    /// postgres-nio's single-connection configuration (start-up checks, provisioning, listening).
    public func connectionConfiguration() throws(StoreError) -> PostgresConnection.Configuration {
        if let socketDirectory {
            return PostgresConnection.Configuration(unixSocketPath: "\(socketDirectory)/.s.PGSQL.\(port)",
                                                    username: username, password: password, database: database)
        }
        let tls: PostgresConnection.Configuration.TLS
        do {
            switch sslMode {
            case .disable: tls = .disable
            case .prefer: tls = .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
            case .require: tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
            }
        } catch {
            throw StoreError.configuration("TLS could not be set up: \(error)")
        }
        return PostgresConnection.Configuration(host: host, port: port, username: username, password: password,
                                                database: database, tls: tls)
    }

    private func tls() throws(StoreError) -> PostgresClient.Configuration.TLS {
        switch sslMode {
        case .disable: return .disable
        case .prefer: return .prefer(.makeClientConfiguration())
        case .require: return .require(.makeClientConfiguration())
        }
    }
}

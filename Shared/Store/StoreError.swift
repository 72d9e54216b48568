import _ConnectionPoolModule
import CareMeshRPC
import Foundation
import PostgresNIO

/// What the store itself reports: configuration and start-up problems, with a message a
/// person can act on, and runtime unavailability.
public enum StoreError: Error, Sendable, Equatable, CustomStringConvertible, RPCErrorConvertible {
    /// The URL or settings are wrong.
    case configuration(String)
    /// The server could not be reached or refused us at start-up.
    case cannotConnect(String)
    /// The database is not answering now (outage, or no connection in time).
    case unavailable(String)
    /// A migration problem: an applied file was edited, a version is missing, SQL failed.
    case migration(String)

    public var description: String {
        switch self {
        case .configuration(let m): "database configuration: \(m)"
        case .cannotConnect(let m): "cannot connect to PostgreSQL: \(m)"
        case .unavailable(let m): "database unavailable: \(m)"
        case .migration(let m): "migration: \(m)"
        }
    }

    public var rpcError: RPCError {
        switch self {
        case .unavailable(let m), .cannotConnect(let m):
            RPCError(.unavailable, "the database is unavailable (\(m))",
                     details: [RPCError.detail(reason: "DATABASE_UNAVAILABLE", domain: "store")])
        case .configuration, .migration:
            RPCError(mapping: OpaqueStoreFailure())
        }
    }
}

struct OpaqueStoreFailure: Error {}

/// How a database error reaches a caller. One place: connection trouble is `UNAVAILABLE`
/// (safe to retry), conflicts and constraint violations get their canonical codes with the
/// constraint's name (never the values, which may be PHI), anything else is `INTERNAL` with
/// a correlation id. Services catch the violations they expect and name the field themselves.
extension PSQLError: RPCErrorConvertible, DiagnosticCode {
    public var rpcError: RPCError {
        if meansServerDown {
            return StoreError.unavailable("the connection to PostgreSQL failed (\(diagnosticCode))").rpcError
        }
        guard code == .server, let state = serverInfo?[.sqlState] else { return RPCError(mapping: OpaqueStoreFailure()) }
        let constraint = serverInfo?[.constraintName].map { " (\($0))" } ?? ""
        switch state {
        case "23505":
            return RPCError(.alreadyExists, "a record with the same unique value already exists\(constraint)")
        case "23P01":
            return RPCError(.failedPrecondition, "it conflicts with an existing record\(constraint)")
        case "23503":
            return RPCError(.failedPrecondition, "a record it refers to does not exist or is still referenced\(constraint)")
        case "23514", "23502":
            return RPCError(.invalidArgument, "a value is not allowed\(constraint)")
        case "40001", "40P01", "55P03":
            return RPCError(.aborted, "the change conflicted with a concurrent one; retry it")
        case "57014":
            return RPCError(.deadlineExceeded, "the database query was cancelled at its deadline")
        default:
            if state.hasPrefix("53") {
                return StoreError.unavailable("PostgreSQL is out of resources (\(state))").rpcError
            }
            if state.hasPrefix("22") { return RPCError(.invalidArgument, "a value is not valid for its column") }
            return RPCError(mapping: OpaqueStoreFailure())
        }
    }

    /// The SQLSTATE (or client-side code): safe to log, carries no values.
    public var diagnosticCode: String { serverInfo?[.sqlState] ?? "\(code)" }

    /// Whether the server is unreachable or going away: a connection that failed or closed,
    /// or SQLSTATE class 08 (connection exception) or 57P01-03 (shutdown, crash, starting up).
    var meansServerDown: Bool {
        let lost: [Code] = [.connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown,
                            .poolClosed, .sslUnsupported, .failedToAddSSLHandler]
        if lost.contains(code) { return true }
        guard let state = serverInfo?[.sqlState] else { return false }
        return state.hasPrefix("08") || ["57P01", "57P02", "57P03"].contains(state)
    }
}

extension ConnectionPoolError: RPCErrorConvertible {
    public var rpcError: RPCError {
        self == .requestCancelled ? RPCError(.cancelled, "the call was cancelled")
            : StoreError.unavailable("no database connection could be made").rpcError
    }
}

extension PSQLError {
    /// The SQLSTATE and constraint of a constraint violation (class 23), so a service can
    /// name the field a unique or check constraint guards.
    public static func violation(in error: any Error) -> (sqlState: String, constraint: String)? {
        guard let e = error as? PSQLError, e.code == .server, let state = e.serverInfo?[.sqlState],
              state.hasPrefix("23") else { return nil }
        return (state, e.serverInfo?[.constraintName] ?? "")
    }
}

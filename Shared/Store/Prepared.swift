import Logging
import PostgresNIO
import Synchronization

/// The text of a statement on a hot path: fixed SQL with every value bound (`$n`), and the
/// type of each parameter, in order.
///
/// `Prepared<Self>` runs it prepared once per connection: postgres-nio parses it under this
/// type's name the first time a connection runs it and afterwards only binds and executes it,
/// so PostgreSQL neither parses nor (once it settles on a generic plan) plans it again.
/// Measured on `bench sos`: parse and bind (planning) of the SOS insert alone took 0.66 ms of
/// every call, mostly resolving PostGIS's overloaded functions.
///
/// ```swift
/// enum Touch: PreparedSQL {
///     static let sql = "UPDATE things SET seen_at = now() WHERE id = $1"
///     static let types: [PostgresDataType] = [.uuid]
/// }
/// try await connection.run(Prepared<Touch>(id), logger: logger)
/// ```
public protocol PreparedSQL {
    static var sql: String { get }
    static var types: [PostgresDataType] { get }
}

/// A `PreparedSQL` statement with its values (nil binds NULL), in the order of its `$n`.
public struct Prepared<Statement: PreparedSQL>: PostgresPreparedStatement {
    public typealias Row = PostgresRow
    /// The statement's type's full name, made once (`String(reflecting:)` on every run was ~2%
    /// of messaging's CPU under `bench messaging`: postgres-nio asks for it on each execution).
    public static var name: String {
        let id = ObjectIdentifier(Statement.self)
        if let known = preparedNames.withLock({ $0[id] }) { return known }
        let made = String(reflecting: Statement.self)
        preparedNames.withLock { $0[id] = made }
        return made
    }
    public static var sql: String { Statement.sql }
    public static var bindingDataTypes: [PostgresDataType] { Statement.types }

    private let bindings: PostgresBindings

    public init(_ values: (any PostgresThrowingDynamicTypeEncodable)?...) throws {
        precondition(values.count == Statement.types.count, "\(Statement.self) takes \(Statement.types.count) values")
        var b = PostgresBindings(capacity: values.count)
        for value in values {
            if let value { try b.append(value) } else { b.appendNull() }
        }
        bindings = b
    }

    public func makeBindings() -> PostgresBindings { bindings }
    public func decodeRow(_ row: PostgresRow) throws -> PostgresRow { row }
}

/// `Prepared.name` of each statement type seen (generic types cannot hold a static stored property).
private let preparedNames = Mutex<[ObjectIdentifier: String]>([:])

extension PostgresConnection {
    /// Runs `statement` (prepared on this connection the first time) and collects its rows.
    @discardableResult
    public func run<S: PreparedSQL>(_ statement: Prepared<S>, logger: Logger) async throws -> [PostgresRow] {
        var rows: [PostgresRow] = []
        for try await row in try await execute(statement, logger: logger) { rows.append(row) }
        return rows
    }
}

/// `pg_advisory_xact_lock($1)`: see `PostgresConnection.lockForTransaction`.
enum AdvisoryTransactionLock: PreparedSQL {
    static let sql = "SELECT pg_advisory_xact_lock($1)"
    static let types: [PostgresDataType] = [.int8]
}

import CareMeshStore
import PostgresNIO
import Testing

/// A prepared statement is known to a connection by `Prepared.name`, which is made once per
/// statement type: two types must never share one, and a type's must not change.
@Suite struct PreparedNameTests {
    enum First: PreparedSQL {
        static let sql = "SELECT 1"
        static let types: [PostgresDataType] = []
    }

    enum Second: PreparedSQL {
        static let sql = "SELECT 2"
        static let types: [PostgresDataType] = []
    }

    @Test func eachStatementTypeKeepsItsOwnName() async {
        // Asked for from many tasks at once, as connections do.
        let names = await withTaskGroup(of: (String, String).self) { group in
            for _ in 0..<64 { group.addTask { (Prepared<First>.name, Prepared<Second>.name) } }
            return await group.reduce(into: [(String, String)]()) { $0.append($1) }
        }
        #expect(Set(names.map(\.0)) == [String(reflecting: First.self)])
        #expect(Set(names.map(\.1)) == [String(reflecting: Second.self)])
        #expect(Prepared<First>.name != Prepared<Second>.name)
    }
}

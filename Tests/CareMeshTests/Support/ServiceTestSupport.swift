import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import CareMeshTesting
import Foundation
import PostgresNIO

/// What the domain services' suites share: signed-in accounts, superuser SQL for fixtures and
/// checks, and the status code or field violations a call failed with.

/// A signed-in person: their id and the call options carrying their access token.
struct TestAccount: Sendable {
    let id: UUID
    let auth: CallOptions

    /// Registers an account through identity, gives it `role` as the superuser (as an admin
    /// would), and signs it in.
    static func make(_ client: RPCClient, _ db: TestDatabase, role: String) async throws -> TestAccount {
        var r = Caremesh_Identity_V1_RegisterRequest()
        r.email = "\(role).\(UInt32.random(in: 0...UInt32.max))@example.org"
        r.password = "a long enough passphrase"
        r.name = "Test \(role)"
        r.phone = "+4479\(Int.random(in: 10_000_000...99_999_999))"
        let signup = try await client.call(IdentityMethods.register, request: r)
        _ = try await db.sql("UPDATE identity.users SET role = \(role) WHERE id = \(UUID(uuidString: signup.user.id)!)")
        var login = Caremesh_Identity_V1_LoginRequest()
        login.email = r.email
        login.password = r.password
        let session = try await client.call(IdentityMethods.login, request: login).session
        return TestAccount(id: UUID(uuidString: signup.user.id)!,
                           auth: CallOptions(metadata: ["authorization": "Bearer \(session.accessToken)"]))
    }
}

extension TestDatabase {
    /// Runs `query` as the superuser in the test database.
    func sql(_ query: PostgresQuery) async throws -> [PostgresRow] {
        try await Store.withSingleConnection(admin, logger: TestDatabase.logger) { c in
            var out: [PostgresRow] = []
            for try await row in try await c.query(query, logger: TestDatabase.logger) { out.append(row) }
            return out
        }
    }

    /// The single number `query` returns (-1 without a row).
    func count(_ query: PostgresQuery) async throws -> Int64 {
        try await sql(query).first?.decode(Int64.self) ?? -1
    }

    /// The single number `sql` returns as `service`'s own role (row-level security applies),
    /// after `setup` on the same connection (e.g. naming an acting user).
    func count(as service: String, _ sql: String, after setup: String? = nil) async throws -> Int64 {
        try await Store.withSingleConnection(url(service), logger: TestDatabase.logger) { c in
            if let setup { try await c.query(PostgresQuery(unsafeSQL: setup), logger: TestDatabase.logger) }
            return try await c.query(PostgresQuery(unsafeSQL: sql), logger: TestDatabase.logger).first(Int64.self) ?? -1
        }
    }
}

/// The status code `body` failed with (nil if it did not; UNKNOWN for an error that is not an RPC's).
func statusCode(of body: () async throws -> Void) async -> StatusCode? {
    do { try await body(); return nil } catch let e as RPCError { return e.code } catch { return .unknown }
}

/// The RPC error `body` failed with (nil if it did not).
func rpcError(of body: () async throws -> Void) async -> RPCError? {
    do { try await body(); return nil } catch { return rpcError(error) }
}

/// The fields the `INVALID_ARGUMENT` that `body` failed with names (empty if it did not fail).
func fieldViolations(of body: () async throws -> Void) async -> Set<String> {
    do {
        try await body()
        return []
    } catch let e as RPCError {
        return Set(e.details.flatMap { $0.badRequest.fieldViolations.map(\.field) })
    } catch { return ["not an RPCError"] }
}

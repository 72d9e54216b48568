import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// Volunteers and professionals: where they are, whether they are available, and whether
/// they may be offered an SOS at all (a projection of identity's events).
final class Responders: Sendable {
    let store: Store
    let logger: Logger
    /// Location fixes, written together: at a few thousand updates a second one upsert per
    /// fix costs PostgreSQL a statement and a commit each; one statement per batch does not.
    let fixes: GroupCommit<Fix, Double>

    /// Roles that respond to SOS.
    static let roles: Set<String> = ["volunteer", "professional"]
    /// Roles that see every responder and SOS (boards, analytics).
    static let staff: Set<String> = ["admin", "coordinator"]

    init(store: Store, logger: Logger) {
        self.store = store
        self.logger = logger
        fixes = GroupCommit(maxBatch: 500) { batch in try await Self.write(batch, store: store, logger: logger) }
    }

    /// The responder role a caller acts in (professional if they hold both).
    static func role(of caller: Caller) -> String { caller.has(role: "professional") ? "professional" : "volunteer" }

    // MARK: - RPC

    func updateLocation(_ r: Caremesh_Dispatch_V1_UpdateLocationRequest, _ context: RPCContext) async throws
        -> Caremesh_Dispatch_V1_UpdateLocationResponse
    {
        let id = try context.requireRole(Self.roles).requireUserID()
        var v = FieldViolations()
        Geo.validate(r.hasLocation ? r.location : nil, "location", into: &v)
        v.check(r.accuracyM.isFinite && r.accuracyM >= 0 && r.accuracyM <= 10_000, "accuracy_m", "must be between 0 and 10000 metres")
        try v.throwIfAny()
        let at = try await fixes.submit(Fix(userID: id, latitude: r.location.latitude, longitude: r.location.longitude,
                                            accuracyM: r.accuracyM))
        var response = Caremesh_Dispatch_V1_UpdateLocationResponse()
        response.updatedAt = Google_Protobuf_Timestamp(epochSeconds: at)
        return response
    }

    /// One responder's reported position.
    struct Fix: Sendable {
        var userID: UUID
        var latitude: Double
        var longitude: Double
        var accuracyM: Double
    }

    enum UpsertFixes: PreparedSQL {
        static let sql = """
            INSERT INTO user_locations (user_id, location, accuracy_m, updated_at)
            SELECT u, ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography, acc, now()
            FROM unnest($1, $2, $3, $4) AS f(u, lat, lon, acc)
            ON CONFLICT (user_id) DO UPDATE SET location = EXCLUDED.location, accuracy_m = EXCLUDED.accuracy_m,
                updated_at = EXCLUDED.updated_at
            RETURNING user_id, extract(epoch FROM updated_at)::float8
            """
        static let types: [PostgresDataType] = [.uuidArray, .float8Array, .float8Array, .float8Array]
    }

    /// Upserts a batch of fixes in one statement (a person's last fix in the batch wins: one
    /// row may change only once per statement); returns each fix's `updated_at` in epoch
    /// seconds, in the batch's order.
    static func write(_ batch: [Fix], store: Store, logger: Logger) async throws -> [Double] {
        var last: [UUID: Int] = [:]
        for (i, fix) in batch.enumerated() { last[fix.userID] = i }
        let rows = last.values.sorted().map { batch[$0] }
        let written = try await store.withConnection(timeout: .seconds(5)) { c in
            var at: [UUID: Double] = [:]
            let statement = try Prepared<UpsertFixes>(rows.map(\.userID), rows.map(\.latitude), rows.map(\.longitude),
                                                      rows.map(\.accuracyM))
            for row in try await c.run(statement, logger: logger) {
                let (id, t) = try row.decode((UUID, Double).self)
                at[id] = t
            }
            return at
        }
        return try batch.map { fix in
            guard let t = written[fix.userID] else { throw RPCError(.internal, "a location fix was not written") }
            return t
        }
    }

    func setAvailability(_ r: Caremesh_Dispatch_V1_SetAvailabilityRequest, _ context: RPCContext) async throws
        -> Caremesh_Dispatch_V1_SetAvailabilityResponse
    {
        let caller = try context.requireRole(Self.roles)
        let id = try caller.requireUserID()
        let role = Self.role(of: caller)
        return try await store.withTransaction { c in
            // A first call makes the row; a deactivated account may only become unavailable.
            let changed = try await c.query("""
                INSERT INTO responders (user_id, role, available) VALUES (\(id), \(role), \(r.available))
                ON CONFLICT (user_id) DO UPDATE SET available = EXCLUDED.available
                WHERE responders.active OR NOT EXCLUDED.available
                RETURNING 1
                """, logger: self.logger).hasRows()
            guard changed else { throw RPCError(.failedPrecondition, "this account is deactivated: it cannot be available") }
            var response = Caremesh_Dispatch_V1_SetAvailabilityResponse()
            response.responder = try await Self.load(c, id, logger: self.logger) ?? .init()
            return response
        }
    }

    func get(_ r: Caremesh_Dispatch_V1_GetResponderRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_GetResponderResponse {
        let id = try context.requireSelf(r.userID, field: "user_id", orRole: Self.staff)
        guard let responder = try await store.withConnection({ c in try await Self.load(c, id, logger: self.logger) }) else {
            throw RPCError(.notFound, "no responder with this id (not verified, never available)")
        }
        var response = Caremesh_Dispatch_V1_GetResponderResponse()
        response.responder = responder
        return response
    }

    static func load(_ c: PostgresConnection, _ id: UUID, logger: Logger) async throws -> Caremesh_Dispatch_V1_Responder? {
        let rows = try await c.query("""
            SELECT r.user_id, r.role, r.verified, r.active, r.credential_expired, r.available, r.skills,
                   r.average_rating::float8, r.rating_count, r.cancellation_count, extract(epoch FROM l.updated_at)::float8
            FROM responders r LEFT JOIN user_locations l USING (user_id) WHERE r.user_id = \(id)
            """, logger: logger)
        var out: Caremesh_Dispatch_V1_Responder?
        for try await row in rows {
            let r = row.makeRandomAccess()
            var p = Caremesh_Dispatch_V1_Responder()
            p.userID = try r[0].decode(UUID.self).uuidString.lowercased()
            p.role = .init(storedName: try r[1].decode(String.self))
            p.verified = try r[2].decode(Bool.self)
            p.active = try r[3].decode(Bool.self)
            p.credentialExpired = try r[4].decode(Bool.self)
            p.available = try r[5].decode(Bool.self)
            p.eligible = p.verified && p.active && !p.credentialExpired && p.available
            p.skills = try r[6].decode([String].self).map { .init(storedName: $0) }
            p.averageRating = try r[7].decode(Double.self)
            p.ratingCount = UInt32(try r[8].decode(Int32.self))
            p.cancellationCount = UInt32(try r[9].decode(Int32.self))
            if let at = try r[10].decode(Double?.self) { p.locationUpdatedAt = Google_Protobuf_Timestamp(epochSeconds: at) }
            out = p
        }
        return out
    }

    // MARK: - Identity's events

    /// Applies one of identity's events to the projection (in the consumer's transaction).
    /// Conservative on purpose: anything that may make a responder unfit (revocation, an
    /// expired certification, a role change, deactivation) stops offers until identity says
    /// they are verified again.
    static func apply(_ event: Event, _ c: PostgresConnection, logger: Logger) async throws {
        let payload = Data(event.payload)
        switch event.type {
        case Caremesh_Identity_V1_VolunteerVerified.protoMessageName:
            let e = try Caremesh_Identity_V1_VolunteerVerified(serializedBytes: payload)
            guard let id = UUID(uuidString: e.userID) else { return }
            let role = e.role == .professional ? "professional" : "volunteer"
            let skills = e.skills.compactMap(\.storedName)
            let at = Double(event.occurredAtUs) / 1e6
            try await c.query("""
                INSERT INTO responders (user_id, role, verified, verified_at, skills)
                VALUES (\(id), \(role), true, to_timestamp(\(at)), \(skills))
                ON CONFLICT (user_id) DO UPDATE SET role = EXCLUDED.role, verified = true, verified_at = EXCLUDED.verified_at,
                    skills = EXCLUDED.skills, credential_expired = false
                """, logger: logger)
        case Caremesh_Identity_V1_VerificationRevoked.protoMessageName:
            let e = try Caremesh_Identity_V1_VerificationRevoked(serializedBytes: payload)
            guard let id = UUID(uuidString: e.userID) else { return }
            try await c.query("UPDATE responders SET verified = false WHERE user_id = \(id)", logger: logger)
        case Caremesh_Identity_V1_CredentialExpired.protoMessageName:
            let e = try Caremesh_Identity_V1_CredentialExpired(serializedBytes: payload)
            guard let id = UUID(uuidString: e.userID) else { return }
            try await c.query("UPDATE responders SET credential_expired = true WHERE user_id = \(id)", logger: logger)
        case Caremesh_Identity_V1_UserRoleChanged.protoMessageName:
            let e = try Caremesh_Identity_V1_UserRoleChanged(serializedBytes: payload)
            guard let id = UUID(uuidString: e.userID) else { return }
            try await c.query("UPDATE responders SET verified = false, available = false WHERE user_id = \(id)", logger: logger)
        case Caremesh_Identity_V1_UserDeactivated.protoMessageName:
            let e = try Caremesh_Identity_V1_UserDeactivated(serializedBytes: payload)
            guard let id = UUID(uuidString: e.userID) else { return }
            try await c.query("""
                INSERT INTO responders (user_id, role, active, available) VALUES (\(id), 'volunteer', false, false)
                ON CONFLICT (user_id) DO UPDATE SET active = false, available = false
                """, logger: logger)
        default:
            return
        }
    }
}

/// Points on the wire and in SQL.
enum Geo {
    /// Adds violations for a missing or out-of-range point.
    static func validate(_ p: Caremesh_Dispatch_V1_LatLng?, _ field: String, into v: inout FieldViolations) {
        guard let p else { return v.add(field, "is required") }
        v.check(p.latitude.isFinite && (-90...90).contains(p.latitude), "\(field).latitude", "must be between -90 and 90")
        v.check(p.longitude.isFinite && (-180...180).contains(p.longitude), "\(field).longitude", "must be between -180 and 180")
    }
}

extension PostgresQuery.StringInterpolation {
    /// A point as `geography(Point, 4326)`, its coordinates bound.
    mutating func appendInterpolation(point p: Caremesh_Dispatch_V1_LatLng) {
        appendLiteral("ST_SetSRID(ST_MakePoint(")
        appendInterpolation(p.longitude)
        appendLiteral("::float8, ")
        appendInterpolation(p.latitude)
        appendLiteral("::float8), 4326)::geography")
    }
}

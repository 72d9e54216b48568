import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// Zones: named areas (one polygon each) and which of them covers a point. Alerts routes a
/// client to the coordinator of their zone; admins draw them.
struct Zones: Sendable {
    let store: Store
    let logger: Logger

    static let maxPoints = 10_000

    static let columns = """
        id, name, extract(epoch FROM updated_at)::float8,
        ARRAY(SELECT ST_Y(d.geom) FROM ST_DumpPoints(boundary::geometry) d ORDER BY d.path),
        ARRAY(SELECT ST_X(d.geom) FROM ST_DumpPoints(boundary::geometry) d ORDER BY d.path)
        """

    static func zone(_ row: PostgresRow) throws -> Caremesh_Dispatch_V1_Zone {
        let (id, name, updated, lats, lngs) = try row.decode((UUID, String, Double, [Double], [Double]).self)
        var z = Caremesh_Dispatch_V1_Zone()
        z.id = id.uuidString.lowercased()
        z.name = name
        z.updatedAt = Google_Protobuf_Timestamp(epochSeconds: updated)
        // The stored ring is closed; the wire's is not.
        z.boundary = zip(lats, lngs).dropLast().map { lat, lng in
            var p = Caremesh_Dispatch_V1_LatLng()
            p.latitude = lat
            p.longitude = lng
            return p
        }
        return z
    }

    /// The ring closed, or violations of `zone.boundary`.
    static func ring(_ points: [Caremesh_Dispatch_V1_LatLng], into v: inout FieldViolations) -> [Caremesh_Dispatch_V1_LatLng] {
        for (i, p) in points.enumerated() { Geo.validate(p, "zone.boundary[\(i)]", into: &v) }
        var ring = points
        if let first = ring.first, first != ring.last { ring.append(first) }
        let distinct = Set(ring.map { "\($0.latitude),\($0.longitude)" }).count
        v.check(distinct >= 3, "zone.boundary", "needs at least 3 distinct points")
        v.check(points.count <= maxPoints, "zone.boundary", "has at most \(maxPoints) points")
        return ring
    }

    func put(_ r: Caremesh_Dispatch_V1_PutZoneRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_PutZoneResponse {
        _ = try context.requireRole(["admin"])
        var v = FieldViolations()
        let name = r.zone.name
        v.check(name.wholeMatch(of: /[a-z0-9][a-z0-9-]{0,62}/) != nil, "zone.name",
                "must be 1 to 63 lowercase letters, digits and hyphens, starting with a letter or digit")
        let id = r.zone.id.isEmpty ? nil : UUID(uuidString: r.zone.id)
        v.check(r.zone.id.isEmpty || id != nil, "zone.id", "must be a UUID (or empty to create or replace by name)")
        let ring = Self.ring(r.zone.boundary, into: &v)
        try v.throwIfAny()
        let polygon: PostgresQuery.StringInterpolation.Polygon = (ring.map(\.longitude), ring.map(\.latitude))
        return try await store.withTransaction { c in
            for try await (valid, reason) in try await c.query("""
                SELECT ST_IsValid(p), ST_IsValidReason(p) FROM (SELECT \(polygon: polygon) AS p) t
                """, logger: self.logger).decode((Bool, String).self) where !valid {
                throw RPCError.invalidArgument(field: "zone.boundary", "is not a simple polygon (\(reason))")
            }
            let rows: PostgresRowSequence
            if let id {
                rows = try await c.query("""
                    WITH shape AS (SELECT \(polygon: polygon)::geography AS g)
                    UPDATE zones SET name = \(name), boundary = shape.g, area_m2 = ST_Area(shape.g) FROM shape
                    WHERE id = \(id) RETURNING \(unescaped: Self.columns)
                    """, logger: self.logger)
            } else {
                rows = try await c.query("""
                    WITH shape AS (SELECT \(polygon: polygon)::geography AS g)
                    INSERT INTO zones (name, boundary, area_m2) SELECT \(name), g, ST_Area(g) FROM shape
                    ON CONFLICT (name) DO UPDATE SET boundary = excluded.boundary, area_m2 = excluded.area_m2
                    RETURNING \(unescaped: Self.columns)
                    """, logger: self.logger)
            }
            var response = Caremesh_Dispatch_V1_PutZoneResponse()
            for try await row in rows { response.zone = try Self.zone(row) }
            guard response.hasZone else { throw RPCError(.notFound, "no zone with this id") }
            return response
        }
    }

    func list(_ r: Caremesh_Dispatch_V1_ListZonesRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_ListZonesResponse {
        _ = try context.requireCaller()
        return try await store.withConnection { c in
            var response = Caremesh_Dispatch_V1_ListZonesResponse()
            for try await row in try await c.query("SELECT \(unescaped: Self.columns) FROM zones ORDER BY name", logger: self.logger) {
                response.zones.append(try Self.zone(row))
            }
            return response
        }
    }

    /// The smallest zone that covers the point (a district inside a region wins).
    func find(_ r: Caremesh_Dispatch_V1_FindZoneRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_FindZoneResponse {
        _ = try context.requireCaller()
        var v = FieldViolations()
        Geo.validate(r.hasLocation ? r.location : nil, "location", into: &v)
        try v.throwIfAny()
        return try await store.withConnection { c in
            var response = Caremesh_Dispatch_V1_FindZoneResponse()
            for try await row in try await c.query("""
                SELECT \(unescaped: Self.columns) FROM zones WHERE ST_Covers(boundary, \(point: r.location))
                ORDER BY area_m2, name LIMIT 1
                """, logger: self.logger) {
                response.zone = try Self.zone(row)
                response.found = true
            }
            return response
        }
    }
}

extension PostgresQuery.StringInterpolation {
    /// A ring's longitudes and latitudes (closed).
    typealias Polygon = (longitudes: [Double], latitudes: [Double])

    /// The ring as `geometry(Polygon, 4326)`, its coordinates bound.
    mutating func appendInterpolation(polygon p: Polygon) {
        appendLiteral("ST_SetSRID(ST_MakePolygon(ST_MakeLine(ARRAY(SELECT ST_MakePoint(x, y) FROM unnest(")
        appendInterpolation(p.longitudes)
        appendLiteral("::float8[], ")
        appendInterpolation(p.latitudes)
        appendLiteral("::float8[]) WITH ORDINALITY AS t(x, y, n) ORDER BY n))), 4326)")
    }
}

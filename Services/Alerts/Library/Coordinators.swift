import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// Who receives care-alert calls (coordinators and on-call admin lines) and the escalation
/// policies that say who comes after a coordinator's backup. Admins change them; coordinators
/// and admins read them. The database refuses a backup that is the coordinator itself or
/// closes a cycle.
final class Coordinators: Sendable {
    let store: Store
    let logger: Logger

    static let admins: Set<String> = ["admin"]

    init(store: Store, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    static let tiers: [Caremesh_Alerts_V1_CoordinatorTier: String] = [.coordinator: "coordinator", .admin: "admin"]

    static let columns = """
        id, user_id, zone_id, phone_number, backup_coordinator_id, is_active, tier,
        extract(epoch FROM created_at)::float8, extract(epoch FROM updated_at)::float8
        """

    static func coordinator(_ row: PostgresRandomAccessRow) throws -> Caremesh_Alerts_V1_Coordinator {
        var k = Caremesh_Alerts_V1_Coordinator()
        k.id = try row[0].decode(UUID.self).text
        k.userID = try row[1].decode(UUID.self).text
        k.zoneID = try row[2].decode(UUID?.self)?.text ?? ""
        k.phoneNumber = try row[3].decode(String.self)
        k.backupCoordinatorID = try row[4].decode(UUID?.self)?.text ?? ""
        k.active = try row[5].decode(Bool.self)
        k.tier = tiers.key(for: try row[6].decode(String.self)) ?? .unspecified
        k.createdAt = Google_Protobuf_Timestamp(epochSeconds: try row[7].decode(Double.self))
        k.updatedAt = Google_Protobuf_Timestamp(epochSeconds: try row[8].decode(Double.self))
        return k
    }

    static func one(_ c: PostgresConnection, _ query: PostgresQuery, logger: Logger) async throws -> Caremesh_Alerts_V1_Coordinator? {
        var out: Caremesh_Alerts_V1_Coordinator?
        for try await row in try await c.query(query, logger: logger) { out = try coordinator(row.makeRandomAccess()) }
        return out
    }

    // MARK: - Coordinators

    func put(_ r: Caremesh_Alerts_V1_PutCoordinatorRequest, _ context: RPCContext) async throws -> Caremesh_Alerts_V1_PutCoordinatorResponse {
        _ = try context.requireRole(Self.admins)
        let k = r.coordinator
        var v = FieldViolations()
        let user = v.uuid(k.userID, "coordinator.user_id")
        let zone = v.optionalUUID(k.zoneID, "coordinator.zone_id")
        v.phone(k.phoneNumber, "coordinator.phone_number")
        let backup = v.optionalUUID(k.backupCoordinatorID, "coordinator.backup_coordinator_id")
        let tier = k.tier == .unspecified ? "coordinator" : Self.tiers[k.tier]
        v.check(tier != nil, "coordinator.tier", "must be COORDINATOR or ADMIN")
        try v.throwIfAny()
        let active: Bool? = k.hasActive ? k.active : nil
        do {
            var response = Caremesh_Alerts_V1_PutCoordinatorResponse()
            response.coordinator = try await store.withTransaction { c in
                guard let saved = try await Self.one(c, """
                    INSERT INTO coordinators (user_id, zone_id, phone_number, backup_coordinator_id, is_active, tier)
                    VALUES (\(user!), \(zone), \(k.phoneNumber), \(backup), coalesce(\(active), true), \(tier!))
                    ON CONFLICT (user_id) DO UPDATE SET zone_id = EXCLUDED.zone_id, phone_number = EXCLUDED.phone_number,
                        backup_coordinator_id = EXCLUDED.backup_coordinator_id,
                        is_active = coalesce(\(active), coordinators.is_active), tier = EXCLUDED.tier
                    RETURNING \(unescaped: Self.columns)
                    """, logger: self.logger) else { throw RPCError(.internal, "the upsert returned no row") }
                return saved
            }
            return response
        } catch {
            switch PSQLError.violation(in: error)?.constraint {
            case "coordinators_backup_coordinator_id_fkey":
                throw RPCError.invalidArgument(field: "coordinator.backup_coordinator_id", "names no coordinator")
            case "coordinators_backup_not_self":
                throw RPCError.invalidArgument(field: "coordinator.backup_coordinator_id", "must not be the coordinator itself")
            case "coordinators_backup_no_cycle":
                throw RPCError.invalidArgument(field: "coordinator.backup_coordinator_id",
                                               "would make a cycle of backups (this coordinator is already behind it)")
            default: throw error
            }
        }
    }

    func list(_ r: Caremesh_Alerts_V1_ListCoordinatorsRequest, _ context: RPCContext) async throws -> Caremesh_Alerts_V1_ListCoordinatorsResponse {
        _ = try context.requireRole(CareAlerts.staff)
        var v = FieldViolations()
        let zone = v.optionalUUID(r.zoneID, "zone_id")
        try v.throwIfAny()
        return try await store.withConnection { c in
            var response = Caremesh_Alerts_V1_ListCoordinatorsResponse()
            for try await row in try await c.query("""
                SELECT \(unescaped: Self.columns) FROM coordinators
                WHERE (\(zone)::uuid IS NULL OR zone_id = \(zone)) AND (NOT \(r.activeOnly) OR is_active)
                ORDER BY tier, zone_id NULLS LAST, created_at, id LIMIT 1000
                """, logger: self.logger) {
                response.coordinators.append(try Self.coordinator(row.makeRandomAccess()))
            }
            return response
        }
    }

    // MARK: - Escalation policies

    func putPolicy(_ r: Caremesh_Alerts_V1_PutEscalationPolicyRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_PutEscalationPolicyResponse
    {
        _ = try context.requireRole(Self.admins)
        let p = r.policy
        var v = FieldViolations()
        v.check(p.name.wholeMatch(of: /[a-z0-9][a-z0-9-]{0,62}/) != nil, "policy.name",
                "must be 1 to 63 lower-case letters, digits and hyphens, starting with a letter or digit")
        let zone = v.optionalUUID(p.zoneID, "policy.zone_id")
        v.check(p.repeatCount <= 5, "policy.repeat_count", "must be from 0 to 5")
        v.check(!p.steps.isEmpty && p.steps.count <= 10, "policy.steps", "must have 1 to 10 steps")
        var targets: [[UUID]] = []
        for (i, step) in p.steps.enumerated() {
            v.check((5...3_600).contains(step.ringTimeoutS), "policy.steps[\(i)].ring_timeout_s", "must be from 5 to 3600")
            let ids = step.coordinatorIds.compactMap(UUID.init(uuidString:))
            v.check(ids.count == step.coordinatorIds.count, "policy.steps[\(i)].coordinator_ids", "must be UUIDs")
            v.check((1...10).contains(ids.count) && Set(ids).count == ids.count, "policy.steps[\(i)].coordinator_ids",
                    "must name 1 to 10 different coordinators")
            targets.append(ids)
        }
        try v.throwIfAny()
        let stepTargets = targets
        do {
            var response = Caremesh_Alerts_V1_PutEscalationPolicyResponse()
            response.policy = try await store.withTransaction { c in
                guard let id = try await c.query("""
                    INSERT INTO escalation_policies (name, zone_id, repeat_count) VALUES (\(p.name), \(zone), \(Int32(p.repeatCount)))
                    ON CONFLICT (name) DO UPDATE SET zone_id = EXCLUDED.zone_id, repeat_count = EXCLUDED.repeat_count
                    RETURNING id
                    """, logger: self.logger).first(UUID.self) else { throw RPCError(.internal, "the upsert returned no row") }
                try await c.query("DELETE FROM escalation_steps WHERE policy_id = \(id)", logger: self.logger)
                let positions = p.steps.indices.map { Int32($0 + 1) }
                try await c.query("""
                    INSERT INTO escalation_steps (policy_id, position, ring_timeout_s)
                    SELECT \(id), n, t FROM unnest(\(positions)::int4[], \(p.steps.map { Int32($0.ringTimeoutS) })::int4[]) AS s(n, t)
                    """, logger: self.logger)
                let flat = zip(positions, stepTargets).flatMap { n, ids in ids.map { (n, $0) } }
                try await c.query("""
                    INSERT INTO escalation_step_targets (policy_id, position, coordinator_id)
                    SELECT \(id), n, k FROM unnest(\(flat.map(\.0))::int4[], \(flat.map(\.1))::uuid[]) AS t(n, k)
                    """, logger: self.logger)
                return try await self.policies(c, only: id).first!
            }
            return response
        } catch {
            switch PSQLError.violation(in: error)?.constraint {
            case "escalation_step_targets_coordinator_id_fkey":
                throw RPCError.invalidArgument(field: "policy.steps", "a coordinator id names no coordinator")
            case "escalation_policies_one_per_zone":
                throw RPCError(.alreadyExists, "another escalation policy already covers this zone (or is the default)",
                               details: [RPCError.detail(reason: "ZONE_HAS_POLICY", domain: "alerts")])
            default: throw error
            }
        }
    }

    func listPolicies(_ r: Caremesh_Alerts_V1_ListEscalationPoliciesRequest, _ context: RPCContext) async throws
        -> Caremesh_Alerts_V1_ListEscalationPoliciesResponse
    {
        _ = try context.requireRole(CareAlerts.staff)
        var response = Caremesh_Alerts_V1_ListEscalationPoliciesResponse()
        response.policies = try await store.withConnection { c in try await self.policies(c, only: nil) }
        return response
    }

    /// Every policy (or one) with its steps and their targets, in order.
    func policies(_ c: PostgresConnection, only: UUID?) async throws -> [Caremesh_Alerts_V1_EscalationPolicy] {
        let rows = try await c.query("""
            SELECT p.id, p.name, p.zone_id, p.repeat_count, extract(epoch FROM p.updated_at)::float8, s.position, s.ring_timeout_s,
                   (SELECT coalesce(array_agg(t.coordinator_id ORDER BY t.coordinator_id), '{}') FROM escalation_step_targets t
                    WHERE t.policy_id = s.policy_id AND t.position = s.position)
            FROM escalation_policies p LEFT JOIN escalation_steps s ON s.policy_id = p.id
            WHERE \(only)::uuid IS NULL OR p.id = \(only)
            ORDER BY p.zone_id NULLS LAST, p.name, s.position
            """, logger: logger)
        var out: [Caremesh_Alerts_V1_EscalationPolicy] = []
        for try await (id, name, zone, repeats, updated, position, timeout, targets)
            in rows.decode((UUID, String, UUID?, Int32, Double, Int32?, Int32?, [UUID]).self) {
            if out.last?.id != id.text {
                var p = Caremesh_Alerts_V1_EscalationPolicy()
                p.id = id.text
                p.name = name
                p.zoneID = zone?.text ?? ""
                p.repeatCount = UInt32(repeats)
                p.updatedAt = Google_Protobuf_Timestamp(epochSeconds: updated)
                out.append(p)
            }
            guard position != nil, let timeout else { continue }
            var step = Caremesh_Alerts_V1_EscalationStep()
            step.ringTimeoutS = UInt32(timeout)
            step.coordinatorIds = targets.map(\.text)
            out[out.count - 1].steps.append(step)
        }
        return out
    }
}

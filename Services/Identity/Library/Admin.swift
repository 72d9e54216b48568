import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// What admins do: list and deactivate users, review pending verifications, suspicious
/// activity and the PHI audit trail. Lists are newest first, in keyset pages (`Page`).
final class Admin: Sendable {
    let store: Store
    let outbox: Outbox
    let credentials: Credentials
    let logger: Logger

    /// Other services report suspicious activity (dispatch's SOS rate limit) with a service token.
    static let reporters: Set<String> = ["admin", "service"]

    init(store: Store, outbox: Outbox, credentials: Credentials, logger: Logger) {
        self.store = store
        self.outbox = outbox
        self.credentials = credentials
        self.logger = logger
    }

    // MARK: - Users

    func listUsers(_ r: Caremesh_Identity_V1_ListUsersRequest, _ context: RPCContext) async throws -> Caremesh_Identity_V1_ListUsersResponse {
        _ = try context.requireRole(Roles.admin)
        var v = FieldViolations()
        let role: String? = r.role == .unspecified ? nil : Roles.name(r.role)
        v.check(r.role == .unspecified || role != nil, "role", "is not a known role")
        let page = Page(size: r.pageSize, token: r.pageToken, into: &v)
        try v.throwIfAny()
        let inactive = r.includeInactive
        return try await store.withConnection { c in
            let rows = try await c.query("""
                SELECT \(unescaped: Accounts.userColumns), \(unescaped: Page.micros("created_at")) FROM users
                WHERE (\(role)::text IS NULL OR role = \(role)) AND (is_active OR \(inactive))
                  AND \(after: page, time: "created_at", id: "id")
                ORDER BY created_at DESC, id DESC LIMIT \(page.limit)
                """, logger: self.logger)
            var response = Caremesh_Identity_V1_ListUsersResponse()
            (response.users, response.nextPageToken) = try await page.collect(
                rows.decode((UUID, String, String, Bool, Bool, Double, Double, Int64).self)
            ) { r in (Accounts.user((r.0, r.1, r.2, r.3, r.4, r.5, r.6)), r.7, r.0) }
            return response
        }
    }

    func setRole(_ r: Caremesh_Identity_V1_SetUserRoleRequest, _ context: RPCContext) async throws -> Caremesh_Identity_V1_SetUserRoleResponse {
        let caller = try context.requireRole(Roles.admin)
        var v = FieldViolations()
        let id = UUID(uuidString: r.userID)
        v.check(id != nil, "user_id", "must be a UUID")
        v.check(Roles.name(r.role) != nil, "role", "must be one of USER, VOLUNTEER, PROFESSIONAL, CAREGIVER, COORDINATOR, EA, ADMIN")
        try v.throwIfAny()
        guard caller.userID != id else {
            throw RPCError(.permissionDenied, "admins cannot change their own role (another admin can)")
        }
        var response = Caremesh_Identity_V1_SetUserRoleResponse()
        response.user = try await store.withTransaction { c in
            try await Self.setRole(c, id: id!, role: r.role, by: caller.userID, logger: self.logger)
        }
        return response
    }

    /// Gives the user (by id, or by email ignoring case) the role, announcing `UserRoleChanged`
    /// if it changed, in the caller's transaction. Also how the first admin is made
    /// (`IdentityService.grantRole`, from the CLI). Giving back a role migration 0106 took
    /// confirms its review (`by`: the admin; nil from the CLI).
    static func setRole(_ c: PostgresConnection, id: UUID? = nil, email: String? = nil,
                        role: Caremesh_Identity_V1_Role, by admin: UUID? = nil, logger: Logger) async throws -> Caremesh_Identity_V1_User {
        let previous = try await Accounts.loadUser(c, """
            SELECT \(unescaped: Accounts.userColumns) FROM users
            WHERE id = \(id) OR lower(email) = lower(\(email)) FOR UPDATE
            """, logger: logger)
        guard let userID = UUID(uuidString: previous.id) else { return previous }
        try await c.query("""
            UPDATE role_reviews SET confirmed_by = \(admin), confirmed_at = now()
            WHERE user_id = \(userID) AND previous_role = \(Roles.name(role)!) AND confirmed_at IS NULL
            """, logger: logger)
        guard previous.role != role else { return previous }
        let user = try await Accounts.loadUser(c, """
            UPDATE users SET role = \(Roles.name(role)!) WHERE id = \(userID) RETURNING \(unescaped: Accounts.userColumns)
            """, logger: logger)
        var event = Caremesh_Identity_V1_UserRoleChanged()
        event.userID = user.id
        event.role = role
        event.previousRole = previous.role
        try await Outbox.append(event, key: user.id, schema: IdentityService.name, on: c, logger: logger)
        // Tokens carrying the old role stop at the router; the next refresh carries the new one.
        try await TokenRevocation.allTokens(c, user: userID, reason: "role_changed", logger: logger)
        return user
    }

    /// Deactivates an account: sign-in and refresh stop at once (every refresh token is
    /// revoked), and so do the access tokens already issued (`TokensRevoked`, enforced by the
    /// router). Announced as `UserDeactivated`, which dispatch uses to stop offering the person work.
    func deactivate(_ r: Caremesh_Identity_V1_DeactivateUserRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_DeactivateUserResponse
    {
        let caller = try context.requireRole(Roles.admin)
        var v = FieldViolations()
        let id = UUID(uuidString: r.userID)
        v.check(id != nil, "user_id", "must be a UUID")
        Validate.name(r.reason, into: &v, field: "reason", max: 500)
        try v.throwIfAny()
        guard let admin = caller.userID, admin != id! else {
            throw RPCError(.permissionDenied, "admins cannot deactivate their own account")
        }
        let reason = r.reason.trimmingCharacters(in: .whitespacesAndNewlines)
        return try await store.withTransaction { c in
            let changed = try await c.query("""
                UPDATE users SET is_active = false, deactivated_at = now(), deactivated_by = \(admin), deactivation_reason = \(reason)
                WHERE id = \(id!) AND is_active RETURNING id
                """, logger: self.logger).hasRows()
            let user = try await Accounts.loadUser(c, "SELECT \(unescaped: Accounts.userColumns) FROM users WHERE id = \(id!)", logger: self.logger)
            if changed {
                try await c.query("""
                    UPDATE refresh_tokens SET revoked_at = now(), revoked_reason = 'deactivated'
                    WHERE user_id = \(id!) AND revoked_at IS NULL
                    """, logger: self.logger)
                var event = Caremesh_Identity_V1_UserDeactivated()
                event.userID = user.id
                event.reason = reason
                _ = try await self.outbox.append(event, key: user.id, on: c)
                try await TokenRevocation.allTokens(c, user: id!, reason: "deactivated", logger: self.logger)
            }
            var response = Caremesh_Identity_V1_DeactivateUserResponse()
            response.user = user
            return response
        }
    }

    // MARK: - Verifications

    func listPending(_ r: Caremesh_Identity_V1_ListPendingVerificationsRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_ListPendingVerificationsResponse
    {
        _ = try context.requireRole(Roles.admin)
        let page = try Page(size: r.pageSize, token: r.pageToken)
        return try await store.withConnection { c in
            let rows = try await c.query("""
                SELECT user_id, \(unescaped: Page.micros("submitted_at")) FROM (
                    SELECT user_id, submitted_at FROM volunteers WHERE verification = 'pending'
                    UNION ALL SELECT user_id, submitted_at FROM professionals WHERE verification = 'pending') AS p
                WHERE \(after: page, time: "submitted_at", id: "user_id")
                ORDER BY submitted_at DESC, user_id DESC LIMIT \(page.limit)
                """, logger: self.logger)
            let (ids, token) = try await page.collect(rows.decode((UUID, Int64).self)) { r in (r.0, r.1, r.0) }
            var response = Caremesh_Identity_V1_ListPendingVerificationsResponse()
            for id in ids { response.verifications.append(try await self.credentials.load(c, id)) }
            response.nextPageToken = token
            return response
        }
    }

    // MARK: - Suspicious activity

    func recordSuspicious(_ r: Caremesh_Identity_V1_RecordSuspiciousActivityRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_RecordSuspiciousActivityResponse
    {
        _ = try context.requireRole(Self.reporters)
        var v = FieldViolations()
        let user = v.optionalUUID(r.userID, "user_id")
        v.check(r.activityType.range(of: "^[A-Z][A-Z0-9_]{2,49}$", options: .regularExpression) != nil, "activity_type",
                "must be an UPPER_SNAKE_CASE code such as RATE_LIMIT_EXCEEDED")
        v.check(r.details.count <= 20 && r.details.allSatisfy { $0.key.count <= 50 && $0.value.count <= 500 }, "details",
                "at most 20 entries, keys of at most 50 and values of at most 500 characters")
        v.check(r.ipAddress.isEmpty || Self.isIPAddress(r.ipAddress), "ip_address", "must be an IPv4 or IPv6 address")
        try v.throwIfAny()
        return try await store.withTransaction { c in
            if let user, !(try await c.query("SELECT 1 FROM users WHERE id = \(user)", logger: self.logger).hasRows()) {
                throw RPCError(.notFound, "user_id: no such user")
            }
            var response = Caremesh_Identity_V1_RecordSuspiciousActivityResponse()
            response.activity = try await Suspicious.record(c, outbox: self.outbox, userID: user, type: r.activityType,
                                                            details: r.details, ip: r.ipAddress.isEmpty ? nil : r.ipAddress,
                                                            logger: self.logger)
            return response
        }
    }

    static func isIPAddress(_ s: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, s, &v4) == 1 || inet_pton(AF_INET6, s, &v6) == 1
    }

    func listSuspicious(_ r: Caremesh_Identity_V1_ListSuspiciousActivitiesRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_ListSuspiciousActivitiesResponse
    {
        _ = try context.requireRole(Roles.admin)
        var v = FieldViolations()
        let user = v.optionalUUID(r.userID, "user_id")
        let type: String? = r.activityType.isEmpty ? nil : r.activityType
        let page = Page(size: r.pageSize, token: r.pageToken, into: &v)
        try v.throwIfAny()
        return try await store.withConnection { c in
            let rows = try await c.query("""
                SELECT id, coalesce(user_id::text, ''), activity_type, details::text, coalesce(host(ip_address), ''),
                       extract(epoch FROM created_at)::float8, \(unescaped: Page.micros("created_at"))
                FROM suspicious_activities
                WHERE (\(user)::uuid IS NULL OR user_id = \(user)) AND (\(type)::text IS NULL OR activity_type = \(type))
                  AND \(after: page, time: "created_at", id: "id")
                ORDER BY created_at DESC, id DESC LIMIT \(page.limit)
                """, logger: self.logger)
            var response = Caremesh_Identity_V1_ListSuspiciousActivitiesResponse()
            (response.activities, response.nextPageToken) = try await page.collect(
                rows.decode((UUID, String, String, String, String, Double, Int64).self)
            ) { (id, userID, kind, details, ip, at, micros) in
                var a = Caremesh_Identity_V1_SuspiciousActivity()
                a.id = id.uuidString.lowercased()
                a.userID = userID
                a.activityType = kind
                if let object = try? JSONSerialization.jsonObject(with: Data(details.utf8)) as? [String: Any] {
                    a.details = object.mapValues { "\($0)" }
                }
                a.ipAddress = ip
                a.createdAt = Google_Protobuf_Timestamp(epochSeconds: at)
                return (a, micros, id)
            }
            return response
        }
    }

    // MARK: - Audit trail

    func listAudit(_ r: Caremesh_Identity_V1_ListAuditEntriesRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_ListAuditEntriesResponse
    {
        _ = try context.requireRole(Roles.admin)
        var v = FieldViolations()
        let record = v.optionalUUID(r.recordID, "record_id")
        let actor = v.optionalUUID(r.actorID, "actor_id")
        let page = Page(size: r.pageSize, token: r.pageToken, into: &v)
        try v.throwIfAny()
        return try await store.withConnection { c in
            let rows = try await c.query("""
                SELECT id, coalesce(actor_id::text, 'service:' || actor_service), actor_roles, action, record_type, coalesce(record_id::text, ''), coalesce(result_count, 0),
                       purpose, request_id, extract(epoch FROM at)::float8, \(unescaped: Page.micros("at"))
                FROM audit_log
                WHERE (\(record)::uuid IS NULL OR record_id = \(record)) AND (\(actor)::uuid IS NULL OR actor_id = \(actor))
                  AND \(after: page, time: "at", id: "id")
                ORDER BY at DESC, id DESC LIMIT \(page.limit)
                """, logger: self.logger)
            var response = Caremesh_Identity_V1_ListAuditEntriesResponse()
            (response.entries, response.nextPageToken) = try await page.collect(
                rows.decode((UUID, String, [String], String, String, String, Int32, String, String, Double, Int64).self)
            ) { row in
                var e = Caremesh_Identity_V1_AuditEntry()
                e.id = row.0.uuidString.lowercased()
                e.actorID = row.1
                e.actorRoles = row.2
                e.action = row.3
                e.recordType = row.4
                e.recordID = row.5
                e.resultCount = UInt32(row.6)
                e.purpose = People.purpose(named: row.7)
                e.requestID = row.8
                e.at = Google_Protobuf_Timestamp(epochSeconds: row.9)
                return (e, row.10, row.0)
            }
            return response
        }
    }
}

import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// Company announcements (seed 002): admins publish (each announced by `AnnouncementPublished`,
/// ids only) and retire them; everyone signed in lists the active ones that have not expired,
/// newest first. Admins may list the retired and expired ones too.
final class Announcements: Sendable {
    let store: Store
    let outbox: Outbox
    let logger: Logger

    static let admins: Set<String> = ["admin"]

    init(store: Store, outbox: Outbox, logger: Logger) {
        self.store = store
        self.outbox = outbox
        self.logger = logger
    }

    func publish(_ r: Caremesh_Messaging_V1_PublishAnnouncementRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_PublishAnnouncementResponse
    {
        let me = try context.requireRole(Self.admins).requireUserID()
        var v = FieldViolations()
        let title = r.title.trimmingCharacters(in: .whitespacesAndNewlines)
        let content = r.content.trimmingCharacters(in: .whitespacesAndNewlines)
        v.check((1...200).contains(title.unicodeScalars.count), "title", "must be 1 to 200 characters")
        v.check((1...5_000).contains(content.unicodeScalars.count), "content", "must be 1 to 5000 characters")
        let expires: Date? = r.hasExpiresAt ? r.expiresAt.date : nil
        v.check(expires.map { $0 > Date() } ?? true, "expires_at", "must be in the future")
        try v.throwIfAny()
        return try await store.withTransaction { c in
            guard let a = try await self.announcements(c, """
                INSERT INTO company_announcements (title, content, expires_at, created_by)
                VALUES (\(title), \(content), \(expires), \(me)) RETURNING \(unescaped: Self.columns)
                """).first else { throw RPCError(.internal, "the insert returned no row") }
            var e = Caremesh_Messaging_V1_AnnouncementPublished()
            e.announcementID = a.id
            e.title = a.title
            _ = try await self.outbox.append(e, key: a.id, on: c)
            var response = Caremesh_Messaging_V1_PublishAnnouncementResponse()
            response.announcement = a
            return response
        }
    }

    func retire(_ r: Caremesh_Messaging_V1_RetireAnnouncementRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_RetireAnnouncementResponse
    {
        let me = try context.requireRole(Self.admins).requireUserID()
        var v = FieldViolations()
        let id = v.uuid(r.id, "id")
        try v.throwIfAny()
        return try await store.withConnection { c in
            // Retiring twice is a no-op: the first retirement stands.
            guard let a = try await self.announcements(c, """
                UPDATE company_announcements SET is_active = false, retired_by = coalesce(retired_by, \(me))
                WHERE id = \(id!) RETURNING \(unescaped: Self.columns)
                """).first else { throw RPCError(.notFound, "no such announcement") }
            var response = Caremesh_Messaging_V1_RetireAnnouncementResponse()
            response.announcement = a
            return response
        }
    }

    func list(_ r: Caremesh_Messaging_V1_ListAnnouncementsRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_ListAnnouncementsResponse
    {
        let caller = try context.requireCaller()
        _ = try caller.requireUserID()
        guard !r.includeInactive || caller.hasAny(of: Self.admins) else {
            throw RPCError(.permissionDenied, "only admins list retired and expired announcements")
        }
        let page = try Page(size: r.pageSize, token: r.pageToken)
        let all = r.includeInactive
        return try await store.withConnection { c in
            let rows = try await c.query("""
                SELECT \(unescaped: Self.columns), \(unescaped: Page.micros("created_at")) FROM company_announcements
                WHERE (\(all) OR (is_active AND (expires_at IS NULL OR expires_at > now())))
                  AND \(after: page, time: "created_at", id: "id")
                ORDER BY created_at DESC, id DESC LIMIT \(page.limit)
                """, logger: self.logger)
            var response = Caremesh_Messaging_V1_ListAnnouncementsResponse()
            (response.announcements, response.nextPageToken) = try await page.collect(rows) { row in
                let r = row.makeRandomAccess()
                let a = try Self.announcement(r)
                return (a, try r[8].decode(Int64.self), UUID(uuidString: a.id)!)
            }
            return response
        }
    }

    static let columns = """
        id, title, content, is_active, extract(epoch FROM expires_at)::float8, created_by,
        extract(epoch FROM created_at)::float8, extract(epoch FROM updated_at)::float8
        """

    static func announcement(_ r: PostgresRandomAccessRow) throws -> Caremesh_Messaging_V1_Announcement {
        var a = Caremesh_Messaging_V1_Announcement()
        a.id = try r[0].decode(UUID.self).text
        a.title = try r[1].decode(String.self)
        a.content = try r[2].decode(String.self)
        a.isActive = try r[3].decode(Bool.self)
        if let t = try r[4].decode(Double?.self) { a.expiresAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        a.createdBy = try r[5].decode(UUID.self).text
        a.createdAt = Google_Protobuf_Timestamp(epochSeconds: try r[6].decode(Double.self))
        a.updatedAt = Google_Protobuf_Timestamp(epochSeconds: try r[7].decode(Double.self))
        return a
    }

    private func announcements(_ c: PostgresConnection, _ query: PostgresQuery) async throws -> [Caremesh_Messaging_V1_Announcement] {
        var out: [Caremesh_Messaging_V1_Announcement] = []
        for try await row in try await c.query(query, logger: logger) { out.append(try Self.announcement(row.makeRandomAccess())) }
        return out
    }
}

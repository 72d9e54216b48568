import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Crypto
import Foundation
import PostgresNIO
import SwiftProtobuf

/// A person's own notifications, and what the router's edge needs for the live stream.
extension Notifications {
    /// Who replays a person's notifications to resume a stream: the router's edge.
    static let streamer = "service:router"
    /// How long a browser's stream ticket works.
    static let ticketLifetime: TimeInterval = 60

    func listMine(_ r: Caremesh_Messaging_V1_ListMyNotificationsRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_ListMyNotificationsResponse
    {
        let caller = try context.requireCaller()
        let me = try caller.requireUserID()
        var v = FieldViolations()
        let limit = v.limit(r.pageSize, default: 50, max: 500, field: "page_size")
        // The token is the last seq of the page before (pages go newest first).
        let before: Int64? = r.pageToken.isEmpty ? nil : Int64(r.pageToken)
        v.check(r.pageToken.isEmpty || (before ?? 0) > 0, "page_token", "is not a token this method returned")
        try v.throwIfAny()
        return try await store.withActor(me.text, roles: caller.roles) { c in
            var found: [Caremesh_Messaging_V1_Notification] = []
            for try await row in try await c.query("""
                SELECT \(unescaped: Self.columns("n")) FROM notifications n
                WHERE n.person_id = \(me) AND (\(before)::int8 IS NULL OR n.seq < \(before))
                  AND (NOT \(r.unreadOnly) OR n.read_at IS NULL)
                ORDER BY n.seq DESC LIMIT \(limit + 1)
                """, logger: self.logger) { found.append(try Self.notification(row)) }
            var response = Caremesh_Messaging_V1_ListMyNotificationsResponse()
            if found.count > limit {
                found.removeLast()
                response.nextPageToken = "\(found.last!.seq)"
            }
            try await self.deliveries(c, of: &found)
            response.notifications = found
            response.unreadCount = try await self.unread(c, me)
            return response
        }
    }

    func markRead(_ r: Caremesh_Messaging_V1_MarkNotificationsReadRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_MarkNotificationsReadResponse
    {
        let caller = try context.requireCaller()
        let me = try caller.requireUserID()
        var v = FieldViolations()
        v.check(r.ids.count <= 500, "ids", "at most 500 at a time")
        let ids = r.ids.enumerated().compactMap { i, text in v.uuid(text, "ids[\(i)]") }
        v.check(r.upToSeq >= 0, "up_to_seq", "must be 0 or more")
        v.check(!r.ids.isEmpty || r.upToSeq > 0, "ids", "name notifications, or give up_to_seq")
        try v.throwIfAny()
        return try await store.withActor(me.text, roles: caller.roles) { c in
            let marked = try await c.query("""
                WITH read AS (
                    UPDATE notifications SET read_at = now()
                    WHERE person_id = \(me) AND read_at IS NULL AND (id = ANY(\(ids)::uuid[]) OR seq <= \(r.upToSeq))
                    RETURNING id),
                streamed AS (
                    UPDATE notification_deliveries d SET status = 'read', updated_at = now()
                    FROM read WHERE d.notification_id = read.id AND d.channel = 'stream')
                SELECT count(*) FROM read
                """, logger: self.logger).first(Int64.self) ?? 0
            var response = Caremesh_Messaging_V1_MarkNotificationsReadResponse()
            response.marked = UInt32(marked)
            response.unreadCount = try await self.unread(c, me)
            return response
        }
    }

    private func unread(_ c: PostgresConnection, _ person: UUID) async throws -> UInt32 {
        UInt32(try await c.query("""
            SELECT count(*) FROM notifications WHERE person_id = \(person) AND read_at IS NULL
            """, logger: logger).first(Int64.self) ?? 0)
    }

    // MARK: - The live stream (the router's HTTP edge)

    /// A single-use ticket, for a browser's EventSource (which cannot send a token): only its
    /// hash is kept.
    func createTicket(_ r: Caremesh_Messaging_V1_CreateNotificationStreamTicketRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_CreateNotificationStreamTicketResponse
    {
        let me = try context.requireCaller().requireUserID()
        let ticket = Base64URL.encode(Data(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }))
        let expires = Date().addingTimeInterval(Self.ticketLifetime)
        try await store.withTransaction { c in
            try await c.query("DELETE FROM notification_stream_tickets WHERE expires_at < now() - interval '1 hour'", logger: self.logger)
            try await c.query("""
                INSERT INTO notification_stream_tickets (ticket_hash, person_id, expires_at) VALUES (\(Self.hash(ticket)), \(me), \(expires))
                """, logger: self.logger)
        }
        var response = Caremesh_Messaging_V1_CreateNotificationStreamTicketResponse()
        response.ticket = ticket
        response.expiresAt = Google_Protobuf_Timestamp(date: expires)
        return response
    }

    func openStream(_ r: Caremesh_Messaging_V1_OpenNotificationStreamRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_OpenNotificationStreamResponse
    {
        var response = Caremesh_Messaging_V1_OpenNotificationStreamResponse()
        response.personID = try context.requireCaller().requireUserID().text
        return response
    }

    func redeemTicket(_ r: Caremesh_Messaging_V1_RedeemNotificationStreamTicketRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_RedeemNotificationStreamTicketResponse
    {
        let refused = RPCError(.unauthenticated, "the stream ticket is unknown, used or expired: ask for a new one")
        guard !r.ticket.isEmpty, r.ticket.count <= 100 else { throw refused }
        let person = try await store.query("""
            UPDATE notification_stream_tickets SET used_at = now()
            WHERE ticket_hash = \(Self.hash(r.ticket)) AND used_at IS NULL AND expires_at > now() RETURNING person_id
            """).first?.decode(UUID.self)
        guard let person else { throw refused }
        var response = Caremesh_Messaging_V1_RedeemNotificationStreamTicketResponse()
        response.personID = person.text
        return response
    }

    /// A person's notifications after `after_seq`, oldest first: the router's edge only.
    func replay(_ r: Caremesh_Messaging_V1_ReplayNotificationsRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_ReplayNotificationsResponse
    {
        _ = try context.requireService([Self.streamer], "only the router's edge replays notifications")
        var v = FieldViolations()
        let person = v.uuid(r.personID, "person_id")
        v.check(r.afterSeq >= 0, "after_seq", "must be 0 or more")
        let limit = v.limit(r.limit, default: 100)
        try v.throwIfAny()
        return try await store.withActor(MessagingService.actor, roles: ["service"]) { c in
            var found: [Caremesh_Messaging_V1_Notification] = []
            for try await row in try await c.query("""
                SELECT \(unescaped: Self.columns("n")) FROM notifications n WHERE n.person_id = \(person!) AND n.seq > \(r.afterSeq)
                ORDER BY n.seq LIMIT \(limit + 1)
                """, logger: self.logger) { found.append(try Self.notification(row)) }
            var response = Caremesh_Messaging_V1_ReplayNotificationsResponse()
            if found.count > limit {
                found.removeLast()
                response.more = true
            }
            try await self.deliveries(c, of: &found)
            response.notifications = found
            return response
        }
    }

    static func hash(_ ticket: String) -> Data { Data(SHA256.hash(data: Data(ticket.utf8))) }
}

import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// SOS chat (seed 001): one chat per SOS between the person who asked for help and the
/// volunteer who took it.
///
/// Dispatch's events make the membership, each in the event consumer's transaction:
/// `SosCreated` opens the chat with the requester, `SosAccepted` adds the volunteer, an SOS
/// going back to waiting (the volunteer dropped out) removes its volunteers, and `RESOLVED` or
/// `CANCELLED` closes it (read only). Only active participants read and write; anyone else is
/// `PERMISSION_DENIED`. A post locks the chat's row and takes the next number, so the numbers
/// (and the times, taken under the lock) follow commit order; read marks are per participant
/// and only move forward (writing is not reading); a message is `is_read` once someone other
/// than its sender read it.
final class SosChat: Sendable {
    let store: Store
    let outbox: Outbox
    let notifications: Notifications
    let logger: Logger

    init(store: Store, outbox: Outbox, notifications: Notifications, logger: Logger) {
        self.store = store
        self.outbox = outbox
        self.notifications = notifications
        self.logger = logger
    }

    // MARK: - Membership from dispatch's events

    func apply(_ event: Event, _ c: PostgresConnection) async throws {
        let payload = Data(event.payload)
        switch event.type {
        case Caremesh_Dispatch_V1_SosCreated.protoMessageName:
            let e = try Caremesh_Dispatch_V1_SosCreated(serializedBytes: payload)
            guard let sos = UUID(uuidString: e.sosID), let requester = UUID(uuidString: e.requesterID) else { return }
            try await join(sos, requester: requester, user: requester, role: "requester", on: c)
        case Caremesh_Dispatch_V1_SosAccepted.protoMessageName:
            let e = try Caremesh_Dispatch_V1_SosAccepted(serializedBytes: payload)
            guard let sos = UUID(uuidString: e.sosID), let requester = UUID(uuidString: e.requesterID),
                  let responder = UUID(uuidString: e.responderID) else { return }
            try await join(sos, requester: requester, user: responder, role: "responder", on: c)
        case Caremesh_Dispatch_V1_SosStatusChanged.protoMessageName:
            let e = try Caremesh_Dispatch_V1_SosStatusChanged(serializedBytes: payload)
            guard let sos = UUID(uuidString: e.sosID) else { return }
            let taken: [Caremesh_Dispatch_V1_SosStatus] = [.accepted, .inProgress]
            let waiting: [Caremesh_Dispatch_V1_SosStatus] = [.pending, .escalated]
            if e.status == .resolved || e.status == .cancelled {
                try await c.query("UPDATE sos_chats SET open = false WHERE sos_id = \(sos) AND open", logger: logger)
            } else if waiting.contains(e.status), taken.contains(e.previousStatus) {
                // The volunteer dropped out: the SOS is offered again, and they leave the chat.
                try await c.query("""
                    UPDATE sos_chat_participants SET active = false WHERE sos_id = \(sos) AND role = 'responder' AND active
                    """, logger: logger)
            }
        default:
            return
        }
    }

    private func join(_ sos: UUID, requester: UUID, user: UUID, role: String, on c: PostgresConnection) async throws {
        try await c.query("""
            WITH chat AS (INSERT INTO sos_chats (sos_id, requester_id) VALUES (\(sos), \(requester)) ON CONFLICT DO NOTHING)
            INSERT INTO sos_chat_participants (sos_id, user_id, role) VALUES (\(sos), \(user), \(role))
            ON CONFLICT (sos_id, user_id) DO UPDATE SET active = true
            """, logger: logger)
    }

    // MARK: - Calls

    /// The caller's place in the SOS's chat: NOT_FOUND without a chat, PERMISSION_DENIED for
    /// anyone but an active participant. `lock` holds the chat's row for the transaction.
    private func member(_ c: PostgresConnection, _ sos: UUID, _ user: UUID, lock: Bool) async throws -> (open: Bool, readUpTo: Int64) {
        let rows = try await c.query("""
            SELECT ch.open, coalesce(p.active, false), coalesce(p.read_up_to, 0) FROM sos_chats ch
            LEFT JOIN sos_chat_participants p ON p.sos_id = ch.sos_id AND p.user_id = \(user)
            WHERE ch.sos_id = \(sos) \(unescaped: lock ? "FOR UPDATE OF ch" : "")
            """, logger: logger).collect()
        guard let row = rows.first else { throw RPCError(.notFound, "no chat for this SOS (yet)") }
        let (open, active, readUpTo) = try row.decode((Bool, Bool, Int64).self)
        guard active else { throw RPCError(.permissionDenied, "only the SOS's participants read and write its chat") }
        return (open, readUpTo)
    }

    func send(_ r: Caremesh_Messaging_V1_SendChatMessageRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_SendChatMessageResponse
    {
        let me = try context.requireCaller().requireUserID()
        var v = FieldViolations()
        let sos = v.uuid(r.sosID, "sos_id")
        let (content, key) = ThreadPost.read(content: r.content, max: 2_000, clientMessageID: r.clientMessageID, into: &v)
        try v.throwIfAny()
        return try await store.withTransaction { c in
            let (open, _) = try await self.member(c, sos!, me, lock: true)
            var response = Caremesh_Messaging_V1_SendChatMessageResponse()
            if let key, let earlier = try await self.messages(c, """
                SELECT \(unescaped: Self.columns) FROM chat_messages WHERE sos_id = \(sos!) AND sender_id = \(me) AND client_message_id = \(key)
                """).first {
                try ThreadPost.replay(earlier.content, content)
                response.message = earlier
                return response
            }
            guard open else { throw RPCError(.failedPrecondition, "the SOS is over: its chat is read only") }
            guard let posted = try await self.messages(c, """
                WITH n AS (UPDATE sos_chats SET last_number = last_number + 1, last_message_at = clock_timestamp()
                           WHERE sos_id = \(sos!) RETURNING last_number, last_message_at)
                INSERT INTO chat_messages (sos_id, number, sender_id, content, client_message_id, created_at)
                SELECT \(sos!), n.last_number, \(me), \(content), \(key), n.last_message_at FROM n
                RETURNING \(unescaped: Self.columns)
                """).first else { throw RPCError(.internal, "the post returned no row") }
            let others = try await c.query("""
                SELECT user_id FROM sos_chat_participants WHERE sos_id = \(sos!) AND active AND user_id <> \(me) ORDER BY joined_at
                """, logger: self.logger).collect().map { try $0.decode(UUID.self).text }
            var e = Caremesh_Messaging_V1_ChatMessagePosted()
            e.sosID = posted.sosID
            e.messageID = posted.id
            e.senderID = posted.senderID
            e.number = posted.number
            e.recipientIds = others
            let event = try await self.outbox.append(e, key: posted.sosID, on: c)
            // The others are told (stream and push, never the text).
            try await self.notifications.announce(e, event: event, on: c)
            response.message = posted
            response.created = true
            return response
        }
    }

    func list(_ r: Caremesh_Messaging_V1_ListChatMessagesRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_ListChatMessagesResponse
    {
        let me = try context.requireCaller().requireUserID()
        var v = FieldViolations()
        let sos = v.uuid(r.sosID, "sos_id")
        let limit = v.limit(r.limit, default: 100, max: 500)
        v.check(r.afterNumber <= UInt64(Int64.max), "after_number", "is too large")
        try v.throwIfAny()
        return try await store.withConnection { c in
            let (open, readUpTo) = try await self.member(c, sos!, me, lock: false)
            var response = Caremesh_Messaging_V1_ListChatMessagesResponse()
            response.messages = try await self.messages(c, """
                SELECT \(unescaped: Self.columns) FROM chat_messages WHERE sos_id = \(sos!) AND number > \(Int64(r.afterNumber))
                ORDER BY number LIMIT \(limit)
                """)
            response.unreadCount = try await self.unread(c, sos!, me, after: readUpTo)
            response.open = open
            return response
        }
    }

    func markRead(_ r: Caremesh_Messaging_V1_MarkChatReadRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_MarkChatReadResponse
    {
        let me = try context.requireCaller().requireUserID()
        var v = FieldViolations()
        let sos = v.uuid(r.sosID, "sos_id")
        v.check(r.upToNumber <= UInt64(Int64.max), "up_to_number", "is too large")
        try v.throwIfAny()
        let upTo: Int64? = r.upToNumber == 0 ? nil : Int64(r.upToNumber)
        return try await store.withTransaction { c in
            _ = try await self.member(c, sos!, me, lock: false)
            let readUpTo = try await c.query("""
                UPDATE sos_chat_participants p SET read_up_to = greatest(p.read_up_to, least(coalesce(\(upTo), ch.last_number), ch.last_number))
                FROM sos_chats ch WHERE ch.sos_id = p.sos_id AND p.sos_id = \(sos!) AND p.user_id = \(me)
                RETURNING p.read_up_to
                """, logger: self.logger).first(Int64.self) ?? 0
            try await c.query("""
                UPDATE chat_messages SET is_read = true, read_at = now()
                WHERE sos_id = \(sos!) AND number <= \(readUpTo) AND sender_id <> \(me) AND NOT is_read
                """, logger: self.logger)
            var response = Caremesh_Messaging_V1_MarkChatReadResponse()
            response.readUpTo = UInt64(readUpTo)
            response.unreadCount = try await self.unread(c, sos!, me, after: readUpTo)
            return response
        }
    }

    func chats(_ r: Caremesh_Messaging_V1_ListChatsRequest, _ context: RPCContext) async throws -> Caremesh_Messaging_V1_ListChatsResponse {
        let me = try context.requireCaller().requireUserID()
        var v = FieldViolations()
        let limit = v.limit(r.limit, default: 50, max: 200)
        try v.throwIfAny()
        return try await store.withConnection { c in
            let rows = try await c.query("""
                SELECT * FROM (
                    SELECT ch.sos_id, ch.last_number, extract(epoch FROM ch.last_message_at)::float8, ch.open,
                           (SELECT count(*) FROM chat_messages m
                            WHERE m.sos_id = ch.sos_id AND m.number > p.read_up_to AND m.sender_id <> p.user_id) AS unread,
                           coalesce(ch.last_message_at, ch.created_at) AS at
                    FROM sos_chat_participants p JOIN sos_chats ch ON ch.sos_id = p.sos_id
                    WHERE p.user_id = \(me) AND p.active) x
                WHERE NOT \(r.unreadOnly) OR unread > 0
                ORDER BY at DESC, sos_id LIMIT \(limit)
                """, logger: self.logger)
            var response = Caremesh_Messaging_V1_ListChatsResponse()
            for try await (sos, last, at, open, unread, _) in rows.decode((UUID, Int64, Double?, Bool, Int64, Date).self) {
                var s = Caremesh_Messaging_V1_ChatSummary()
                s.sosID = sos.text
                s.lastNumber = UInt64(last)
                if let at { s.lastMessageAt = Google_Protobuf_Timestamp(epochSeconds: at) }
                s.open = open
                s.unreadCount = UInt32(clamping: unread)
                response.chats.append(s)
            }
            return response
        }
    }

    // MARK: - Rows

    private func unread(_ c: PostgresConnection, _ sos: UUID, _ me: UUID, after readUpTo: Int64) async throws -> UInt32 {
        let n = try await c.query("""
            SELECT count(*) FROM chat_messages WHERE sos_id = \(sos) AND number > \(readUpTo) AND sender_id <> \(me)
            """, logger: logger).first(Int64.self) ?? 0
        return UInt32(clamping: n)
    }

    static let columns = """
        id, sos_id, number, sender_id, content, is_read, extract(epoch FROM created_at)::float8, extract(epoch FROM read_at)::float8
        """

    private func messages(_ c: PostgresConnection, _ query: PostgresQuery) async throws -> [Caremesh_Messaging_V1_ChatMessage] {
        var out: [Caremesh_Messaging_V1_ChatMessage] = []
        for try await (id, sos, number, sender, content, read, created, readAt)
            in try await c.query(query, logger: logger).decode((UUID, UUID, Int64, UUID, String, Bool, Double, Double?).self) {
            var m = Caremesh_Messaging_V1_ChatMessage()
            m.id = id.text
            m.sosID = sos.text
            m.number = UInt64(number)
            m.senderID = sender.text
            m.content = content
            m.isRead = read
            m.createdAt = Google_Protobuf_Timestamp(epochSeconds: created)
            if let readAt { m.readAt = Google_Protobuf_Timestamp(epochSeconds: readAt) }
            out.append(m)
        }
        return out
    }
}

/// What SOS chats and conversations share when a message is posted: the text and the client's
/// key for posting it once.
enum ThreadPost {
    /// The text trimmed (1 to `max` characters) and the client's key (nil for none, at most
    /// 100 characters); a bad one is named in `v`.
    static func read(content: String, max: Int, clientMessageID: String, into v: inout FieldViolations) -> (content: String, key: String?) {
        let text = content.trimmingCharacters(in: .whitespacesAndNewlines)
        v.check((1...max).contains(text.unicodeScalars.count), "content", "must be 1 to \(max) characters")
        v.check(clientMessageID.count <= 100, "client_message_id", "must be at most 100 characters")
        return (text, clientMessageID.isEmpty ? nil : clientMessageID)
    }

    /// A post under a key already used: the same text is the earlier message again (no new
    /// one); other text is `ALREADY_EXISTS`.
    static func replay(_ earlier: String, _ content: String) throws(RPCError) {
        guard earlier == content else {
            throw RPCError(.alreadyExists, "client_message_id names an earlier, different message",
                           details: [RPCError.fieldDetail("client_message_id", "was used for another message")])
        }
    }
}

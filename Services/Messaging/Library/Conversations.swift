import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// Patient–practitioner conversations (seed 003's conversations and messages, PHI).
///
/// One conversation per patient (their account) and practitioner, opened in the event
/// consumer's transaction when dispatch's `AppointmentBooked` first pairs them. PostgreSQL enforces who sees what
/// (forced row-level security, migration 0104): every call runs in `Store.withActor` with the
/// caller as the acting user, so a conversation the caller is not in does not exist for them
/// (`NOT_FOUND`, which says nothing about whether it exists), and a session without an acting
/// user sees no row at all. Every access writes an entry in the append-only
/// `conversation_audit` in the same transaction (ids, roles, counts: no PHI); admins read that
/// trail and never the messages. A post locks the conversation's row and takes the next number
/// under the lock (numbers and times follow commit order), and reading messages moves the
/// reader's mark forward to the last one returned (writing is not reading, as in `SosChat`).
final class Conversations: Sendable {
    let store: Store
    let outbox: Outbox
    let logger: Logger

    static let auditors: Set<String> = ["admin"]

    init(store: Store, outbox: Outbox, logger: Logger) {
        self.store = store
        self.outbox = outbox
        self.logger = logger
    }

    // MARK: - Opened from dispatch's events

    func apply(_ event: Event, _ c: PostgresConnection) async throws {
        guard event.type == Caremesh_Dispatch_V1_AppointmentBooked.protoMessageName else { return }
        let e = try Caremesh_Dispatch_V1_AppointmentBooked(serializedBytes: Data(event.payload))
        // The patient's own account: a record not linked to one has nobody to converse with.
        guard let appointment = UUID(uuidString: e.appointmentID), let patient = UUID(uuidString: e.patientAccountID),
              let practitioner = UUID(uuidString: e.practitionerID), patient != practitioner else { return }
        // Only the service itself may open one (the INSERT policy), and it sees none: act as it
        // for this statement, then leave the consumer's transaction as it was.
        try await Store.setActor(MessagingService.actor, roles: ["service"], on: c, logger: logger)
        try await c.query("SELECT open_conversation(\(patient), \(practitioner), \(appointment))", logger: logger)
        try await Store.setActor("", roles: [], on: c, logger: logger)
    }

    // MARK: - Calls

    /// The signed-in person calling, and what their audit entries record.
    struct Actor: Sendable {
        let id: UUID
        let roles: [String]
        let trace: String

        init(_ context: RPCContext) throws(RPCError) {
            let caller = try context.requireCaller()
            id = try caller.requireUserID()
            roles = caller.roles.sorted()
            trace = context.traceID
        }
    }

    /// Runs `body` in a transaction where row-level security sees `actor`.
    private func asActor<R: Sendable>(_ actor: Actor, _ body: @escaping @Sendable (PostgresConnection) async throws -> R) async throws -> R {
        try await store.withActor(actor.id.text, roles: actor.roles, body)
    }

    private func audit(_ c: PostgresConnection, _ actor: Actor, _ action: String, _ conversation: UUID?, count: Int) async throws {
        try await c.query("""
            INSERT INTO conversation_audit (actor_id, actor_roles, action, conversation_id, item_count, request_id)
            VALUES (\(actor.id), \(actor.roles), \(action), \(conversation), \(count), \(actor.trace))
            """, logger: logger)
    }

    func list(_ r: Caremesh_Messaging_V1_ListConversationsRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_ListConversationsResponse
    {
        let actor = try Actor(context)
        var v = FieldViolations()
        let limit = v.limit(r.limit, default: 50, max: 200)
        try v.throwIfAny()
        return try await asActor(actor) { c in
            // Row-level security already narrows this to the caller's; the WHERE says so too.
            let rows = try await c.query("""
                SELECT * FROM (
                    SELECT \(unescaped: Self.conversationColumns),
                           (SELECT count(*) FROM conversation_messages m
                            WHERE m.conversation_id = cv.id AND m.sender_id <> \(actor.id)
                              AND m.number > CASE WHEN cv.patient_id = \(actor.id) THEN cv.patient_read_up_to
                                                  ELSE cv.practitioner_read_up_to END) AS unread,
                           coalesce(cv.last_message_at, cv.created_at) AS at
                    FROM conversations cv WHERE \(actor.id) IN (cv.patient_id, cv.practitioner_id)) x
                WHERE NOT \(r.unreadOnly) OR unread > 0
                ORDER BY at DESC, id LIMIT \(limit)
                """, logger: self.logger)
            var response = Caremesh_Messaging_V1_ListConversationsResponse()
            for try await row in rows {
                let r = row.makeRandomAccess()
                var cv = try Self.conversation(r)
                cv.unreadCount = UInt32(clamping: try r[Self.conversationColumnCount].decode(Int64.self))
                response.conversations.append(cv)
            }
            try await self.audit(c, actor, "LIST", nil, count: response.conversations.count)
            return response
        }
    }

    /// The caller's side of a conversation they are in, its row locked when `lock`; NOT_FOUND
    /// when row-level security hides it (not theirs) or it does not exist.
    private func side(_ c: PostgresConnection, _ conversation: UUID, _ actor: Actor, lock: Bool) async throws
        -> (patient: Bool, other: UUID, marks: Marks)
    {
        let rows = try await c.query("""
            SELECT patient_id, practitioner_id, patient_read_up_to, practitioner_read_up_to FROM conversations
            WHERE id = \(conversation) \(unescaped: lock ? "FOR UPDATE" : "")
            """, logger: logger).collect()
        guard let row = rows.first else { throw RPCError(.notFound, "no such conversation") }
        let (patient, practitioner, patientRead, practitionerRead) = try row.decode((UUID, UUID, Int64, Int64).self)
        return patient == actor.id
            ? (true, practitioner, Marks(reader: actor.id, mine: patientRead, other: practitionerRead))
            : (false, patient, Marks(reader: actor.id, mine: practitionerRead, other: patientRead))
    }

    func post(_ r: Caremesh_Messaging_V1_PostConversationMessageRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_PostConversationMessageResponse
    {
        let actor = try Actor(context)
        var v = FieldViolations()
        let id = v.uuid(r.conversationID, "conversation_id")
        let (content, key) = ThreadPost.read(content: r.content, max: 4_000, clientMessageID: r.clientMessageID, into: &v)
        try v.throwIfAny()
        return try await asActor(actor) { c in
            let side = try await self.side(c, id!, actor, lock: true)
            var response = Caremesh_Messaging_V1_PostConversationMessageResponse()
            if let key, let earlier = try await self.messages(c, side.marks, """
                SELECT \(unescaped: Self.messageColumns) FROM conversation_messages
                WHERE conversation_id = \(id!) AND sender_id = \(actor.id) AND client_message_id = \(key)
                """).first {
                try ThreadPost.replay(earlier.content, content)
                try await self.audit(c, actor, "READ", id!, count: 1)
                response.message = earlier
                return response
            }
            guard let posted = try await self.messages(c, side.marks, """
                WITH n AS (UPDATE conversations SET last_number = last_number + 1, last_message_at = clock_timestamp()
                           WHERE id = \(id!) RETURNING last_number, last_message_at)
                INSERT INTO conversation_messages (conversation_id, number, sender_id, content, client_message_id, created_at)
                SELECT \(id!), n.last_number, \(actor.id), \(content), \(key), n.last_message_at FROM n
                RETURNING \(unescaped: Self.messageColumns)
                """).first else { throw RPCError(.internal, "the post returned no row") }
            try await self.audit(c, actor, "POST", id!, count: 1)
            var e = Caremesh_Messaging_V1_ConversationMessagePosted()
            e.conversationID = posted.conversationID
            e.messageID = posted.id
            e.senderID = posted.senderID
            e.number = posted.number
            e.recipientID = side.other.text
            _ = try await self.outbox.append(e, key: posted.conversationID, on: c)
            response.message = posted
            response.created = true
            return response
        }
    }

    func messages(_ r: Caremesh_Messaging_V1_ListConversationMessagesRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_ListConversationMessagesResponse
    {
        let actor = try Actor(context)
        var v = FieldViolations()
        let id = v.uuid(r.conversationID, "conversation_id")
        let limit = v.limit(r.limit, default: 100, max: 500)
        v.check(r.afterNumber <= UInt64(Int64.max), "after_number", "is too large")
        try v.throwIfAny()
        return try await asActor(actor) { c in
            let side = try await self.side(c, id!, actor, lock: false)
            var response = Caremesh_Messaging_V1_ListConversationMessagesResponse()
            // What the caller reads now is read by them (their mark moves past it below).
            var marks = side.marks
            marks.mine = .max
            response.messages = try await self.messages(c, marks, """
                SELECT \(unescaped: Self.messageColumns) FROM conversation_messages
                WHERE conversation_id = \(id!) AND number > \(Int64(r.afterNumber)) ORDER BY number LIMIT \(limit)
                """)
            let mark = side.patient ? "patient_read_up_to" : "practitioner_read_up_to"
            let readUpTo = Int64(response.messages.last?.number ?? 0)
            let unread = try await c.query("""
                WITH moved AS (UPDATE conversations SET \(unescaped: mark) = greatest(\(unescaped: mark), \(readUpTo))
                               WHERE id = \(id!) RETURNING \(unescaped: mark) AS mark)
                SELECT count(*) FROM conversation_messages m, moved
                WHERE m.conversation_id = \(id!) AND m.sender_id <> \(actor.id) AND m.number > moved.mark
                """, logger: self.logger).first(Int64.self) ?? 0
            response.unreadCount = UInt32(clamping: unread)
            try await self.audit(c, actor, "READ", id!, count: response.messages.count)
            return response
        }
    }

    func auditTrail(_ r: Caremesh_Messaging_V1_ListConversationAuditRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_ListConversationAuditResponse
    {
        _ = try context.requireRole(Self.auditors)
        var v = FieldViolations()
        let conversation = v.optionalUUID(r.conversationID, "conversation_id")
        let actor = v.optionalUUID(r.actorID, "actor_id")
        let page = Page(size: r.pageSize, token: r.pageToken, into: &v)
        try v.throwIfAny()
        return try await store.withConnection { c in
            let rows = try await c.query("""
                SELECT id, actor_id, actor_roles, action, conversation_id, item_count, request_id, extract(epoch FROM at)::float8,
                       \(unescaped: Page.micros("at"))
                FROM conversation_audit
                WHERE (\(conversation)::uuid IS NULL OR conversation_id = \(conversation))
                  AND (\(actor)::uuid IS NULL OR actor_id = \(actor)) AND \(after: page, time: "at", id: "id")
                ORDER BY at DESC, id DESC LIMIT \(page.limit)
                """, logger: self.logger)
            var response = Caremesh_Messaging_V1_ListConversationAuditResponse()
            (response.entries, response.nextPageToken) = try await page.collect(
                rows.decode((UUID, UUID, [String], String, UUID?, Int32, String, Double, Int64).self)
            ) {
                var e = Caremesh_Messaging_V1_ConversationAuditEntry()
                e.id = $0.0.text
                e.actorID = $0.1.text
                e.actorRoles = $0.2
                e.action = $0.3
                e.conversationID = $0.4?.text ?? ""
                e.itemCount = UInt32(clamping: $0.5)
                e.requestID = $0.6
                e.at = Google_Protobuf_Timestamp(epochSeconds: $0.7)
                return (e, $0.8, $0.0)
            }
            return response
        }
    }

    // MARK: - Rows

    static let conversationColumns = """
        cv.id, cv.patient_id, cv.practitioner_id, cv.last_number, extract(epoch FROM cv.last_message_at)::float8,
        extract(epoch FROM cv.created_at)::float8
        """
    static let conversationColumnCount = 6

    static func conversation(_ r: PostgresRandomAccessRow) throws -> Caremesh_Messaging_V1_Conversation {
        var cv = Caremesh_Messaging_V1_Conversation()
        cv.id = try r[0].decode(UUID.self).text
        cv.patientID = try r[1].decode(UUID.self).text
        cv.practitionerID = try r[2].decode(UUID.self).text
        cv.lastNumber = UInt64(try r[3].decode(Int64.self))
        if let at = try r[4].decode(Double?.self) { cv.lastMessageAt = Google_Protobuf_Timestamp(epochSeconds: at) }
        cv.createdAt = Google_Protobuf_Timestamp(epochSeconds: try r[5].decode(Double.self))
        return cv
    }

    static let messageColumns = "id, conversation_id, number, sender_id, content, extract(epoch FROM created_at)::float8"

    /// Both participants' read marks, seen by one of them.
    struct Marks: Sendable {
        let reader: UUID
        var mine: Int64
        var other: Int64

        /// Whoever the message is for (not its sender) has read it.
        func readByRecipient(number: Int64, sender: UUID) -> Bool { number <= (sender == reader ? other : mine) }
    }

    private func messages(_ c: PostgresConnection, _ marks: Marks, _ query: PostgresQuery) async throws
        -> [Caremesh_Messaging_V1_ConversationMessage]
    {
        var out: [Caremesh_Messaging_V1_ConversationMessage] = []
        for try await (id, conversation, number, sender, content, created)
            in try await c.query(query, logger: logger).decode((UUID, UUID, Int64, UUID, String, Double).self) {
            var m = Caremesh_Messaging_V1_ConversationMessage()
            m.id = id.text
            m.conversationID = conversation.text
            m.number = UInt64(number)
            m.senderID = sender.text
            m.content = content
            m.createdAt = Google_Protobuf_Timestamp(epochSeconds: created)
            m.readByRecipient = marks.readByRecipient(number: number, sender: sender)
            out.append(m)
        }
        return out
    }
}

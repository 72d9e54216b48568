import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import CareMeshTesting
import Foundation
import MessagingService
import PostgresNIO
import SwiftProtobuf
import Testing

/// Patient–practitioner conversations end to end: dispatch's bookings open them, messaging
/// serves them through a router that requires tokens, and PostgreSQL's row-level security
/// decides who sees a row.
extension SmsTests {
    static func conversations(_ s: Stack, _ who: TestAccount, unreadOnly: Bool = false) async throws
        -> [Caremesh_Messaging_V1_Conversation]
    {
        var r = Caremesh_Messaging_V1_ListConversationsRequest()
        r.unreadOnly = unreadOnly
        return try await s.client.call(MessagingMethods.listConversations, request: r, options: who.auth).conversations
    }

    static func post(_ s: Stack, _ conversation: String, _ who: TestAccount, _ text: String, key: String = "") async throws
        -> Caremesh_Messaging_V1_PostConversationMessageResponse
    {
        var r = Caremesh_Messaging_V1_PostConversationMessageRequest()
        r.conversationID = conversation
        r.content = text
        r.clientMessageID = key
        return try await s.client.call(MessagingMethods.postConversationMessage, request: r, options: who.auth)
    }

    static func read(_ s: Stack, _ conversation: String, _ who: TestAccount, after: UInt64 = 0, limit: UInt32 = 500) async throws
        -> Caremesh_Messaging_V1_ListConversationMessagesResponse
    {
        var r = Caremesh_Messaging_V1_ListConversationMessagesRequest()
        r.conversationID = conversation
        r.afterNumber = after
        r.limit = limit
        return try await s.client.call(MessagingMethods.listConversationMessages, request: r, options: who.auth)
    }

    static func auditTrail(_ s: Stack, _ who: TestAccount, conversation: String = "", actor: String = "") async throws
        -> [Caremesh_Messaging_V1_ConversationAuditEntry]
    {
        var r = Caremesh_Messaging_V1_ListConversationAuditRequest()
        r.conversationID = conversation
        r.actorID = actor
        r.pageSize = 200
        return try await s.client.call(MessagingMethods.listConversationAudit, request: r, options: who.auth).entries
    }

    /// Counts rows of messaging's tables as the messaging service's own database role (so
    /// row-level security applies), in a transaction acting as `actor` if given.
    static func visible(_ s: Stack, _ sql: String, actor: String? = nil) async throws -> Int64 {
        try await Store.withSingleConnection(s.db.url("messaging"), logger: TestDatabase.logger) { c in
            try await c.query("BEGIN", logger: TestDatabase.logger)
            if let actor {
                try await Store.setActor(actor, roles: ["user"], on: c, logger: TestDatabase.logger)
            }
            let n = try await c.query(PostgresQuery(unsafeSQL: sql), logger: TestDatabase.logger).first(Int64.self) ?? -1
            try await c.query("ROLLBACK", logger: TestDatabase.logger)
            return n
        }
    }

    /// The SQLSTATE with which PostgreSQL refused `sql` (run as in `visible`); nil if it did not.
    static func refusal(_ s: Stack, _ sql: String, actor: String? = nil) async -> String? {
        do {
            _ = try await visible(s, sql, actor: actor)
            return nil
        } catch {
            return (error as? PSQLError)?.serverInfo?[.sqlState] ?? "not a PostgreSQL error: \(error)"
        }
    }

    @Test func conversationsArePHIForTheirTwoParticipantsUnderRowLevelSecurityAndEveryAccessIsAudited() async throws {
        try await withStack(dispatch: true) { s in try await Self.conversationScenario(s) }
    }

    static func conversationScenario(_ s: Stack) async throws {
        let doctor = try await TestAccount.make(s.client, s.db, role: "professional")
        let patient = try await TestAccount.make(s.client, s.db, role: "user")
        let otherPatient = try await TestAccount.make(s.client, s.db, role: "user")
        let coordinator = try await TestAccount.make(s.client, s.db, role: "coordinator")
        try await Self.openAllWeek(s, doctor)
        // Each patient books for themself; the first twice (still one conversation).
        let day = (Date().timeIntervalSince1970 / 86_400).rounded(.down) * 86_400 + 3 * 86_400
        for (who, hour) in [(patient, 9.0), (patient, 10.0), (otherPatient, 11.0)] {
            _ = try await s.client.call(DispatchMethods.bookAppointment, request: .with {
                $0.practitionerID = doctor.id.uuidString
                $0.start = Google_Protobuf_Timestamp(date: Date(timeIntervalSince1970: day + hour * 3_600))
            }, options: who.auth)
        }
        let mine = try await TestStack.eventually(timeout: .seconds(15)) {
            let doctors = try await Self.conversations(s, doctor)
            guard doctors.count == 2 else { throw RPCError(.notFound, "\(doctors.count) conversations so far") }
            return try await Self.conversations(s, patient)
        }
        #expect(mine.count == 1)
        let conversation = try #require(mine.first)
        #expect(conversation.patientID == patient.id.text && conversation.practitionerID == doctor.id.text && conversation.lastNumber == 0)
        #expect(try await Self.conversations(s, coordinator).isEmpty)

        // The patient writes; the same key again is the same message; other text under it is refused.
        let first = try await Self.post(s, conversation.id, patient, "  Should I fast before the visit?  ", key: "q-1")
        #expect(first.created && first.message.number == 1 && first.message.content == "Should I fast before the visit?")
        #expect(!first.message.readByRecipient)
        let again = try await Self.post(s, conversation.id, patient, "Should I fast before the visit?", key: "q-1")
        #expect(!again.created && again.message.id == first.message.id)
        #expect(await statusCode { _ = try await Self.post(s, conversation.id, patient, "Other", key: "q-1") } == .alreadyExists)
        // Bad input names its field, and nothing is written.
        #expect(await fieldViolations { _ = try await Self.post(s, conversation.id, patient, " \n ") } == ["content"])
        #expect(await fieldViolations { _ = try await Self.post(s, conversation.id, patient, String(repeating: "é", count: 4_001)) } == ["content"])
        #expect(await fieldViolations { _ = try await Self.post(s, "nope", patient, "hi") } == ["conversation_id"])
        #expect(await fieldViolations { _ = try await Self.post(s, conversation.id, patient, "hi", key: String(repeating: "k", count: 101)) }
            == ["client_message_id"])
        #expect(await fieldViolations { _ = try await Self.read(s, conversation.id, patient, limit: 501) } == ["limit"])
        // Anyone else: the conversation does not exist for them (staff included).
        for outsider in [otherPatient, coordinator, s.admin] {
            #expect(await statusCode { _ = try await Self.read(s, conversation.id, outsider) } == .notFound)
            #expect(await statusCode { _ = try await Self.post(s, conversation.id, outsider, "hello") } == .notFound)
        }
        #expect(try await s.count("SELECT count(*) FROM messaging.conversation_messages") == 1)

        // The doctor has one unread; reading it marks it read for both sides.
        #expect(try await Self.conversations(s, doctor, unreadOnly: true).map(\.id) == [conversation.id])
        let doctorRead = try await Self.read(s, conversation.id, doctor)
        #expect(doctorRead.messages.map(\.content) == ["Should I fast before the visit?"] && doctorRead.unreadCount == 0)
        #expect(doctorRead.messages.allSatisfy { $0.readByRecipient })
        #expect(try await Self.conversations(s, doctor, unreadOnly: true).isEmpty)
        let reply = try await Self.post(s, conversation.id, doctor, "No need to fast.")
        #expect(reply.created && reply.message.number == 2 && !reply.message.readByRecipient)
        #expect(try await Self.conversations(s, patient, unreadOnly: true).map(\.unreadCount) == [1])
        // Paging by number: only what follows; the mark moves to the last one returned.
        let onlyReply = try await Self.read(s, conversation.id, patient, after: 1)
        #expect(onlyReply.messages.map(\.number) == [2] && onlyReply.unreadCount == 0)
        #expect(try await Self.read(s, conversation.id, patient).messages.map(\.readByRecipient) == [true, true])

        // Both write at once: every message its own number, in commit order, none lost.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<12 {
                group.addTask { _ = try await Self.post(s, conversation.id, i % 2 == 0 ? patient : doctor, "note \(i)") }
            }
            try await group.waitForAll()
        }
        let all = try await Self.read(s, conversation.id, doctor, after: 2, limit: 5)
        #expect(all.messages.map(\.number) == [3, 4, 5, 6, 7])
        let rest = try await Self.read(s, conversation.id, doctor, after: 7)
        #expect(rest.messages.map(\.number) == Array(8...14) && rest.unreadCount == 0)
        // Before reading the rest, the doctor's unread were the patient's among them.
        #expect(all.unreadCount == UInt32(rest.messages.count { $0.senderID == patient.id.text }))
        #expect(zip(rest.messages, rest.messages.dropFirst()).allSatisfy { $0.createdAt.date <= $1.createdAt.date })

        // Each post announced with ids only, to the other participant.
        let posted = try await s.db.sql("""
            SELECT payload FROM messaging.outbox WHERE type = 'caremesh.messaging.v1.ConversationMessagePosted' ORDER BY seq
            """).map { try Caremesh_Messaging_V1_ConversationMessagePosted(serializedBytes: Data(try $0.decode(ByteBuffer.self).readableBytesView)) }
        #expect(posted.count == 14)
        #expect(posted.allSatisfy { e in
            e.conversationID == conversation.id
                && e.recipientID == (e.senderID == patient.id.text ? doctor.id.text : patient.id.text)
        })

        // The audit: every access, ids and counts only; admins read it, nobody else.
        let trail = try await Self.auditTrail(s, s.admin, conversation: conversation.id)
        #expect(trail.count { $0.action == "POST" } == 14)
        #expect(trail.contains { $0.action == "READ" && $0.actorID == doctor.id.text && $0.itemCount == 5 && $0.actorRoles == ["professional"] })
        // Outsiders' refused reads found nothing, and were not PHI reads.
        #expect(!trail.contains { [otherPatient.id.text, coordinator.id.text, s.admin.id.text].contains($0.actorID) })
        let lists = try await Self.auditTrail(s, s.admin, actor: doctor.id.text).filter { $0.action == "LIST" }
        #expect(lists.count >= 3 && lists.allSatisfy { $0.conversationID.isEmpty })
        for notAdmin in [doctor, coordinator, patient] {
            #expect(await statusCode { _ = try await Self.auditTrail(s, notAdmin) } == .permissionDenied)
        }
        #expect(await fieldViolations { _ = try await Self.auditTrail(s, s.admin, actor: "x") } == ["actor_id"])
        let leaks = try await s.count("""
            SELECT count(*) FROM messaging.conversation_audit a
            WHERE row_to_json(a)::text ILIKE '%fast%' OR row_to_json(a)::text ILIKE '%note%'
            """)
        #expect(leaks == 0)

        // Row-level security, as messaging's own role: nothing without an acting user, only
        // the actor's own conversations with one, and messages can be neither changed nor removed.
        #expect(try await s.count("SELECT count(*) FROM messaging.conversations") == 2)
        #expect(try await Self.visible(s, "SELECT count(*) FROM conversations") == 0)
        #expect(try await Self.visible(s, "SELECT count(*) FROM conversation_messages") == 0)
        #expect(try await Self.visible(s, "SELECT count(*) FROM conversations", actor: "service:messaging") == 0)
        #expect(try await Self.visible(s, "SELECT count(*) FROM conversations", actor: coordinator.id.text) == 0)
        #expect(try await Self.visible(s, "SELECT count(*) FROM conversation_messages", actor: otherPatient.id.text) == 0)
        #expect(try await Self.visible(s, "SELECT count(*) FROM conversations", actor: doctor.id.text) == 2)
        #expect(try await Self.visible(s, "SELECT count(*) FROM conversation_messages", actor: patient.id.text) == 14)
        #expect(try await Self.visible(s, """
            WITH changed AS (UPDATE conversation_messages SET content = 'changed' RETURNING 1) SELECT count(*) FROM changed
            """, actor: patient.id.text) == 0)
        #expect(try await Self.visible(s, """
            WITH gone AS (DELETE FROM conversation_messages RETURNING 1) SELECT count(*) FROM gone
            """, actor: doctor.id.text) == 0)
        // Posting as someone else, or into someone else's conversation, opening one, or erasing
        // the audit: refused by PostgreSQL itself (insufficient_privilege: a policy, or the
        // audit's trigger), not merely failing.
        #expect(await Self.refusal(s, """
                WITH p AS (INSERT INTO conversation_messages (conversation_id, number, sender_id, content)
                           VALUES ('\(conversation.id)', 99, '\(doctor.id.text)', 'forged') RETURNING 1) SELECT count(*) FROM p
                """, actor: patient.id.text) == "42501")
        #expect(await Self.refusal(s, """
                WITH p AS (INSERT INTO conversation_messages (conversation_id, number, sender_id, content)
                           VALUES ('\(conversation.id)', 99, '\(otherPatient.id.text)', 'intrusion') RETURNING 1) SELECT count(*) FROM p
                """, actor: otherPatient.id.text) == "42501")
        #expect(await Self.refusal(s, """
                WITH p AS (INSERT INTO conversations (patient_id, practitioner_id, opened_by_appointment)
                           VALUES ('\(patient.id.text)', '\(coordinator.id.text)', gen_random_uuid()) RETURNING 1) SELECT count(*) FROM p
                """, actor: patient.id.text) == "42501")
        #expect(await Self.refusal(s, "WITH d AS (DELETE FROM conversation_audit RETURNING 1) SELECT count(*) FROM d") == "42501")
        #expect(try await s.count("SELECT count(*) FROM messaging.conversation_messages") == 14)
    }
}

import CareMeshContracts
import CareMeshRPC
import CareMeshTesting
import Foundation
import MessagingService
import PostgresNIO
import SwiftProtobuf
import Testing

/// SOS chat end to end: dispatch's SOS events make the participants, messaging serves the chat,
/// through a router that requires tokens.
extension SmsTests {
    static func chatSend(_ s: Stack, _ sos: String, _ who: TestAccount, _ text: String, key: String = "") async throws
        -> Caremesh_Messaging_V1_SendChatMessageResponse
    {
        var r = Caremesh_Messaging_V1_SendChatMessageRequest()
        r.sosID = sos
        r.content = text
        r.clientMessageID = key
        return try await s.client.call(MessagingMethods.sendChatMessage, request: r, options: who.auth)
    }

    static func chatList(_ s: Stack, _ sos: String, _ who: TestAccount, after: UInt64 = 0) async throws
        -> Caremesh_Messaging_V1_ListChatMessagesResponse
    {
        var r = Caremesh_Messaging_V1_ListChatMessagesRequest()
        r.sosID = sos
        r.afterNumber = after
        r.limit = 500
        return try await s.client.call(MessagingMethods.listChatMessages, request: r, options: who.auth)
    }

    static func chatMarkRead(_ s: Stack, _ sos: String, _ who: TestAccount, upTo: UInt64 = 0) async throws
        -> Caremesh_Messaging_V1_MarkChatReadResponse
    {
        var r = Caremesh_Messaging_V1_MarkChatReadRequest()
        r.sosID = sos
        r.upToNumber = upTo
        return try await s.client.call(MessagingMethods.markChatRead, request: r, options: who.auth)
    }

    static func chats(_ s: Stack, _ who: TestAccount, unreadOnly: Bool = false) async throws -> [Caremesh_Messaging_V1_ChatSummary] {
        var r = Caremesh_Messaging_V1_ListChatsRequest()
        r.unreadOnly = unreadOnly
        return try await s.client.call(MessagingMethods.listChats, request: r, options: who.auth).chats
    }

    @Test func sosChatIsForItsParticipantsOrderedWithReadMarks() async throws {
        try await withStack(["DISPATCH_WAVE_SIZE": "1"], dispatch: true) { s in try await Self.chatScenario(s) }
    }

    static func chatScenario(_ s: Stack) async throws {
        let requester = try await TestAccount.make(s.client, s.db, role: "user")
        let volunteer = try await TestAccount.make(s.client, s.db, role: "volunteer")
        let stranger = try await TestAccount.make(s.client, s.db, role: "volunteer")
        // The volunteer, verified and available, 100 m away (as dispatch's projection holds it).
        let here = (lat: 48.8566, lon: 2.3522)
        _ = try await s.db.sql("""
            INSERT INTO dispatch.responders (user_id, role, verified, verified_at, active, credential_expired, available, skills)
            VALUES (\(volunteer.id), 'volunteer', true, now(), true, false, true, \([String]()))
            ON CONFLICT (user_id) DO UPDATE SET verified = true, verified_at = now(), active = true, available = true
            """)
        _ = try await s.db.sql("""
            INSERT INTO dispatch.user_locations (user_id, location, updated_at)
            VALUES (\(volunteer.id), ST_SetSRID(ST_MakePoint(\(here.lon), \(here.lat + 0.001)), 4326)::geography, now())
            """)
        var create = Caremesh_Dispatch_V1_CreateSosRequest()
        create.emergencyType = .medical
        create.priority = .high
        create.location.latitude = here.lat
        create.location.longitude = here.lon
        create.description_p = "fell down the stairs"
        let sos = try await s.client.call(DispatchMethods.createSos, request: create, options: requester.auth).sos

        // The requester's chat opens with the SOS (from dispatch's SosCreated).
        _ = try await TestStack.eventually(timeout: .seconds(15)) {
            guard try await Self.chats(s, requester).map(\.sosID) == [sos.id] else { throw RPCError(.notFound, "no chat yet") }
        }
        let first = try await Self.chatSend(s, sos.id, requester, "  Where are you?  ", key: "m-1")
        #expect(first.created && first.message.number == 1 && first.message.content == "Where are you?")
        // The same key again: the same message, not a second one; for other text, refused.
        let again = try await Self.chatSend(s, sos.id, requester, "Where are you?", key: "m-1")
        #expect(!again.created && again.message.id == first.message.id)
        #expect(await statusCode { _ = try await Self.chatSend(s, sos.id, requester, "Something else", key: "m-1") } == .alreadyExists)
        // Bad input names its field; nothing is written.
        #expect(await fieldViolations { _ = try await Self.chatSend(s, sos.id, requester, "   ") } == ["content"])
        #expect(await fieldViolations { _ = try await Self.chatSend(s, sos.id, requester, String(repeating: "a", count: 2_001)) } == ["content"])
        #expect(await fieldViolations {
            var r = Caremesh_Messaging_V1_SendChatMessageRequest()
            r.sosID = "not-an-id"
            r.content = "hi"
            _ = try await s.client.call(MessagingMethods.sendChatMessage, request: r, options: requester.auth)
        } == ["sos_id"])
        // Offered is not a participant; strangers neither.
        for outsider in [volunteer, stranger] {
            #expect(await statusCode { _ = try await Self.chatList(s, sos.id, outsider) } == .permissionDenied)
            #expect(await statusCode { _ = try await Self.chatSend(s, sos.id, outsider, "hello") } == .permissionDenied)
        }
        #expect(try await s.count("SELECT count(*) FROM messaging.chat_messages") == 1)

        // The volunteer accepts and joins (from SosAccepted): the history, one unread.
        _ = try await s.client.call(DispatchMethods.acceptSos, request: .with { $0.sosID = sos.id }, options: volunteer.auth)
        let seen = try await TestStack.eventually(timeout: .seconds(15)) { try await Self.chatList(s, sos.id, volunteer) }
        #expect(seen.messages.map(\.content) == ["Where are you?"] && seen.unreadCount == 1 && seen.open)
        let reply = try await Self.chatSend(s, sos.id, volunteer, "Five minutes away.")
        #expect(reply.message.number == 2)
        // The requester is told of the reply in the same transaction (never its text); nobody is
        // told of their own message, nor of one posted before they joined.
        func chatNotifications(_ who: TestAccount) async throws -> [Caremesh_Messaging_V1_Notification] {
            try await s.client.call(MessagingMethods.listMyNotifications, request: .init(), options: who.auth).notifications
                .filter { $0.kind == .chatMessage }
        }
        let told = try await chatNotifications(requester)
        #expect(told.count == 1 && told.first?.data["number"] == "2" && told.first?.data["message_id"] == reply.message.id)
        #expect(told.first.map { !$0.body.contains("Five") } == true)
        #expect(try await chatNotifications(volunteer).isEmpty)
        #expect(try await Self.chatList(s, sos.id, requester).unreadCount == 1)
        #expect(try await Self.chats(s, requester, unreadOnly: true).map(\.unreadCount) == [1])
        // Writing is not reading: the volunteer still has the first one unread.
        let unreadBefore = try await Self.chats(s, volunteer, unreadOnly: true)
        #expect(unreadBefore.map(\.unreadCount) == [1])
        // Read marks: per reader, forward only; a message is read once the other side read it.
        #expect(try await Self.chatMarkRead(s, sos.id, volunteer).unreadCount == 0)
        let unreadAfter = try await Self.chats(s, volunteer, unreadOnly: true)
        #expect(unreadAfter.isEmpty)
        var both = try await Self.chatList(s, sos.id, requester)
        #expect(both.messages.map(\.number) == [1, 2])
        #expect(both.messages.map(\.isRead) == [true, false])
        #expect(try await Self.chatMarkRead(s, sos.id, requester, upTo: 2).readUpTo == 2)
        #expect(try await Self.chatMarkRead(s, sos.id, requester, upTo: 1).readUpTo == 2)
        both = try await Self.chatList(s, sos.id, requester)
        #expect(both.messages.map(\.isRead) == [true, true] && both.unreadCount == 0)

        // Both write at once: every message gets its own number, in commit order, none lost.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<20 {
                group.addTask { _ = try await Self.chatSend(s, sos.id, i % 2 == 0 ? requester : volunteer, "message \(i)") }
            }
            try await group.waitForAll()
        }
        let all = try await Self.chatList(s, sos.id, volunteer, after: 2)
        #expect(all.messages.map(\.number) == Array(3...22))
        #expect(Set(all.messages.map(\.content)).count == 20)
        #expect(zip(all.messages, all.messages.dropFirst()).allSatisfy { $0.createdAt.date <= $1.createdAt.date })
        #expect(all.unreadCount == 10)
        // Each post is announced with ids only, naming the other active participants.
        let posted = try await s.db.sql("""
            SELECT payload FROM messaging.outbox WHERE type = 'caremesh.messaging.v1.ChatMessagePosted' ORDER BY seq
            """).map { try Caremesh_Messaging_V1_ChatMessagePosted(serializedBytes: Data(try $0.decode(ByteBuffer.self).readableBytesView)) }
        #expect(posted.count == 22)
        #expect(posted[0].recipientIds.isEmpty)
        #expect(posted[1].recipientIds == [requester.id.uuidString.lowercased()])

        // The volunteer withdraws: they leave the chat. The requester cancels: read only.
        _ = try await s.client.call(DispatchMethods.cancelSos, request: .with { $0.sosID = sos.id; $0.reason = "car broke down" },
                                    options: volunteer.auth)
        _ = try await TestStack.eventually(timeout: .seconds(15)) {
            guard await statusCode(of: { _ = try await Self.chatList(s, sos.id, volunteer) }) == .permissionDenied else {
                throw RPCError(.failedPrecondition, "still a participant")
            }
        }
        _ = try await s.client.call(DispatchMethods.cancelSos, request: .with { $0.sosID = sos.id; $0.reason = "I am fine" },
                                    options: requester.auth)
        _ = try await TestStack.eventually(timeout: .seconds(15)) {
            guard try await Self.chatList(s, sos.id, requester).open == false else { throw RPCError(.failedPrecondition, "still open") }
        }
        #expect(await statusCode { _ = try await Self.chatSend(s, sos.id, requester, "thanks anyway") } == .failedPrecondition)
        #expect(try await Self.chatList(s, sos.id, requester).messages.count == 22)
    }
}

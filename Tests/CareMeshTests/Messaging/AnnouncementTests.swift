import CareMeshContracts
import CareMeshRPC
import CareMeshTesting
import Foundation
import MessagingService
import SwiftProtobuf
import Testing

/// Company announcements through a router that requires tokens.
extension SmsTests {
    @Test func adminsPublishAndEveryoneListsTheCurrentAnnouncements() async throws {
        try await withStack { s in try await Self.announcementScenario(s) }
    }

    static func announcementScenario(_ s: Stack) async throws {
        let ea = try await TestAccount.make(s.client, s.db, role: "ea")
        func publish(_ title: String, expires: Date? = nil, as who: TestAccount? = nil) async throws -> Caremesh_Messaging_V1_Announcement {
            var r = Caremesh_Messaging_V1_PublishAnnouncementRequest()
            r.title = title
            r.content = "Details of \(title)."
            if let expires { r.expiresAt = Google_Protobuf_Timestamp(date: expires) }
            return try await s.client.call(MessagingMethods.publishAnnouncement, request: r, options: (who ?? s.admin).auth).announcement
        }
        func list(_ who: TestAccount, all: Bool = false, size: UInt32 = 0, token: String = "") async throws
            -> Caremesh_Messaging_V1_ListAnnouncementsResponse
        {
            var r = Caremesh_Messaging_V1_ListAnnouncementsRequest()
            r.includeInactive = all
            r.pageSize = size
            r.pageToken = token
            return try await s.client.call(MessagingMethods.listAnnouncements, request: r, options: who.auth)
        }

        // Only admins publish; bad input names its fields and writes nothing.
        #expect(await statusCode { _ = try await publish("Holiday hours", as: ea) } == .permissionDenied)
        #expect(await fieldViolations {
            var r = Caremesh_Messaging_V1_PublishAnnouncementRequest()
            r.title = "  "
            r.content = String(repeating: "x", count: 5_001)
            r.expiresAt = Google_Protobuf_Timestamp(date: Date().addingTimeInterval(-60))
            _ = try await s.client.call(MessagingMethods.publishAnnouncement, request: r, options: s.admin.auth)
        } == ["title", "content", "expires_at"])
        #expect(try await s.count("SELECT count(*) FROM messaging.company_announcements") == 0)

        let old = try await publish("Old news")
        let soon = try await publish("Flu clinic", expires: Date().addingTimeInterval(2))
        let current = try await publish("New rota")
        #expect(current.isActive && current.createdBy == s.admin.id.uuidString.lowercased() && !current.hasExpiresAt)
        #expect(try await s.count("SELECT count(*) FROM messaging.outbox WHERE type = 'caremesh.messaging.v1.AnnouncementPublished'") == 3)
        // Everyone signed in sees the current ones, newest first, a page at a time.
        let first = try await list(ea, size: 2)
        #expect(first.announcements.map(\.id) == [current.id, soon.id] && !first.nextPageToken.isEmpty)
        let second = try await list(ea, size: 2, token: first.nextPageToken)
        #expect(second.announcements.map(\.id) == [old.id] && second.nextPageToken.isEmpty)
        // Retired (twice is the same) and expired ones are gone for everyone but admins asking.
        var retire = Caremesh_Messaging_V1_RetireAnnouncementRequest()
        retire.id = old.id
        #expect(await statusCode { _ = try await s.client.call(MessagingMethods.retireAnnouncement, request: retire, options: ea.auth) }
            == .permissionDenied)
        let retired = try await s.client.call(MessagingMethods.retireAnnouncement, request: retire, options: s.admin.auth).announcement
        #expect(!retired.isActive)
        #expect(try await s.client.call(MessagingMethods.retireAnnouncement, request: retire, options: s.admin.auth).announcement.isActive == false)
        _ = try await TestStack.eventually(timeout: .seconds(10)) {
            let now = try await list(ea).announcements.map(\.id)
            guard now == [current.id] else { throw RPCError(.failedPrecondition, "still listed: \(now)") }
        }
        #expect(try await list(s.admin, all: true).announcements.map(\.id) == [current.id, soon.id, old.id])
        #expect(await statusCode { _ = try await list(ea, all: true) } == .permissionDenied)
        #expect(await fieldViolations { _ = try await list(ea, token: "nonsense") } == ["page_token"])
    }
}

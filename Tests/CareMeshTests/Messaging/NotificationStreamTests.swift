import AsyncHTTPClient
import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import CareMeshTesting
import Foundation
import MessagingService
import NIOCore
import PostgresNIO
import SwiftProtobuf
import Synchronization
import Testing

/// A Server-Sent Events stream read as a browser would: events by id, comment lines counted.
final class SSEStream: Sendable {
    struct Event: Sendable, Equatable {
        let id: String
        let data: String
        /// The `event:` field ("notification", "announcement").
        var name = ""
    }

    let status: Int
    private let state = Mutex<(events: [Event], comments: Int, text: String)>(([], 0, ""))
    private let reader = Mutex<Task<Void, Never>?>(nil)

    init(_ url: String, headers: [(String, String)] = []) async throws {
        var request = HTTPClientRequest(url: url)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(120))
        status = Int(response.status.code)
        let task = Task { [self] in
            do {
                for try await chunk in response.body {
                    self.state.withLock { s in
                        s.text += String(buffer: chunk)
                        while let end = s.text.range(of: "\n\n") {
                            let block = String(s.text[..<end.lowerBound])
                            s.text.removeSubrange(..<end.upperBound)
                            var id = "", data = "", name = ""
                            for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                                if line.hasPrefix(":") { s.comments += 1 }
                                if line.hasPrefix("id: ") { id = String(line.dropFirst(4)) }
                                if line.hasPrefix("event: ") { name = String(line.dropFirst(7)) }
                                if line.hasPrefix("data: ") { data = String(line.dropFirst(6)) }
                            }
                            if !data.isEmpty { s.events.append(Event(id: id, data: data, name: name)) }
                        }
                    }
                }
            } catch {}
        }
        reader.withLock { $0 = task }
    }

    var events: [Event] { state.withLock { $0.events } }
    var comments: Int { state.withLock { $0.comments } }

    /// The notifications received, decoded.
    var notifications: [Caremesh_Messaging_V1_Notification] {
        events.compactMap { try? Caremesh_Messaging_V1_Notification(jsonString: $0.data) }
    }

    /// Waits until `count` events came (fails after 15 s).
    func waitFor(_ count: Int) async throws -> [Caremesh_Messaging_V1_Notification] {
        try await TestStack.eventually(timeout: .seconds(15)) {
            let n = self.notifications
            guard n.count >= count else { throw RPCError(.deadlineExceeded, "\(n.count) of \(count) events so far") }
            return n
        }
    }

    func close() { reader.withLock { $0?.cancel() } }
}

/// Notifications end to end (issue 33): dispatch's SOS events become notifications at
/// messaging, which the router's HTTP edge streams to each person as Server-Sent Events.
extension SmsTests {
    static let paris = (lat: 48.8566, lon: 2.3522)

    /// Makes `volunteers` verified, active, available responders, each a little north of `here`
    /// (the first nearest), as dispatch's own tables hold them.
    static func placeVolunteers(_ volunteers: [TestAccount], near here: (lat: Double, lon: Double), _ db: TestDatabase) async throws {
        for (i, v) in volunteers.enumerated() {
            _ = try await db.sql("""
                INSERT INTO dispatch.responders (user_id, role, verified, verified_at, active, credential_expired, available, skills)
                VALUES (\(v.id), 'volunteer', true, now(), true, false, true, \([String]()))
                ON CONFLICT (user_id) DO UPDATE SET verified = true, verified_at = now(), active = true, available = true
                """)
            _ = try await db.sql("""
                INSERT INTO dispatch.user_locations (user_id, location, updated_at)
                VALUES (\(v.id), ST_SetSRID(ST_MakePoint(\(here.lon), \(here.lat + 0.001 * Double(i + 1))), 4326)::geography, now())
                """)
        }
    }

    /// An SOS of the requester's at `here`, its description saying something private.
    static func createSos(_ s: Stack, by requester: TestAccount, at here: (lat: Double, lon: Double)) async throws -> Caremesh_Dispatch_V1_Sos {
        var create = Caremesh_Dispatch_V1_CreateSosRequest()
        create.emergencyType = .medical
        create.priority = .high
        create.location.latitude = here.lat
        create.location.longitude = here.lon
        create.description_p = "chest pain, diabetic"
        return try await s.client.call(DispatchMethods.createSos, request: create, options: requester.auth).sos
    }

    @Test func sosNotificationsReachTheirPeoplesStreamsOnceAndResumeExactly() async throws {
        try await withStack(["DISPATCH_WAVE_SIZE": "2"], dispatch: true) { s in
            let requester = try await TestAccount.make(s.client, s.db, role: "user")
            let first = try await TestAccount.make(s.client, s.db, role: "volunteer")
            let second = try await TestAccount.make(s.client, s.db, role: "volunteer")
            let here = Self.paris
            try await Self.placeVolunteers([first, second], near: here, s.db)
            let url = s.edgeURL + "/v1/notifications/stream"
            func bearer(_ who: TestAccount) -> [(String, String)] { [("Authorization", who.auth.metadata["authorization"]!)] }

            // Refused: no credential, a bad resume point, a ticket used twice.
            let none = try await SSEStream(url)
            #expect(none.status == 401)
            let badResume = try await SSEStream(url, headers: bearer(first) + [("Last-Event-ID", "yesterday")])
            #expect(badResume.status == 400)
            let ticket = try await s.client.call(MessagingMethods.createNotificationStreamTicket, request: .init(), options: second.auth).ticket
            let secondStream = try await SSEStream(url + "?ticket=\(ticket)")
            #expect(secondStream.status == 200)
            #expect(try await SSEStream(url + "?ticket=\(ticket)").status == 401)
            // Streams open before anything happens: the first volunteer's and the requester's by token.
            let firstStream = try await SSEStream(url, headers: bearer(first))
            let requesterStream = try await SSEStream(url, headers: bearer(requester))
            #expect(firstStream.status == 200 && requesterStream.status == 200)

            // An SOS offered to both volunteers: each stream gets its own offer, seq 1.
            let sos = try await Self.createSos(s, by: requester, at: here)
            for (stream, who) in [(firstStream, first), (secondStream, second)] {
                let got = try await stream.waitFor(1)
                #expect(got.count == 1 && got[0].seq == 1 && got[0].kind == .sosOffered && got[0].critical)
                #expect(got[0].personID == who.id.text && got[0].data["sos_id"] == sos.id && got[0].data["emergency_type"] == "MEDICAL")
                #expect(!got[0].body.contains("chest") && !got[0].body.contains("diabetic"))
                #expect(stream.events.map(\.id) == ["1"])
            }
            // The requester's stream carries nothing of anyone else's.
            #expect(requesterStream.events.isEmpty)

            // Listed with the unread count and the stream delivery; marked read once.
            let listed = try await s.client.call(MessagingMethods.listMyNotifications, request: .init(), options: second.auth)
            #expect(listed.unreadCount == 1 && listed.notifications.map(\.seq) == [1])
            #expect(listed.notifications[0].deliveries.map(\.channel) == [.stream] && listed.notifications[0].deliveries[0].status == .sent)
            let theirs = try await s.client.call(MessagingMethods.listMyNotifications, request: .init(), options: first.auth).notifications[0].id
            let foreign = try await s.client.call(MessagingMethods.markNotificationsRead, request: .with { $0.ids = [theirs] }, options: second.auth)
            #expect(foreign.marked == 0 && foreign.unreadCount == 1)
            #expect(await fieldViolations {
                _ = try await s.client.call(MessagingMethods.markNotificationsRead, request: .with { $0.ids = ["nope"] }, options: second.auth)
            } == ["ids[0]"])
            let marked = try await s.client.call(MessagingMethods.markNotificationsRead, request: .with { $0.upToSeq = 1 }, options: second.auth)
            #expect(marked.marked == 1 && marked.unreadCount == 0)
            let again = try await s.client.call(MessagingMethods.listMyNotifications, request: .with { $0.unreadOnly = true }, options: second.auth)
            #expect(again.notifications.isEmpty && again.unreadCount == 0)
            // Only the edge replays a person's notifications.
            #expect(await statusCode {
                _ = try await s.client.call(MessagingMethods.replayNotifications, request: .with { $0.personID = second.id.text }, options: s.admin.auth)
            } == .permissionDenied)

            // The first volunteer accepts: the requester is told (seq 1 for them).
            _ = try await s.client.call(DispatchMethods.acceptSos, request: .with { $0.sosID = sos.id }, options: first.auth)
            let accepted = try await requesterStream.waitFor(1)
            #expect(accepted.map(\.kind) == [.sosAccepted] && accepted[0].seq == 1)
            // The requester goes away; the volunteer starts and resolves it meanwhile (seq 2).
            requesterStream.close()
            _ = try await s.client.call(DispatchMethods.startSos, request: .with { $0.sosID = sos.id }, options: first.auth)
            _ = try await s.client.call(DispatchMethods.resolveSos, request: .with { $0.sosID = sos.id }, options: first.auth)
            _ = try await TestStack.eventually(timeout: .seconds(15)) {
                let n = try await s.client.call(MessagingMethods.listMyNotifications, request: .init(), options: requester.auth).notifications
                guard n.count == 2 else { throw RPCError(.notFound, "\(n.count) so far") }
            }
            // Back with Last-Event-ID 1: exactly what was missed; from the start, both.
            let resumed = try await SSEStream(url, headers: bearer(requester) + [("Last-Event-ID", "1")])
            let missed = try await resumed.waitFor(1)
            #expect(missed.map(\.seq) == [2] && missed[0].kind == .sosUpdated && missed[0].title == "Your SOS is resolved")
            let fromStart = try await SSEStream(url, headers: bearer(requester) + [("Last-Event-ID", "0")])
            #expect(try await fromStart.waitFor(2).map(\.seq) == [1, 2])

            // Heartbeats keep an idle stream alive.
            _ = try await TestStack.eventually(timeout: .seconds(10)) {
                guard resumed.comments >= 1 else { throw RPCError(.deadlineExceeded, "no heartbeat yet") }
            }

            // An event applied twice notifies once: messaging's cursor on dispatch moved back to
            // the start re-applies every SOS event, and no notification is added.
            let before = try await s.count("SELECT count(*) FROM messaging.notifications")
            let position = try await s.db.sql("SELECT position FROM messaging.event_cursors WHERE source = 'dispatch'")[0].decode(Int64.self)
            _ = try await s.db.sql("UPDATE messaging.event_cursors SET position = 0 WHERE source = 'dispatch'")
            _ = try await TestStack.eventually(timeout: .seconds(20)) {
                let at = try await s.db.sql("SELECT position FROM messaging.event_cursors WHERE source = 'dispatch'")[0].decode(Int64.self)
                if at < position { throw RPCError(.failedPrecondition, "re-applied up to \(at) of \(position)") }
            }
            #expect(try await s.count("SELECT count(*) FROM messaging.notifications") == before)
            #expect(before == 4)
            // Nobody sees notifications without being their person, not even messaging's own role.
            #expect(try await s.db.count(as: "messaging", "SELECT count(*) FROM messaging.notifications") == 0)
            for stream in [none, badResume, secondStream, firstStream, resumed, fromStart] { stream.close() }
        }
    }

    @Test func anAnnouncementReachesEveryOpenStreamWithoutAnId() async throws {
        try await withStack { s in
            let a = try await TestAccount.make(s.client, s.db, role: "user")
            let b = try await TestAccount.make(s.client, s.db, role: "volunteer")
            let url = s.edgeURL + "/v1/notifications/stream"
            let streams = try await [a, b].asyncMap { try await SSEStream(url, headers: [("Authorization", $0.auth.metadata["authorization"]!)]) }
            // Both streams are open (a heartbeat came) before it is published.
            for stream in streams {
                _ = try await TestStack.eventually(timeout: .seconds(10)) {
                    guard stream.comments >= 1 else { throw RPCError(.deadlineExceeded, "no heartbeat yet") }
                }
            }
            let published = try await s.client.call(MessagingMethods.publishAnnouncement, request: .with {
                $0.title = "Office closed on Friday"
                $0.content = "The office is closed on Friday; SOS work as always."
            }, options: s.admin.auth).announcement
            for stream in streams {
                let event = try await TestStack.eventually(timeout: .seconds(10)) {
                    guard let e = stream.events.first(where: { $0.name == "announcement" }) else { throw RPCError(.unavailable, "no announcement yet") }
                    return e
                }
                let body = try Caremesh_Messaging_V1_AnnouncementPublished(jsonString: event.data)
                #expect(event.id.isEmpty && body.announcementID == published.id && body.title == "Office closed on Friday")
                stream.close()
            }
            // It is no one's notification.
            #expect(try await s.count("SELECT count(*) FROM messaging.notifications") == 0)
        }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for element in self { out.append(try await transform(element)) }
        return out
    }
}

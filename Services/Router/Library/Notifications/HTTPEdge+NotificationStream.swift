import CareMeshContracts
import CareMeshRPC
import Foundation
import Hummingbird
import HTTPTypes
import NIOCore

/// `GET /v1/notifications/stream`: a person's notifications as Server-Sent Events.
///
/// Who the stream is for comes from messaging: the caller's `Authorization: Bearer` token
/// (`OpenNotificationStream`), or, for a browser's EventSource, which cannot send one, a
/// single-use `?ticket=` (`RedeemNotificationStreamTicket`). Each event is one notification:
/// `id:` its per-person `seq`, `data:` the notification in protobuf's JSON mapping. The stream
/// first sends what came after `Last-Event-ID` (messaging's `ReplayNotifications`, which the
/// edge calls as the service "router"), then what arrives live (messaging's
/// `NotificationCreated` events, which the edge pulls once for all its streams, `NotificationHub`);
/// a gap in `seq` (a live event lost or late) is filled from messaging, so a notification is
/// neither lost nor sent twice. A comment line every `streamHeartbeat` keeps proxies from
/// closing an idle stream.
extension HTTPEdge {
    static let notificationType = Caremesh_Messaging_V1_NotificationCreated.protoMessageName

    func notificationStream(_ request: Request, _ context: Context) async throws -> Response {
        guard let service = serviceClient else {
            return error(RPCError(.unavailable, "the edge cannot replay notifications: ROUTER_SERVICE_SECRET is not set"))
        }
        // Where to resume: the last event id the client saw (0: from the start).
        let resumeText = Self.header(request, "last-event-id") ?? request.uri.queryParameters["last_event_id"].map(String.init) ?? ""
        let resume = resumeText.isEmpty ? 0 : Int64(resumeText.trimmingCharacters(in: .whitespaces))
        guard let resume, resume >= 0 else {
            return error(RPCError.invalidArgument(field: "Last-Event-ID", "must be the id of an event this stream sent"))
        }
        let person: UUID
        do { person = try await streamPerson(request) } catch { return self.error(error) }
        let items = hub.subscribe(person)
        let heartbeat = ByteBuffer(string: ": heartbeat\n\n")
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream; charset=utf-8"
        headers[.cacheControl] = "no-cache"
        headers[HTTPField.Name("X-Accel-Buffering")!] = "no"
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            try await writer.write(ByteBuffer(string: "retry: 3000\n\n"))
            var sent = resume
            var behind = true
            var iterator = items.makeAsyncIterator()
            while true {
                if behind {
                    // What messaging has after the last one sent, a page at a time.
                    let page = try await Self.replay(service, person, after: sent)
                    for n in page.notifications where n.seq > sent {
                        try await writer.write(try Self.event(n))
                        sent = n.seq
                    }
                    behind = page.more
                    continue
                }
                guard let item = await iterator.next() else { break }
                switch item {
                case .notification(let n) where n.seq == sent + 1:
                    try await writer.write(try Self.event(n))
                    sent = n.seq
                case .notification(let n):
                    behind = n.seq > sent
                case .announcement(let a):
                    try await writer.write(try Self.event(a))
                case .resync:
                    behind = true
                case .heartbeat:
                    try await writer.write(heartbeat)
                }
            }
            try await writer.finish(nil)
        })
    }

    /// One page of `person`'s notifications after `seq`, oldest first.
    static func replay(_ service: RPCClient, _ person: UUID, after seq: Int64) async throws(RPCError)
        -> Caremesh_Messaging_V1_ReplayNotificationsResponse
    {
        var r = Caremesh_Messaging_V1_ReplayNotificationsRequest()
        r.personID = person.uuidString.lowercased()
        r.afterSeq = seq
        r.limit = 100
        return try await service.call(MessagingMethods.replayNotifications, request: r)
    }

    /// Who the stream is for: the token's subject, or the ticket's person.
    func streamPerson(_ request: Request) async throws(RPCError) -> UUID {
        let personID: String
        if let auth = request.headers[.authorization] {
            let reply = try await client.call(MessagingMethods.openNotificationStream, request: .init(),
                                              options: CallOptions(metadata: ["authorization": auth]))
            personID = reply.personID
        } else if let ticket = request.uri.queryParameters["ticket"], !ticket.isEmpty {
            var r = Caremesh_Messaging_V1_RedeemNotificationStreamTicketRequest()
            r.ticket = String(ticket)
            personID = try await client.call(MessagingMethods.redeemNotificationStreamTicket, request: r).personID
        } else {
            throw RPCError(.unauthenticated, "send Authorization: Bearer <access token>, or ?ticket= from CreateNotificationStreamTicket")
        }
        guard let person = UUID(uuidString: personID) else { throw RPCError(.internal, "messaging named no person") }
        return person
    }

    /// One SSE event: the notification's seq as its id, its JSON as the data (one line).
    static func event(_ n: Caremesh_Messaging_V1_Notification) throws -> ByteBuffer {
        ByteBuffer(string: "id: \(n.seq)\nevent: notification\ndata: \(try n.jsonString())\n\n")
    }

    /// An announcement's SSE event, for everyone: no id (it is not one of the person's
    /// notifications, and a resumed stream does not replay it; `ListAnnouncements` lists them).
    static func event(_ a: Caremesh_Messaging_V1_AnnouncementPublished) throws -> ByteBuffer {
        ByteBuffer(string: "event: announcement\ndata: \(try a.jsonString())\n\n")
    }

    /// Follows messaging's `NotificationCreated` and `AnnouncementPublished` events by long
    /// polls (one for both), as the service "router", from the newest at start (a stream resumes
    /// from messaging itself): a notification to its person's streams, an announcement to every
    /// stream. After a failed pull, every stream re-syncs from messaging.
    func followNotifications(_ service: RPCClient) async {
        let announcementType = Caremesh_Messaging_V1_AnnouncementPublished.protoMessageName
        let follower = EventFollower(client: service, service: "messaging", types: [Self.notificationType, announcementType], start: .newest,
                                     what: "messaging's notifications", logger: logger)
        await follower.run(deliver: { events in
            for event in events {
                if event.type == announcementType {
                    if let e = try? Caremesh_Messaging_V1_AnnouncementPublished(serializedBytes: event.payload) { self.hub.broadcast(.announcement(e)) }
                } else if let e = try? Caremesh_Messaging_V1_NotificationCreated(serializedBytes: event.payload) {
                    self.hub.publish(e.notification)
                }
            }
        }, missed: { self.hub.broadcast(.resync) })
    }

    /// Beats every open stream's heartbeat.
    func beatStreams() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: configuration.streamHeartbeat) } catch { return }
            hub.broadcast(.heartbeat)
        }
    }
}

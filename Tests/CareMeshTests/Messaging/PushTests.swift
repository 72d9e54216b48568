import CareMeshContracts
import CareMeshRPC
import CareMeshTesting
import Foundation
@testable import MessagingService
import ProviderSandbox
import Testing

/// Push notifications end to end (issue 33): devices registered by their people, an SOS offer
/// pushed through FCM HTTP v1 and APNs (the sandbox checks each wire format and credential), a
/// token the provider says is gone removes its device, a provider's trouble is retried, a chat
/// message pushed to the other participant and never texted.
extension SmsTests {
    static func fcmToken() -> String { "e" + (0..<15).map { _ in UUID().uuidString.replacingOccurrences(of: "-", with: "") }.joined().prefix(150) + ":APA91b" }
    static func apnsToken() -> String { (0..<2).map { _ in UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased() }.joined() }

    func register(_ s: Stack, _ who: TestAccount, _ platform: Caremesh_Messaging_V1_PushPlatform, _ token: String, name: String = "")
        async throws -> Caremesh_Messaging_V1_RegisterMyPushDeviceResponse
    {
        try await s.client.call(MessagingMethods.registerMyPushDevice, request: .with {
            $0.platform = platform
            $0.token = token
            $0.name = name
        }, options: who.auth)
    }

    func devices(_ s: Stack, _ who: TestAccount) async throws -> [Caremesh_Messaging_V1_PushDevice] {
        try await s.client.call(MessagingMethods.listMyPushDevices, request: .init(), options: who.auth).devices
    }

    /// The pushes the sandbox took for `token`, waiting until there are `count`.
    func pushes(_ s: Stack, to token: String, count: Int) async throws -> [ProviderSandbox.ReceivedPush] {
        try await TestStack.eventually(timeout: .seconds(15)) {
            let got = s.sandbox.pushes.filter { $0.token == token }
            guard got.count >= count else { throw RPCError(.unavailable, "\(got.count) of \(count) pushes to …\(token.suffix(8))") }
            return got
        }
    }

    @Test func devicesAreEachPersonsOwnAndBadOnesAreRefusedWithTheFieldNamed() async throws {
        try await withStack { s in
            let a = try await TestAccount.make(s.client, s.db, role: "volunteer")
            let b = try await TestAccount.make(s.client, s.db, role: "user")
            let token = Self.fcmToken(), apns = Self.apnsToken()
            let first = try await register(s, a, .fcm, token, name: "Pixel 8")
            #expect(first.created && first.device.platform == .fcm && first.device.name == "Pixel 8" && first.device.tokenHint == String(token.suffix(8)))
            // Again (the app starts again): the same device, renamed.
            let again = try await register(s, a, .fcm, token, name: "Pixel 8a")
            #expect(!again.created && again.device.id == first.device.id && again.device.name == "Pixel 8a")
            // APNs tokens are hex, upper or lower case.
            let iphone = try await register(s, a, .apns, apns.uppercased())
            #expect(iphone.created && iphone.device.tokenHint == String(apns.suffix(8)))
            #expect(try await devices(s, a).map(\.id) == [first.device.id, iphone.device.id])

            // Refused, nothing written, the field named.
            for (platform, bad, field) in [(Caremesh_Messaging_V1_PushPlatform.fcm, "short", "token"), (.apns, "xyz" + apns.dropFirst(3), "token"),
                                           (.apns, String(apns.prefix(63)), "token"), (.unspecified, token, "platform")] {
                let error = await rpcError(of: { _ = try await register(s, a, platform, bad) })
                #expect(error?.code == .invalidArgument && error?.details.contains { $0.badRequest.fieldViolations.contains { $0.field == field } } == true)
            }
            #expect(await rpcError(of: { _ = try await register(s, a, .fcm, Self.fcmToken(), name: String(repeating: "x", count: 61)) })?.code
                    == .invalidArgument)
            #expect(try await s.count("SELECT count(*) FROM messaging.push_devices") == 2)

            // B cannot see or remove A's devices; B registering A's token (the same phone, signed
            // in as B) moves it to B as a new device.
            #expect(try await devices(s, b).isEmpty)
            let notYours = await rpcError(of: {
                _ = try await s.client.call(MessagingMethods.removeMyPushDevice, request: .with { $0.deviceID = iphone.device.id }, options: b.auth)
            })
            #expect(notYours?.code == .notFound && notYours?.message.contains("device_id") == true)
            let moved = try await register(s, b, .fcm, token)
            #expect(moved.created && moved.device.id != first.device.id)
            #expect(try await devices(s, a).map(\.id) == [iphone.device.id])
            _ = try await s.client.call(MessagingMethods.removeMyPushDevice, request: .with { $0.deviceID = iphone.device.id }, options: a.auth)
            #expect(try await devices(s, a).isEmpty)
            #expect(try await s.count("SELECT count(*) FROM messaging.push_devices") == 1)
        }
    }

    @Test func anSosOfferIsPushedToEveryDeviceAGoneTokenIsRemovedAndAChatMessageIsPushedNotTexted() async throws {
        try await withStack(["DISPATCH_WAVE_SIZE": "1"], dispatch: true) { s in
            let requester = try await TestAccount.make(s.client, s.db, role: "user")
            let volunteer = try await TestAccount.make(s.client, s.db, role: "volunteer")
            _ = try await chooseSms(s, volunteer, sms: true)
            let requesterPhone = try await chooseSms(s, requester, sms: true)
            let (android, iphone, gone) = (Self.fcmToken(), Self.apnsToken(), Self.apnsToken())
            _ = try await register(s, volunteer, .fcm, android, name: "Android")
            _ = try await register(s, volunteer, .apns, iphone, name: "iPhone")
            let old = try await register(s, volunteer, .apns, gone, name: "old iPad")
            _ = try await register(s, requester, .fcm, Self.fcmToken())
            // FCM is unavailable once (retried), the iPad's token is gone (its device removed).
            s.sandbox.apply(.init(api: "fcm", to: android, sendErrors: [503]))
            s.sandbox.apply(.init(api: "apns", to: gone, pushGone: true))

            try await Self.placeVolunteers([volunteer], near: Self.paris, s.db)
            let sos = try await Self.createSos(s, by: requester, at: Self.paris)
            let fcm = try #require(try await pushes(s, to: android, count: 1).first)
            let apns = try #require(try await pushes(s, to: iphone, count: 1).first)
            for push in [fcm, apns] {
                #expect(push.title == "SOS near you" && push.body.contains("medical, high priority"))
                #expect(push.data["sos_id"] == sos.id && push.data["kind"] == "SOS_OFFERED" && push.data["notification_id"] != nil)
                #expect(!push.body.contains("chest") && !push.body.contains("diabetic"))
            }
            #expect(fcm.priority == "HIGH" && apns.priority == "10")
            // The gone token's device is removed; the notification's push was sent (two of three devices took it).
            _ = try await TestStack.eventually(timeout: .seconds(15)) {
                guard try await devices(s, volunteer).map(\.id).contains(old.device.id) == false else {
                    throw RPCError(.unavailable, "the iPad is still registered")
                }
            }
            #expect(try await devices(s, volunteer).map(\.name).sorted() == ["Android", "iPhone"])
            let offer = try await TestStack.eventually(timeout: .seconds(15)) {
                let n = try await s.client.call(MessagingMethods.listMyNotifications, request: .init(), options: volunteer.auth).notifications
                guard let push = n.first?.deliveries.first(where: { $0.channel == .push }), push.status == .sent else {
                    throw RPCError(.unavailable, "deliveries: \(n.first?.deliveries ?? [])")
                }
                return push
            }
            #expect(offer.attempts == 2 && offer.error.contains("no longer valid"))
            #expect(try await s.count("SELECT count(*) FROM messaging.push_sends WHERE status = 'sent'") == 2)
            #expect(s.sandbox.attempts("fcm") >= 2)

            // Accepted in the app; the volunteer writes in the chat: the requester's device is
            // pushed "New message" (never its text), and the message is not texted.
            _ = try await s.client.call(DispatchMethods.acceptSos, request: .with { $0.sosID = sos.id }, options: volunteer.auth)
            let chat = try await TestStack.eventually(timeout: .seconds(15)) {
                try await Self.chatSend(s, sos.id, volunteer, "On my way, 5 minutes")
            }
            let requesterPushes = try await TestStack.eventually(timeout: .seconds(15)) {
                let got = s.sandbox.pushes.filter { $0.data["kind"] == "CHAT_MESSAGE" }
                guard !got.isEmpty else { throw RPCError(.unavailable, "no chat push yet") }
                return got
            }
            #expect(requesterPushes.count == 1 && requesterPushes[0].title == "New message" && !requesterPushes[0].body.contains("On my way"))
            #expect(requesterPushes[0].data["message_id"] == chat.message.id && requesterPushes[0].priority == "NORMAL")
            #expect(!s.sandbox.received.contains { $0.to == requesterPhone && $0.body.contains("message") })
        }
    }

    @Test func aPushThatExpiredOrLostItsDeviceFailsAndIsNeverSent() async throws {
        try await withStack { s in
            let person = try await TestAccount.make(s.client, s.db, role: "user")
            let token = Self.fcmToken()
            let device = try await register(s, person, .fcm, token).device
            let note = try await s.db.sql("""
                WITH p AS (INSERT INTO messaging.notification_people (person_id, last_seq) VALUES (\(person.id), 1))
                INSERT INTO messaging.notifications (person_id, seq, kind, critical, title, body, event_id, route_at)
                VALUES (\(person.id), 1, 'CHAT_MESSAGE', false, 'New message', 'Open CareMesh to read it.', gen_random_uuid(), NULL)
                RETURNING id
                """)[0].decode(UUID.self)
            // One send past its time on a device still there; another whose device its person removes.
            let kept = try await register(s, person, .apns, Self.apnsToken()).device
            @Sendable func send(_ device: String, due: String, expires: String) async throws -> UUID {
                try await s.db.sql("""
                    INSERT INTO messaging.push_sends (notification_id, device_id, next_attempt_at, expires_at)
                    VALUES (\(note), \(UUID(uuidString: device)!), now() + \(due)::interval, now() + \(expires)::interval) RETURNING id
                    """)[0].decode(UUID.self)
            }
            _ = try await s.db.sql("INSERT INTO messaging.notification_deliveries (notification_id, channel, status) VALUES (\(note), 'push', 'queued')")
            let expired = try await send(kept.id, due: "0 seconds", expires: "-1 second")
            // Not due before its device is gone.
            let orphan = try await send(device.id, due: "3 seconds", expires: "1 hour")
            _ = try await s.client.call(MessagingMethods.removeMyPushDevice, request: .with { $0.deviceID = device.id }, options: person.auth)
            for (id, why) in [(expired, "expired before it could be sent"), (orphan, "the device was removed")] {
                _ = try await TestStack.eventually(timeout: .seconds(15)) {
                    let row = try await s.db.sql("SELECT status, last_error FROM messaging.push_sends WHERE id = \(id)")[0].decode((String, String).self)
                    guard row.0 == "failed" else { throw RPCError(.unavailable, "still \(row.0)") }
                    #expect(row.1 == why)
                }
            }
            #expect(s.sandbox.pushes.isEmpty)
            let delivery = try await s.db.sql("SELECT status FROM messaging.notification_deliveries WHERE notification_id = \(note) AND channel = 'push'")
            #expect(try delivery[0].decode(String.self) == "failed")
        }
    }
}

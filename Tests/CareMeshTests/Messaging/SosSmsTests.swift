import CareMeshContracts
import CareMeshRPC
import CareMeshTesting
import Foundation
@testable import MessagingService
import ProviderSandbox
import Testing

/// SOS offers by SMS and answers that act (issue 33): an offer is texted to each volunteer who
/// chose SMS and consented, with a code; `YES <code>` from that phone accepts it through
/// dispatch, one winner among racing answers, each told by SMS.
extension SmsTests {
    /// The account's phone (identity's profile), after it chose SMS (or not) and, if it did,
    /// recorded its consent itself.
    func chooseSms(_ s: Stack, _ who: TestAccount, sms: Bool) async throws -> String {
        let phone = try await s.db.sql("SELECT phone FROM identity.user_profiles WHERE user_id = \(who.id)")[0].decode(String.self)
        guard sms else { return phone }
        try await choose(s, who.auth, phone: phone, sms: true, push: true)
        let entry = try await s.client.call(MessagingMethods.recordMySmsConsent, request: .with { $0.optedIn = true }, options: who.auth).entry
        #expect(entry.phone == phone && entry.optedIn && entry.method == .app && entry.evidence.contains(who.id.text))
        return phone
    }

    /// A text from `from` to our number, through the edge, signed as Twilio signs it.
    func text(_ s: Stack, from: String, _ body: String) async {
        await s.sandbox.postTwilio(url: "\(s.edgeURL)/webhooks/sms/twilio",
                                   [("MessageSid", "SM" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()),
                                    ("AccountSid", s.sandbox.configuration.twilioAccountSID), ("From", from), ("To", "+15005550006"),
                                    ("Body", body), ("NumMedia", "0")])
    }

    /// The messages the sandbox took for `phone`, waiting until there are `count`.
    func texts(_ s: Stack, to phone: String, count: Int) async throws -> [String] {
        try await TestStack.eventually(timeout: .seconds(15)) {
            let got = s.sandbox.received.filter { $0.to == phone }.map(\.body)
            guard got.count >= count else { throw RPCError(.unavailable, "\(got.count) of \(count) texts to \(phone)") }
            return got
        }
    }

    @Test func anSosOfferIsTextedWithACodeAndYesFromTwoPhonesAtOnceHasOneWinner() async throws {
        try await withStack(["DISPATCH_WAVE_SIZE": "3"], dispatch: true) { s in
            let requester = try await TestAccount.make(s.client, s.db, role: "user")
            let a = try await TestAccount.make(s.client, s.db, role: "volunteer")
            let b = try await TestAccount.make(s.client, s.db, role: "volunteer")
            let c = try await TestAccount.make(s.client, s.db, role: "volunteer")
            let (phoneA, phoneB) = (try await chooseSms(s, a, sms: true), try await chooseSms(s, b, sms: true))
            let phoneC = try await chooseSms(s, c, sms: false)
            // Contact points and offer answers are for messaging only.
            #expect(await statusCode {
                _ = try await s.client.call(IdentityMethods.getContactPoints, request: .with { $0.userIds = [a.id.text] }, options: s.admin.auth)
            } == .permissionDenied)
            #expect(await statusCode {
                _ = try await s.client.call(DispatchMethods.answerOffer, request: .with { $0.sosID = UUID().uuidString; $0.responderID = a.id.text
                    $0.accept = true }, options: a.auth)
            } == .permissionDenied)
            try await Self.placeVolunteers([a, b, c], near: Self.paris, s.db)
            let sos = try await Self.createSos(s, by: requester, at: Self.paris)

            // A and B are texted the offer with a code each; the text says nothing private.
            let code = /YES ([0-9]{4}) to go, or NO \1 to decline\./
            var codes: [String] = []
            for phone in [phoneA, phoneB] {
                let body = try #require(try await texts(s, to: phone, count: 1).first)
                #expect(body.hasPrefix("CareMesh: SOS near you (medical, high priority)."))
                #expect(!body.contains("chest") && !body.contains("diabetic"))
                codes.append(String(try #require(body.firstMatch(of: code)).1))
            }
            // C never chose SMS: the stream only.
            let cNotes = try await s.client.call(MessagingMethods.listMyNotifications, request: .init(), options: c.auth).notifications
            #expect(cNotes.count == 1 && cNotes[0].deliveries.map(\.channel) == [.stream])
            #expect(!s.sandbox.received.contains { $0.to == phoneC })
            // A's notification shows its SMS delivery, moved along by the provider's receipts.
            _ = try await TestStack.eventually(timeout: .seconds(15)) {
                let n = try await s.client.call(MessagingMethods.listMyNotifications, request: .init(), options: a.auth).notifications
                guard n.first?.deliveries.first(where: { $0.channel == .sms })?.status == .delivered else {
                    throw RPCError(.unavailable, "deliveries: \(n.first?.deliveries ?? [])")
                }
            }

            // A's code from a phone it was never sent to: nothing happens, nobody is texted.
            let stranger = Self.phone()
            await text(s, from: stranger, "YES \(codes[0])")
            // A code A's phone never had: told so.
            let unknown = codes[0] == "1000" ? "1001" : "1000"
            await text(s, from: phoneA, "yes \(unknown)")
            #expect(try await texts(s, to: phoneA, count: 2)[1].contains("we do not know that code"))
            #expect(try await s.count("SELECT count(*) FROM messaging.sos_sms_answers WHERE outcome = 'ignored'") == 1)
            #expect(!s.sandbox.received.contains { $0.to == stranger })
            #expect(try await s.client.call(DispatchMethods.getSos, request: .with { $0.sosID = sos.id }, options: requester.auth).sos.status
                    == .pending)

            // A and B both answer YES at once: one wins, the other is told it is taken.
            let (codeA, codeB) = (codes[0], codes[1])
            async let first: Void = text(s, from: phoneA, "YES \(codeA)")
            async let second: Void = text(s, from: phoneB, " Yes \(codeB). ")
            _ = await (first, second)
            let accepted = try await TestStack.eventually(timeout: .seconds(15)) {
                let got = try await s.client.call(DispatchMethods.getSos, request: .with { $0.sosID = sos.id }, options: requester.auth).sos
                guard got.status == .accepted else { throw RPCError(.unavailable, "the SOS is \(got.status)") }
                return got
            }
            let winner = accepted.acceptedBy == a.id.text ? phoneA : phoneB
            let loser = winner == phoneA ? phoneB : phoneA
            #expect([a.id.text, b.id.text].contains(accepted.acceptedBy))
            #expect(try await texts(s, to: winner, count: winner == phoneA ? 3 : 2).last?.contains("you accepted the SOS") == true)
            #expect(try await texts(s, to: loser, count: loser == phoneA ? 3 : 2).last?.contains("already taken") == true)
            let outcomes = try await s.db.sql("SELECT outcome FROM messaging.sos_sms_answers WHERE outcome IN ('accepted', 'taken')")
                .map { try $0.decode(String.self) }.sorted()
            #expect(outcomes == ["accepted", "taken"])
        }
    }

    /// Quiet hours from an hour ago to an hour from now, in UTC.
    static func quietNow() -> Caremesh_Messaging_V1_NotificationSettings {
        var utc = Calendar(identifier: .gregorian)
        utc.timeZone = .gmt
        func hhmm(_ d: Date) -> String { String(format: "%02d:%02d", utc.component(.hour, from: d), utc.component(.minute, from: d)) }
        return .with {
            $0.timeZone = "UTC"
            $0.quietHours = .with { $0.start = hhmm(Date().addingTimeInterval(-3_600)); $0.end = hhmm(Date().addingTimeInterval(3_600)) }
        }
    }

    @Test func quietHoursHoldTheRequestersNewsButNotAVolunteersOfferAndAKindTurnedOffIsNotTexted() async throws {
        try await withStack(["DISPATCH_WAVE_SIZE": "1"], dispatch: true) { s in
            let requester = try await TestAccount.make(s.client, s.db, role: "user")
            let volunteer = try await TestAccount.make(s.client, s.db, role: "volunteer")
            let requesterPhone = try await chooseSms(s, requester, sms: true)
            let volunteerPhone = try await chooseSms(s, volunteer, sms: true)
            for who in [requester, volunteer] {
                let saved = try await s.client.call(MessagingMethods.putMyNotificationSettings, request: .with { $0.settings = Self.quietNow() },
                                                    options: who.auth).settings
                #expect(saved == Self.quietNow())
            }
            #expect(try await s.client.call(MessagingMethods.getMyNotificationSettings, request: .init(), options: requester.auth).settings
                    == Self.quietNow())
            try await Self.placeVolunteers([volunteer], near: Self.paris, s.db)
            let sos = try await Self.createSos(s, by: requester, at: Self.paris)
            // The offer is critical: texted at once, quiet hours or not.
            let offer = try await texts(s, to: volunteerPhone, count: 1)
            #expect(offer[0].contains("SOS near you"))
            // Accepted in the app: the requester's news waits for the end of their quiet hours, as a scheduled SMS.
            _ = try await s.client.call(DispatchMethods.acceptSos, request: .with { $0.sosID = sos.id }, options: volunteer.auth)
            let held = try await TestStack.eventually(timeout: .seconds(10)) {
                let rows = try await s.db.sql("""
                    SELECT status, extract(epoch FROM scheduled_at - now())::float8 FROM messaging.sms_messages
                    WHERE phone_number = \(requesterPhone) AND message_type = 'notification'
                    """).map { try $0.decode((String, Double).self) }
                guard let row = rows.first else { throw RPCError(.unavailable, "no SMS for the requester yet") }
                return row
            }
            #expect(held.0 == "scheduled" && held.1 > 0 && held.1 <= 3_600)
            #expect(!s.sandbox.received.contains { $0.to == requesterPhone })
            let accepted = try await s.client.call(MessagingMethods.listMyNotifications, request: .init(), options: requester.auth).notifications
            #expect(accepted.first?.kind == .sosAccepted && accepted.first?.deliveries.first { $0.channel == .sms }?.status == .queued)

            // SMS turned off for SOS news (no quiet hours): the volunteer dropping out reaches the stream only.
            let off = try await s.client.call(MessagingMethods.putMyNotificationSettings, request: .with {
                $0.settings = .with { $0.timeZone = "Europe/Paris"; $0.kinds = [.with { $0.kind = .sosUpdated; $0.off = [.sms] }] }
            }, options: requester.auth).settings
            #expect(!off.hasQuietHours && off.kinds.first?.off == [.sms])
            _ = try await s.client.call(DispatchMethods.cancelSos, request: .with { $0.sosID = sos.id; $0.reason = "car broke down" },
                                        options: volunteer.auth)
            let updated = try await TestStack.eventually(timeout: .seconds(10)) {
                let n = try await s.client.call(MessagingMethods.listMyNotifications, request: .init(), options: requester.auth).notifications
                guard let first = n.first, first.kind == .sosUpdated else { throw RPCError(.unavailable, "no update yet") }
                return first
            }
            // Routed (give it a moment), and no SMS for it.
            _ = try await TestStack.eventually(timeout: .seconds(10)) {
                guard try await s.count("SELECT count(*) FROM messaging.notifications WHERE route_at IS NOT NULL") == 0 else {
                    throw RPCError(.unavailable, "not routed yet")
                }
            }
            #expect(try await s.count("""
                SELECT count(*) FROM messaging.sms_messages WHERE client_correlator = \("notification:\(updated.id)")
                """) == 0)
            #expect(updated.deliveries.map(\.channel) == [.stream])
            // Someone else's settings are not theirs to read: each reads their own.
            #expect(try await s.client.call(MessagingMethods.getMyNotificationSettings, request: .init(), options: volunteer.auth).settings
                    == Self.quietNow())
        }
    }
}

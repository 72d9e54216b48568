import CareMeshContracts
import CareMeshRPC
import Foundation
@testable import MessagingService
import Testing

/// The pure core of notification channels and SMS answers (issue 33), without I/O.
struct NotificationChannelsTests {
    static func contact(sms: Bool = true, active: Bool = true, phone: String = "+33612345678") -> Caremesh_Identity_V1_ContactPoints {
        .with {
            $0.userID = UUID().uuidString
            $0.phone = phone
            $0.active = active
            $0.channels = .with { $0.sms = sms; $0.push = true }
        }
    }

    @Test("SMS only to an active person who chose it and has a phone, and never for a chat message")
    func whoIsTexted() {
        #expect(NotificationChannels.smsNumber(.sosOffered, Self.contact()) == "+33612345678")
        #expect(NotificationChannels.smsNumber(.sosAccepted, Self.contact()) == "+33612345678")
        #expect(NotificationChannels.smsNumber(.sosUpdated, Self.contact()) == "+33612345678")
        #expect(NotificationChannels.smsNumber(.chatMessage, Self.contact()) == nil)
        #expect(NotificationChannels.smsNumber(.sosOffered, Self.contact(sms: false)) == nil)
        #expect(NotificationChannels.smsNumber(.sosOffered, Self.contact(active: false)) == nil)
        #expect(NotificationChannels.smsNumber(.sosOffered, Self.contact(phone: "")) == nil)
        #expect(NotificationChannels.smsNumber(.sosOffered, nil) == nil)
        #expect(NotificationChannels.takesReply(.sosOffered) && !NotificationChannels.takesReply(.sosAccepted))
    }

    @Test("email to an active person who chose it and verified their address, for their SOS and their account; an account lock whatever")
    func whoIsEmailed() {
        var chose = Self.contact()
        chose.email = "ana@example.org"
        chose.emailVerified = true
        chose.channels.email = true
        var didNot = chose
        didNot.channels.email = false
        for kind in [Caremesh_Messaging_V1_NotificationKind.sosOffered, .sosAccepted, .sosUpdated, .credentialUpdated, .accountLocked] {
            #expect(NotificationChannels.emailAddress(kind, chose) == "ana@example.org", "\(kind)")
            #expect(NotificationChannels.emailAddress(kind, didNot) == (kind == .accountLocked ? "ana@example.org" : nil), "\(kind)")
        }
        #expect(NotificationChannels.emailAddress(.chatMessage, chose) == nil)
        var unverified = chose
        unverified.emailVerified = false
        #expect(NotificationChannels.emailAddress(.sosAccepted, unverified) == nil)
        #expect(NotificationChannels.emailAddress(.accountLocked, unverified) == "ana@example.org")
        var inactive = chose
        inactive.active = false
        var noAddress = chose
        noAddress.email = ""
        #expect(NotificationChannels.emailAddress(.accountLocked, inactive) == nil && NotificationChannels.emailAddress(.accountLocked, noAddress) == nil)
        let (subject, text) = NotificationChannels.email(title: "Your account is locked", body: "Reset your password.")
        #expect(subject == "CareMesh: Your account is locked" && text.hasPrefix("Reset your password.\n\nOpen CareMesh"))
        // Push: every kind, to an active person who chose it.
        #expect(NotificationChannels.wantsPush(.chatMessage, chose) && !NotificationChannels.wantsPush(.chatMessage, inactive))
        var noPush = chose
        noPush.channels.push = false
        #expect(!NotificationChannels.wantsPush(.sosOffered, noPush) && !NotificationChannels.wantsPush(.sosOffered, nil))
        #expect(NotificationChannels.lifetime(.sosOffered) == .seconds(900) && NotificationChannels.lifetime(.chatMessage) == .seconds(86_400))
    }

    @Test("the offer's text names the kind and priority and how to answer; others their own short text")
    func texts() {
        let offer = NotificationChannels.smsText(kind: .sosOffered, title: "SOS near you", body: "ignored",
                                                 data: ["emergency_type": "NATURAL_DISASTER", "priority": "CRITICAL"], code: "4821")
        #expect(offer == "CareMesh: SOS near you (natural disaster, critical priority). Reply YES 4821 to go, or NO 4821 to decline.")
        #expect(SmsSegments(offer).segments == 1)
        #expect(NotificationChannels.smsText(kind: .sosAccepted, title: "A volunteer is coming", body: "On the way.", data: [:], code: nil)
            == "CareMesh: A volunteer is coming. On the way.")
        var g = SystemRandomNumberGenerator()
        for _ in 0..<200 { #expect(NotificationChannels.newCode(using: &g).wholeMatch(of: /[1-9][0-9]{3}/) != nil) }
    }

    @Test("an answer is a yes or no word and a 4-digit code, in any case and in four languages; anything else is not one")
    func parsing() {
        let cases: [(String, SosSmsAnswer.Parsed?)] = [
            ("YES 4821", .init(accept: true, code: "4821", language: "en")),
            (" yes 4821. ", .init(accept: true, code: "4821", language: "en")),
            ("y 4821", .init(accept: true, code: "4821", language: "en")),
            ("No 4821!", .init(accept: false, code: "4821", language: "en")),
            ("oui 1234", .init(accept: true, code: "1234", language: "fr")),
            ("Não 1234", .init(accept: false, code: "1234", language: "pt")),
            ("sí 1234", .init(accept: true, code: "1234", language: "es")),
            ("YES", nil), ("YES 482", nil), ("YES 48210", nil), ("YES 48a1", nil), ("YES 4821 please", nil), ("MAYBE 4821", nil),
            ("YES ٤٨٢١", nil), ("STOP", nil), ("", nil),
        ]
        for (body, expected) in cases { #expect(SosSmsAnswer.parse(body) == expected, "\(body)") }
    }

    @Test("what dispatch's answer means: taken, refused, or try again")
    func outcomes() {
        #expect(SosSmsAnswer.outcome(accept: true, error: nil) == .accepted)
        #expect(SosSmsAnswer.outcome(accept: false, error: nil) == .declined)
        for state in ["ACCEPTED", "IN_PROGRESS", "RESOLVED", "CANCELLED"] {
            let e = RPCError(.failedPrecondition, "no", details: [RPCError.detail(reason: "SOS_\(state)", domain: "dispatch")])
            #expect(SosSmsAnswer.outcome(accept: true, error: e) == .taken)
        }
        #expect(SosSmsAnswer.outcome(accept: true, error: RPCError(.failedPrecondition, "already has an SOS in hand")) == .refused)
        #expect(SosSmsAnswer.outcome(accept: true, error: RPCError(.permissionDenied, "not offered")) == .refused)
        for code: StatusCode in [.unavailable, .deadlineExceeded, .internal, .aborted] {
            #expect(SosSmsAnswer.outcome(accept: true, error: RPCError(code, "later")) == nil)
        }
        #expect(SosSmsAnswer.reply(.ignored) == nil)
        #expect(SosSmsAnswer.reply(.refused, why: "busy")?.contains("(busy)") == true)
        for outcome in SosSmsAnswer.Outcome.allCases where outcome != .ignored {
            #expect(SmsSegments(SosSmsAnswer.reply(outcome, why: "this responder already has an SOS in hand: finish or cancel it first")!)
                .encoding == .gsm7)
        }
    }

    static func at(_ text: String) -> Date { try! Date(text, strategy: .iso8601) }

    @Test("quiet hours hold what is not critical until they end, across midnight and a clock change; critical goes now")
    func quietHours() throws {
        let paris = try #require(TimeZone(identifier: "Europe/Paris"))
        let night = QuietWindow(start: LocalTime("22:00")!, end: LocalTime("07:00")!)
        let settings = PersonSettings(timeZone: paris, quiet: night, off: [])
        // 23:30 Paris (22:30Z, winter): held until 07:00 Paris the next morning.
        #expect(settings.decide(.sosAccepted, .sms, now: Self.at("2026-12-07T22:30:00Z")) == .at(Self.at("2026-12-08T06:00:00Z")))
        // 06:59 Paris: still held, one minute.
        #expect(settings.decide(.sosUpdated, .sms, now: Self.at("2026-12-08T05:59:00Z")) == .at(Self.at("2026-12-08T06:00:00Z")))
        // 07:00 and 21:59 Paris: out of the window.
        #expect(settings.decide(.sosUpdated, .sms, now: Self.at("2026-12-08T06:00:00Z")) == .now)
        #expect(settings.decide(.sosUpdated, .sms, now: Self.at("2026-12-08T20:59:00Z")) == .now)
        // The night the clocks go back (25 October 2026): 07:00 local is 06:00Z.
        #expect(settings.decide(.sosUpdated, .sms, now: Self.at("2026-10-25T01:30:00Z")) == .at(Self.at("2026-10-25T06:00:00Z")))
        // A rule alert waits on every channel; an SOS offer, a care alert's news and an account
        // lock are critical; the stream is never held.
        for channel in [Caremesh_Messaging_V1_DeliveryChannel.push, .sms, .email] {
            #expect(settings.decide(.ruleAlert, channel, now: Self.at("2026-12-07T22:30:00Z")) == .at(Self.at("2026-12-08T06:00:00Z")))
            for critical in [Caremesh_Messaging_V1_NotificationKind.sosOffered, .careAlertUpdated, .accountLocked] {
                #expect(settings.decide(critical, channel, now: Self.at("2026-12-07T22:30:00Z")) == .now)
            }
        }
        #expect(settings.decide(.sosOffered, .sms, now: Self.at("2026-12-07T22:30:00Z")) == .now)
        #expect(settings.decide(.sosAccepted, .stream, now: Self.at("2026-12-07T22:30:00Z")) == .now)
        // A daytime window that does not wrap.
        let lunch = PersonSettings(timeZone: .gmt, quiet: QuietWindow(start: LocalTime("12:00")!, end: LocalTime("13:30")!), off: [])
        #expect(lunch.decide(.chatMessage, .push, now: Self.at("2026-12-07T12:10:00Z")) == .at(Self.at("2026-12-07T13:30:00Z")))
        #expect(lunch.decide(.chatMessage, .push, now: Self.at("2026-12-07T13:30:00Z")) == .now)
        // A channel turned off for a kind is off for it only, and never for a critical kind.
        let off = PersonSettings(timeZone: .gmt, quiet: nil, off: [PersonSettings.key(.sosUpdated, .sms)])
        #expect(off.decide(.sosUpdated, .sms, now: Date()) == .off)
        #expect(off.decide(.sosAccepted, .sms, now: Date()) == .now)
        #expect(off.decide(.sosUpdated, .push, now: Date()) == .now)
    }

    @Test("settings are validated field by field; a critical kind cannot be turned off")
    func settingsValidation() throws {
        var s = Caremesh_Messaging_V1_NotificationSettings()
        s.timeZone = "Mars/Olympus"
        s.quietHours = .with { $0.start = "22:00"; $0.end = "7:00" }
        s.kinds = [.with { $0.kind = .sosOffered; $0.off = [.sms] }, .with { $0.kind = .chatMessage; $0.off = [.stream] }]
        do {
            _ = try Notifications.validated(s)
            Issue.record("accepted")
        } catch {
            #expect(Set(error.details.flatMap(\.badRequest.fieldViolations).map(\.field))
                    == ["settings.time_zone", "settings.quiet_hours.end", "settings.kinds[0].kind", "settings.kinds[1].off[0]"])
        }
        s.timeZone = "Europe/Paris"
        s.quietHours.end = "07:00"
        s.kinds = [.with { $0.kind = .chatMessage; $0.off = [.push, .sms] }]
        let ok = try Notifications.validated(s)
        #expect(ok.quiet == QuietWindow(start: LocalTime("22:00")!, end: LocalTime("07:00")!) && ok.off.count == 2)
        #expect(Notifications.proto(ok) == s)
        #expect(Notifications.proto(.defaults).timeZone == "UTC" && !Notifications.proto(.defaults).hasQuietHours)
    }
}

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
}

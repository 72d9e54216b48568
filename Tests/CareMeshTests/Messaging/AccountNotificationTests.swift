import CareMeshContracts
import CareMeshRPC
import CareMeshTesting
import Foundation
import ProviderSandbox
import Testing

/// Notifications from identity's events (issue 33): an account locked after failed sign-ins is
/// emailed whatever its holder chose (a security notice); a volunteer verified hears of it on the
/// channels they chose, by email only at an address they verified.
extension SmsTests {
    func choose(_ s: Stack, _ auth: CallOptions, phone: String, sms: Bool = false, push: Bool = false, email: Bool = false) async throws {
        var update = Caremesh_Identity_V1_UpdateProfileRequest()
        update.profile.name = "Notified Person"
        update.profile.phone = phone
        update.profile.preferences.notifications = .with { $0.sms = sms; $0.push = push; $0.email = email }
        _ = try await s.client.call(IdentityMethods.updateProfile, request: update, options: auth)
    }

    func emails(_ s: Stack, to address: String, subject: String) async throws -> [ProviderSandbox.ReceivedEmail] {
        try await TestStack.eventually(timeout: .seconds(15)) {
            let got = s.sandbox.emails.filter { $0.to == address && $0.subject == subject }
            guard !got.isEmpty else { throw RPCError(.unavailable, "no email '\(subject)' yet") }
            return got
        }
    }

    @Test func anAccountLockIsEmailedWhateverWasChosenAndAVerificationOnTheChannelsChosen() async throws {
        try await withStack(["IDENTITY_LOCKOUT_THRESHOLD": "3"]) { s in
            // Someone who chose SMS only: three wrong passwords lock the account, and they are told by email.
            let locked = try await register(s)
            let lockedAuth = Self.bearer(locked.session)
            try await choose(s, lockedAuth, phone: Self.phone(), sms: true)
            for _ in 0..<3 {
                #expect(await statusCode {
                    _ = try await s.client.call(IdentityMethods.login, request: .with { $0.email = locked.email; $0.password = "not the password" })
                } == .unauthenticated)
            }
            let notice = try await emails(s, to: locked.email, subject: "CareMesh: Your account is locked")
            #expect(notice.count == 1 && notice[0].text.contains("If this was not you, reset your password."))
            let lockNote = try await TestStack.eventually(timeout: .seconds(15)) {
                let n = try await s.client.call(MessagingMethods.listMyNotifications, request: .init(), options: lockedAuth).notifications
                guard let lock = n.first(where: { $0.kind == .accountLocked }), lock.deliveries.contains(where: { $0.channel == .email && $0.status == .sent })
                else { throw RPCError(.unavailable, "deliveries: \(n.map(\.deliveries))") }
                return lock
            }
            #expect(lockNote.critical && lockNote.deliveries.map(\.channel) == [.email, .stream])

            // A volunteer who chose email and push: told of their verification by both, once their
            // address is verified; before, by push only.
            let volunteer = try await register(s, role: .volunteer)
            let auth = Self.bearer(volunteer.session)
            try await choose(s, auth, phone: Self.phone(), push: true, email: true)
            let device = Self.fcmToken()
            _ = try await self.register(s, TestAccount(id: UUID(uuidString: volunteer.id)!, auth: auth), .fcm, device)
            _ = try await s.client.call(IdentityMethods.submitVolunteerCredentials, request: .with {
                $0.credentials.skills = [.firstAid]
            }, options: auth)
            _ = try await s.client.call(IdentityMethods.verifyUser, request: .with { $0.userID = volunteer.id }, options: s.admin.auth)
            let pushed = try await pushes(s, to: device, count: 1)
            #expect(pushed[0].title == "You are verified" && pushed[0].data["kind"] == "CREDENTIAL_UPDATED")
            _ = try await TestStack.eventually(timeout: .seconds(10)) {
                guard try await s.count("SELECT count(*) FROM messaging.notifications WHERE route_at IS NOT NULL") == 0 else {
                    throw RPCError(.unavailable, "not routed yet")
                }
            }
            #expect(!s.sandbox.emails.contains { $0.to == volunteer.email && $0.subject == "CareMesh: You are verified" })

            // Address verified; withdrawn then verified again: emailed this time.
            let code = try await emailedCode(s, to: volunteer.email, subject: "Confirm your CareMesh email")
            _ = try await s.client.call(IdentityMethods.verifyEmail, request: .with { $0.code = code }, options: auth)
            _ = try await s.client.call(IdentityMethods.revokeVerification, request: .with { $0.userID = volunteer.id; $0.reason = "paperwork" },
                                        options: s.admin.auth)
            let withdrawn = try await emails(s, to: volunteer.email, subject: "CareMesh: Your verification was withdrawn")
            #expect(!withdrawn[0].text.contains("paperwork"))
            #expect(try await pushes(s, to: device, count: 2)[1].title == "Your verification was withdrawn")
        }
    }
}

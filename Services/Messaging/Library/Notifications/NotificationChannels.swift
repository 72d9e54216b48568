import CareMeshContracts
import Foundation

/// Which channels beyond the live stream a notification goes on, and what it says there: a
/// pure function of the notification and its person's contact points (identity's
/// `GetContactPoints`), tested without I/O.
enum NotificationChannels {
    /// Kinds texted to people who chose SMS: an SOS offered to them, news of their own SOS or of
    /// the care alert they raised.
    /// A chat message never goes by SMS (the app is where its text is read).
    static let smsKinds: Set<Caremesh_Messaging_V1_NotificationKind> = [.sosOffered, .sosAccepted, .sosUpdated, .careAlertUpdated]

    /// How long an SOS offer's reply code can be answered.
    static let replyCodeLifetime: Duration = .seconds(2 * 3_600)

    /// The number to text `kind` to, or nil: an active person who chose SMS and has a phone.
    /// (Their number's consent is checked when the SMS is recorded.)
    static func smsNumber(_ kind: Caremesh_Messaging_V1_NotificationKind, _ contact: Caremesh_Identity_V1_ContactPoints?) -> String? {
        guard smsKinds.contains(kind), let contact, contact.active, contact.channels.sms, !contact.phone.isEmpty else { return nil }
        return contact.phone
    }

    /// Whether `kind` goes to the person's push devices: every kind does, to an active person who
    /// chose push (the devices are messaging's own: `push_devices`).
    static func wantsPush(_ kind: Caremesh_Messaging_V1_NotificationKind, _ contact: Caremesh_Identity_V1_ContactPoints?) -> Bool {
        guard let contact, contact.active, contact.channels.push else { return false }
        return kind != .unspecified
    }

    /// How long after it may go a push or an email is still worth sending: an offer is answered
    /// in minutes or taken by someone else; news and messages keep for a day.
    static func lifetime(_ kind: Caremesh_Messaging_V1_NotificationKind) -> Duration {
        kind == .sosOffered ? .seconds(15 * 60) : .seconds(86_400)
    }

    /// Kinds emailed to people who chose email: what is about their SOS, their account, their
    /// alerts (a chat message is read in the app).
    static let emailKinds: Set<Caremesh_Messaging_V1_NotificationKind> = [
        .sosOffered, .sosAccepted, .sosUpdated, .accountLocked, .credentialUpdated, .ruleAlert, .careAlertUpdated,
    ]
    /// Kinds emailed whatever the person chose: security notices.
    static let alwaysEmailed: Set<Caremesh_Messaging_V1_NotificationKind> = [.accountLocked]

    /// The address to email `kind` to, or nil: an active person's verified address if they chose
    /// email (an unverified one may be a stranger's, mistyped), their address whatever they chose
    /// for a security notice (as a password reset goes to it).
    static func emailAddress(_ kind: Caremesh_Messaging_V1_NotificationKind, _ contact: Caremesh_Identity_V1_ContactPoints?) -> String? {
        guard emailKinds.contains(kind), let contact, contact.active, contact.email.contains("@") else { return nil }
        return alwaysEmailed.contains(kind) || (contact.channels.email && contact.emailVerified) ? contact.email : nil
    }

    /// The email: the notification's own short text (never PHI), and why it came.
    static func email(title: String, body: String) -> (subject: String, text: String) {
        ("CareMesh: \(title)", """
            \(body)

            Open CareMesh to see more.

            You receive this email because of your CareMesh notification settings; security notices about your account are always sent.
            """)
    }

    /// Whether the SMS of `kind` asks for an answer (`YES <code>` / `NO <code>`).
    static func takesReply(_ kind: Caremesh_Messaging_V1_NotificationKind) -> Bool { kind == .sosOffered }

    /// The SMS: the notification's own short text, never PHI; an offer with how to answer it.
    static func smsText(kind: Caremesh_Messaging_V1_NotificationKind, title: String, body: String, data: [String: String],
                        code: String?) -> String {
        guard kind == .sosOffered, let code else { return "CareMesh: \(title). \(body)" }
        let words = { (name: String?) in (name ?? "other").lowercased().replacingOccurrences(of: "_", with: " ") }
        return "CareMesh: SOS near you (\(words(data["emergency_type"])), \(words(data["priority"])) priority). "
            + "Reply YES \(code) to go, or NO \(code) to decline."
    }

    /// A fresh reply code: four digits, not starting with 0.
    static func newCode<G: RandomNumberGenerator>(using generator: inout G) -> String {
        String(Int.random(in: 1_000...9_999, using: &generator))
    }
}

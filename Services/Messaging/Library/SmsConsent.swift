import Foundation

/// A number's SMS consent, read from its ledger of opt-ins and opt-outs (seed 004's
/// `sms_consent`, kept as an append-only history with method and evidence): the latest entry
/// decides. No entry is no consent. An opt-out by any method blocks every send until a later
/// opt-in, and a send exempt from consent is only the confirmation of that opt-out and help
/// answers (carriers require both).
public enum SmsConsent {
    public enum Method: String, Sendable, CaseIterable {
        case registration, verbal, written
        /// START / STOP (and the other keywords) texted by the person.
        case smsReply = "sms_reply"
        case admin
        /// Recorded by the person themselves in the app.
        case app
    }

    public struct Entry: Sendable, Equatable {
        public var optedIn: Bool
        public var method: Method
        public var at: Date

        public init(optedIn: Bool, method: Method, at: Date) {
            self.optedIn = optedIn
            self.method = method
            self.at = at
        }
    }

    /// Why a message goes out.
    public enum Purpose: Sendable, Equatable {
        /// Reminders, announcements, anything the person opted in to.
        case regular
        /// The one confirmation of an opt-out, sent before the number is blocked.
        case optOutConfirmation
        /// The answer to HELP.
        case help
    }

    /// Whether a message for `purpose` may be sent, given the ledger (any order; by time, and
    /// by position among entries of the same instant).
    public static func maySend(_ purpose: Purpose, ledger: [Entry]) -> Bool {
        maySend(purpose, optedIn: current(ledger)?.optedIn)
    }

    /// The same, given only whether the entry in force is an opt-in (nil: no entry).
    public static func maySend(_ purpose: Purpose, optedIn: Bool?) -> Bool {
        switch purpose {
        case .optOutConfirmation, .help: return true
        case .regular: return optedIn ?? false
        }
    }

    /// The entry in force: the latest.
    public static func current(_ ledger: [Entry]) -> Entry? {
        ledger.enumerated().max { ($0.element.at, $0.offset) < ($1.element.at, $1.offset) }?.element
    }
}

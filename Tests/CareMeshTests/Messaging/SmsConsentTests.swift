import Foundation
import MessagingService
import Testing

/// Consent from the ledger: the latest entry decides; only opt-out confirmations and help
/// answers go to a number without consent.
@Suite struct SmsConsentTests {
    static func at(_ s: TimeInterval) -> Date { Date(timeIntervalSince1970: 1_800_000_000 + s) }

    @Test("no entry, an opt-in, an opt-out, an opt-in again; order of the list does not matter")
    func ledger() {
        #expect(!SmsConsent.maySend(.regular, ledger: []))
        let optIn = SmsConsent.Entry(optedIn: true, method: .registration, at: Self.at(0))
        let stop = SmsConsent.Entry(optedIn: false, method: .smsReply, at: Self.at(60))
        let start = SmsConsent.Entry(optedIn: true, method: .smsReply, at: Self.at(120))
        #expect(SmsConsent.maySend(.regular, ledger: [optIn]))
        #expect(!SmsConsent.maySend(.regular, ledger: [optIn, stop]))
        #expect(!SmsConsent.maySend(.regular, ledger: [stop, optIn]))
        #expect(SmsConsent.maySend(.regular, ledger: [start, stop, optIn]))
        #expect(SmsConsent.current([start, stop, optIn]) == start)
        // Two entries at the same instant: the one recorded last.
        let sameTimeOut = SmsConsent.Entry(optedIn: false, method: .admin, at: Self.at(120))
        #expect(!SmsConsent.maySend(.regular, ledger: [optIn, start, sameTimeOut]))
    }

    @Test("an opt-out's confirmation and help answers go out without consent")
    func exempt() {
        let stop = SmsConsent.Entry(optedIn: false, method: .smsReply, at: Self.at(0))
        #expect(SmsConsent.maySend(.optOutConfirmation, ledger: [stop]))
        #expect(SmsConsent.maySend(.help, ledger: []))
        #expect(!SmsConsent.maySend(.regular, ledger: [stop]))
    }
}

import Foundation
@testable import MessagingService
import Testing

/// SMS statuses only move forward, whatever order the provider's callbacks arrive in.
@Suite struct SmsStatusTests {
    @Test("forward only; final statuses stay; cancel only before it went out")
    func forwardOnly() {
        #expect(SmsStatus.scheduled.canMove(to: .pending))
        #expect(SmsStatus.pending.canMove(to: .sent))
        #expect(SmsStatus.pending.canMove(to: .delivered)) // a receipt may come before "sent"
        #expect(SmsStatus.sent.canMove(to: .delivered))
        #expect(SmsStatus.sent.canMove(to: .failed))
        #expect(!SmsStatus.delivered.canMove(to: .sent)) // a late "sent"
        #expect(!SmsStatus.sent.canMove(to: .pending))
        #expect(!SmsStatus.delivered.canMove(to: .failed))
        #expect(!SmsStatus.failed.canMove(to: .delivered))
        #expect(SmsStatus.scheduled.canMove(to: .cancelled))
        #expect(SmsStatus.pending.canMove(to: .cancelled))
        #expect(!SmsStatus.sent.canMove(to: .cancelled))
        for s in SmsStatus.allCases { #expect(!s.canMove(to: s)) }
    }

    /// Applying callbacks in any order ends where the furthest one says.
    @Test("any order of callbacks ends at the furthest status")
    func anyOrder() {
        let callbacks: [SmsStatus] = [.pending, .sent, .delivered]
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1], [2, 0, 1], [1, 0, 2]] {
            var status = SmsStatus.scheduled
            for i in order where status.canMove(to: callbacks[i]) { status = callbacks[i] }
            #expect(status == .delivered, "\(order)")
        }
    }

    @Test("Twilio's and Orange's statuses")
    func providers() {
        #expect(SmsStatus(twilio: "queued") == .pending)
        #expect(SmsStatus(twilio: "sent") == .sent)
        #expect(SmsStatus(twilio: "delivered") == .delivered)
        #expect(SmsStatus(twilio: "undelivered") == .failed)
        #expect(SmsStatus(twilio: "canceled") == .cancelled)
        #expect(SmsStatus(twilio: "bogus") == nil)
        #expect(SmsStatus(orange: "DeliveredToTerminal") == .delivered)
        #expect(SmsStatus(orange: "DeliveryImpossible") == .failed)
        #expect(SmsStatus(orange: "DeliveredToNetwork") == .sent)
        #expect(SmsStatus(orange: "deliveredtoterminal") == nil)
    }
    @Test("a batch of callbacks: in order, forward only, folded into one change per message")
    func batch() {
        let a = UUID(), b = UUID(), unknown = UUID()
        var batch = SmsStatusBatch([
            .init(id: a, status: .pending, correlator: "a", patient: nil, callbackData: nil, provider: nil, providerMessageID: nil),
            .init(id: b, status: .sent, correlator: "b", patient: nil, callbackData: "cb", provider: "twilio", providerMessageID: "SMb"),
        ])
        // a: sent then delivered in the same batch (our id; the first teaches its provider id),
        // then a late "sent" by the provider's id: stale.
        #expect(batch.apply(id: a, providerID: "SMa", provider: "twilio", status: .sent, raw: "sent", errorCode: nil) == .moved(a, from: .pending, to: .sent))
        #expect(batch.apply(id: a, providerID: "SMa", provider: "twilio", status: .delivered, raw: "delivered", errorCode: nil)
            == .moved(a, from: .sent, to: .delivered))
        #expect(batch.apply(id: nil, providerID: "SMa", provider: "twilio", status: .sent, raw: "sent", errorCode: nil) == .stale(a))
        // b, by the provider's id only: fails with the provider's code.
        #expect(batch.apply(id: nil, providerID: "SMb", provider: "twilio", status: .failed, raw: "undelivered", errorCode: "30003")
            == .moved(b, from: .sent, to: .failed))
        #expect(batch.apply(id: nil, providerID: "SMb", provider: "orange", status: .delivered, raw: "x", errorCode: nil) == .unknownMessage)
        #expect(batch.apply(id: unknown, providerID: "SMa", provider: "twilio", status: .sent, raw: "sent", errorCode: nil) == .unknownMessage)
        #expect(batch.apply(id: b, providerID: nil, provider: "twilio", status: nil, raw: "weird", errorCode: nil) == .unknownStatus(b))
        #expect(batch.changed == [a, b])
        #expect(batch.changes[a] == .init(status: .delivered, raw: "delivered", errorCode: nil, provider: "twilio", providerMessageID: "SMa",
                                          sent: true, delivered: true, failed: false, cancelled: false))
        #expect(batch.changes[b] == .init(status: .failed, raw: "undelivered", errorCode: "30003", provider: "twilio", providerMessageID: "SMb",
                                          sent: false, delivered: false, failed: true, cancelled: false))
        #expect(batch.messages[a]?.status == .delivered && batch.messages[b]?.status == .failed)
        // Nothing named, nothing to write.
        let empty = SmsStatusBatch([])
        #expect(empty.changed.isEmpty)
    }
}

import MessagingService
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
}

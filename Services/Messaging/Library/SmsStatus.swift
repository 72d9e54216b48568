/// An SMS's status (seed 004's `sms_messages.status`, with `scheduled` for a send that waits
/// for its time). Statuses only move forward: a provider's late `sent` never overwrites
/// `delivered`, and `delivered`, `failed` and `cancelled` are final.
public enum SmsStatus: String, Sendable, CaseIterable {
    case scheduled
    /// Accepted by CareMesh, queued at or being handed to the provider.
    case pending
    /// The provider handed it to the carrier.
    case sent
    case delivered
    case failed
    /// Withdrawn before it went out.
    case cancelled

    var rank: Int {
        switch self {
        case .scheduled: 0
        case .pending: 1
        case .sent: 2
        case .delivered, .failed, .cancelled: 3
        }
    }

    public var isFinal: Bool { rank == 3 }

    /// Whether a message in `self` may move to `next`: only forward, never out of a final
    /// status, and cancelled only before it went out.
    public func canMove(to next: SmsStatus) -> Bool {
        guard !isFinal, next.rank > rank else { return false }
        return next != .cancelled || rank <= SmsStatus.pending.rank
    }

    /// Twilio's `MessageStatus` (status callbacks and the Messages resource).
    public init?(twilio status: String) {
        switch status.lowercased() {
        case "accepted", "scheduled", "queued", "sending": self = .pending
        case "sent": self = .sent
        case "delivered", "read": self = .delivered
        case "undelivered", "failed": self = .failed
        case "canceled": self = .cancelled
        default: return nil
        }
    }

    /// Orange's `deliveryInfo.deliveryStatus` (delivery receipts). Uncertain and waiting stay
    /// `sent`: only the terminal's receipt is delivery.
    public init?(orange status: String) {
        switch status {
        case "DeliveredToTerminal": self = .delivered
        case "DeliveryImpossible": self = .failed
        case "DeliveredToNetwork", "MessageWaiting", "DeliveryUncertain": self = .sent
        default: return nil
        }
    }
}

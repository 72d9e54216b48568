import Foundation

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

/// One batch of status callbacks applied to the messages they name, in order of arrival: each
/// moves its message forward only (`SmsStatus.canMove`), and what moved is folded into one
/// change per message (its last status; the times of every status it passed), so the batch
/// needs one read and one write however many callbacks name the same message. Pure: the
/// processor loads the messages and writes the changes.
struct SmsStatusBatch {
    struct Message: Equatable {
        var id: UUID
        var status: SmsStatus
        var correlator: String
        var patient: UUID?
        var callbackData: String?
        var provider: String?
        var providerMessageID: String?
    }

    /// A message's change: the fields a status update writes.
    struct Change: Equatable {
        var status: SmsStatus
        /// The provider's own word for the last status applied.
        var raw: String
        var errorCode: String?
        var provider: String
        var providerMessageID: String?
        var sent = false
        var delivered = false
        var failed = false
        var cancelled = false
    }

    /// What became of one callback.
    enum Result: Equatable {
        case unknownMessage
        case unknownStatus(UUID)
        /// Stale or repeated news: nothing moved.
        case stale(UUID)
        case moved(UUID, from: SmsStatus, to: SmsStatus)
    }

    private(set) var messages: [UUID: Message] = [:]
    private var byProvider: [String: UUID] = [:]
    private(set) var changes: [UUID: Change] = [:]
    /// The order in which messages first changed (the write's order).
    private(set) var changed: [UUID] = []

    init(_ messages: [Message]) {
        for m in messages {
            self.messages[m.id] = m
            if let p = m.provider, let pid = m.providerMessageID { byProvider[Self.key(p, pid)] = m.id }
        }
    }

    private static func key(_ provider: String, _ id: String) -> String { provider + "\u{0}" + id }

    /// Applies one callback: by our id when it carries it, else by the provider's id.
    mutating func apply(id: UUID?, providerID: String?, provider: String, status: SmsStatus?, raw: String, errorCode: String?) -> Result {
        let found = id.flatMap { messages[$0] != nil ? $0 : nil }
            ?? (id == nil ? providerID.flatMap { byProvider[Self.key(provider, $0)] } : nil)
        guard let messageID = found, var m = messages[messageID] else { return .unknownMessage }
        guard let status else { return .unknownStatus(messageID) }
        let from = m.status
        guard from.canMove(to: status) else { return .stale(messageID) }
        var c = changes[messageID] ?? Change(status: status, raw: raw, provider: provider)
        if changes[messageID] == nil { changed.append(messageID) }
        c.status = status
        c.raw = raw
        if let errorCode { c.errorCode = errorCode }
        c.provider = m.provider ?? provider
        c.providerMessageID = m.providerMessageID ?? providerID
        c.sent = c.sent || status == .sent || status == .delivered
        c.delivered = c.delivered || status == .delivered
        c.failed = c.failed || status == .failed
        c.cancelled = c.cancelled || status == .cancelled
        changes[messageID] = c
        m.status = status
        m.provider = c.provider
        m.providerMessageID = c.providerMessageID
        messages[messageID] = m
        if let pid = m.providerMessageID { byProvider[Self.key(c.provider, pid)] = messageID }
        return .moved(messageID, from: from, to: status)
    }
}

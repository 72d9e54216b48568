import CareMeshContracts
import Foundation

/// A person's notification settings as routing applies them (`notification_settings`), and
/// what they decide for one notification on one channel. Pure, tested without I/O.
struct PersonSettings: Sendable, Equatable {
    var timeZone: TimeZone
    var quiet: QuietWindow?
    /// "KIND:channel" pairs turned off, e.g. "CHAT_MESSAGE:push".
    var off: Set<String>

    static let defaults = PersonSettings(timeZone: .gmt, quiet: nil, off: [])

    enum Decision: Sendable, Equatable {
        case now
        /// Held until then (the end of quiet hours).
        case at(Date)
        case off

        var goes: Bool { self != .off }
        /// The end of the quiet hours it waits for, if it does.
        var heldUntil: Date? { if case .at(let end) = self { end } else { nil } }
    }

    /// Critical kinds go now, whatever the settings (as Novu's critical workflows); the stream is
    /// never held; otherwise a channel turned off for the kind is off, and quiet hours hold it.
    func decide(_ kind: Caremesh_Messaging_V1_NotificationKind, _ channel: Caremesh_Messaging_V1_DeliveryChannel, now: Date) -> Decision {
        if kind.isCritical || channel == .stream { return .now }
        if off.contains(Self.key(kind, channel)) { return .off }
        if let quiet, let end = quiet.end(ifInside: now, in: timeZone) { return .at(end) }
        return .now
    }

    static func key(_ kind: Caremesh_Messaging_V1_NotificationKind, _ channel: Caremesh_Messaging_V1_DeliveryChannel) -> String {
        "\(kind.storedName ?? "?"):\(channel.storedName ?? "?")"
    }
}

/// Quiet hours: from `start` to `end` on the local wall clock, across midnight when `end` comes
/// first; the clocks' changes are the local day's (`LocalTime.on`).
struct QuietWindow: Sendable, Equatable {
    var start: LocalTime
    var end: LocalTime

    /// When the window `now` falls in ends, or nil when it falls in none.
    func end(ifInside now: Date, in timeZone: TimeZone) -> Date? {
        let today = LocalDate(now, in: timeZone)
        let wraps = (end.hour, end.minute) < (start.hour, start.minute)
        for day in [today.adding(days: -1), today] {
            let from = start.on(day, in: timeZone), to = end.on(wraps ? day.adding(days: 1) : day, in: timeZone)
            if from <= now && now < to { return to }
        }
        return nil
    }
}

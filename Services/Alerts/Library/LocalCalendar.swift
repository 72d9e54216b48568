import Foundation

/// A calendar day with no time zone (a report's date, a PTO day), ordered.
public struct LocalDate: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var year: Int
    public var month: Int
    public var day: Int

    public init(year: Int, month: Int, day: Int) {
        self.year = year
        self.month = month
        self.day = day
    }

    /// "YYYY-MM-DD" (a real date only).
    public init?(_ text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
              let y = Int(parts[0]), let m = Int(parts[1]), let d = Int(parts[2]) else { return nil }
        self.init(year: y, month: m, day: d)
        guard let noon = noonUTC, LocalDate(noon, in: .gmt) == self else { return nil }
    }

    /// The day `instant` falls on in `timeZone`.
    public init(_ instant: Date, in timeZone: TimeZone) {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let c = calendar.dateComponents([.year, .month, .day], from: instant)
        self.init(year: c.year!, month: c.month!, day: c.day!)
    }

    public var description: String { String(format: "%04d-%02d-%02d", year, month, day) }

    public static func < (a: LocalDate, b: LocalDate) -> Bool { (a.year, a.month, a.day) < (b.year, b.month, b.day) }

    /// Noon UTC of this day: a fixed instant to count days from, far from any day boundary.
    var noonUTC: Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = .gmt
        return calendar.date(from: DateComponents(year: year, month: month, day: day, hour: 12))
    }

    public func adding(days: Int) -> LocalDate {
        LocalDate(noonUTC!.addingTimeInterval(Double(days) * 86_400), in: .gmt)
    }

    /// Whole days from `self` to `other` (negative if `other` is earlier).
    public func days(to other: LocalDate) -> Int {
        Int(((other.noonUTC!.timeIntervalSince(noonUTC!)) / 86_400).rounded())
    }

    /// ISO weekday: Monday 1 … Sunday 7.
    public var isoWeekday: Int {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = .gmt
        let w = calendar.component(.weekday, from: noonUTC!) // Sunday 1 … Saturday 7
        return w == 1 ? 7 : w - 1
    }

    public var isWeekday: Bool { isoWeekday <= 5 }

    /// The days from `self` through `last`, in order (empty if `last` is earlier).
    public func through(_ last: LocalDate) -> [LocalDate] {
        let n = days(to: last)
        return n < 0 ? [] : (0...n).map { adding(days: $0) }
    }
}

/// A wall-clock time of day, "HH:MM" (24-hour).
public struct LocalTime: Sendable, Hashable, CustomStringConvertible {
    public var hour: Int
    public var minute: Int

    public init?(hour: Int, minute: Int) {
        guard (0...23).contains(hour), (0...59).contains(minute) else { return nil }
        self.hour = hour
        self.minute = minute
    }

    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count == 2, parts[1].count == 2, let h = Int(parts[0]), let m = Int(parts[1]) else { return nil }
        self.init(hour: h, minute: m)
    }

    public var description: String { String(format: "%02d:%02d", hour, minute) }

    /// This time on `date` in `timeZone` as an instant. A time the clocks skip (spring forward)
    /// is taken as the moment the day reaches it (the first valid minute after the gap); a time
    /// that happens twice (fall back) as its first occurrence.
    public func on(_ date: LocalDate, in timeZone: TimeZone) -> Date {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let midnight = calendar.startOfDay(for: calendar.date(from: DateComponents(year: date.year, month: date.month, day: date.day, hour: 12))!)
        let components = DateComponents(hour: hour, minute: minute)
        return calendar.nextDate(after: midnight.addingTimeInterval(-1), matching: components, matchingPolicy: .nextTime,
                                 repeatedTimePolicy: .first, direction: .forward) ?? midnight
    }
}

/// When a staff member started their day, against their expected show-up time, in their own
/// time zone (correct across daylight-saving changes: the expected time is wall-clock time on
/// the day they logged, wherever the clocks stood).
public enum Lateness {
    /// The local day of `loggedAt` and whole minutes late (0 when on time or early).
    public static func of(loggedAt: Date, expected: LocalTime, timeZone: TimeZone) -> (date: LocalDate, minutesLate: Int) {
        let date = LocalDate(loggedAt, in: timeZone)
        let due = expected.on(date, in: timeZone)
        let late = loggedAt.timeIntervalSince(due)
        return (date, late > 0 ? Int(late / 60) : 0)
    }

    /// The next instant after `now` at which the wall clock in `timeZone` reads `time`.
    public static func next(_ time: LocalTime, after now: Date, in timeZone: TimeZone) -> Date {
        let today = LocalDate(now, in: timeZone)
        let candidate = time.on(today, in: timeZone)
        return candidate > now ? candidate : time.on(today.adding(days: 1), in: timeZone)
    }
}

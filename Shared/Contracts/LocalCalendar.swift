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
              let y = Int(parts[0]), let m = Int(parts[1]), let d = Int(parts[2]), (1...12).contains(m), (1...31).contains(d)
        else { return nil }
        self.init(year: y, month: m, day: d)
        // 30 February comes back as 2 March.
        guard LocalDate(dayNumber: dayNumber) == self else { return nil }
    }

    /// The day `instant` falls on in `timeZone`.
    public init(_ instant: Date, in timeZone: TimeZone) {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let c = calendar.dateComponents([.year, .month, .day], from: instant)
        self.init(year: c.year!, month: c.month!, day: c.day!)
    }

    /// The day `n` days after 1970-01-01 (proleptic Gregorian; Howard Hinnant's
    /// civil_from_days): plain integer arithmetic, no calendar or time zone involved.
    public init(dayNumber n: Int) {
        let z = n + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let month = mp < 10 ? mp + 3 : mp - 9
        self.init(year: yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month: month, day: dayOfYear - (153 * mp + 2) / 5 + 1)
    }

    /// Days since 1970-01-01 (days_from_civil, the inverse of `init(dayNumber:)`).
    public var dayNumber: Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * ((month + 9) % 12) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    public var description: String { String(format: "%04d-%02d-%02d", year, month, day) }

    public static func < (a: LocalDate, b: LocalDate) -> Bool { (a.year, a.month, a.day) < (b.year, b.month, b.day) }

    public func adding(days: Int) -> LocalDate { LocalDate(dayNumber: dayNumber + days) }

    /// Whole days from `self` to `other` (negative if `other` is earlier).
    public func days(to other: LocalDate) -> Int { other.dayNumber - dayNumber }

    /// ISO weekday: Monday 1 … Sunday 7 (1970-01-01 was a Thursday).
    public var isoWeekday: Int { ((dayNumber + 3) % 7 + 7) % 7 + 1 }

    public var isWeekday: Bool { isoWeekday <= 5 }

    /// The days from `self` through `last`, in order (empty if `last` is earlier).
    public func through(_ last: LocalDate) -> [LocalDate] {
        let first = dayNumber
        return first > last.dayNumber ? [] : (first...last.dayNumber).map(LocalDate.init(dayNumber:))
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

import Foundation

extension UUID {
    /// A time-ordered UUID (RFC 9562 version 7): the Unix time in milliseconds in the first 48
    /// bits, then 74 random bits. Rows keyed by it are inserted at the right edge of their
    /// primary key's B-tree, as a sequence's are, instead of on a random page of a large index
    /// (which a version-4 UUID costs at every insert once the index outgrows the cache). It
    /// reveals when it was made, so use it only where the creation time is no secret.
    public static func timeOrdered(now: Date = Date()) -> UUID {
        var g = SystemRandomNumberGenerator()
        return timeOrdered(now, g.next(), g.next())
    }

    /// RFC 9562's Nil UUID (all bits zero): "none" in the arrays of uuid sent to PostgreSQL,
    /// which cannot hold NULL there (the statement turns it back into NULL).
    public static let zero = UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))

    /// The least time-ordered id of `date`'s millisecond (its random bits zero): ids made then
    /// or later are at least this, so they are a range of an index on them.
    public static func timeOrderedFloor(_ date: Date) -> UUID { timeOrdered(date, 0, 0) }

    private static func timeOrdered(_ now: Date, _ a: UInt64, _ b: UInt64) -> UUID {
        let ms = UInt64(max(0, now.timeIntervalSince1970 * 1_000))
        func byte(_ v: UInt64, _ shift: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: v >> shift) }
        return UUID(uuid: (
            byte(ms, 40), byte(ms, 32), byte(ms, 24), byte(ms, 16), byte(ms, 8), byte(ms, 0),
            0x70 | (byte(a, 8) & 0x0F), byte(a, 0),  // version 7, rand_a
            0x80 | (byte(b, 56) & 0x3F), byte(b, 48), byte(b, 40), byte(b, 32), byte(b, 24), byte(b, 16), byte(b, 8), byte(b, 0)  // variant 10, rand_b
        ))
    }
}

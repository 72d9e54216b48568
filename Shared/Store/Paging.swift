import CareMeshRPC
import Foundation
import PostgresNIO

/// Keyset pagination for list methods, newest first by `(at, id)`: a page token names the
/// last row of the previous page, so pages stay right while rows are added (no OFFSET).
///
/// ```swift
/// let page = Page(size: r.pageSize, token: r.pageToken, into: &violations)
/// SELECT …, \(unescaped: Page.micros("created_at")) FROM …
///   WHERE … AND \(after: page, time: "created_at", id: "id")
///   ORDER BY created_at DESC, id DESC LIMIT \(page.limit)
/// ```
/// and `page.collect(rows.decode(…)) { … }` for the page's items and the next token.
public struct Page: Sendable {
    /// Rows per page.
    public let size: Int
    /// The previous page's last row (microseconds since the epoch, and id), nil on the first page.
    public let afterMicros: Int64?
    public let afterID: UUID?

    public static let defaultSize = 50
    public static let maxSize = 200

    /// From a request's `page_size` (0: the default; at most `maxSize`) and `page_token`; a
    /// token this type did not make is a violation of `page_token` (and the first page).
    public init(size: UInt32, token: String, into violations: inout FieldViolations) {
        self.size = size == 0 ? Self.defaultSize : min(Int(size), Self.maxSize)
        let parts = token.isEmpty ? [] : Base64URL.decode(token).map { String(decoding: $0, as: UTF8.self).split(separator: ":") } ?? []
        if parts.count == 3, parts[0] == "p1", let micros = Int64(parts[1]), let id = UUID(uuidString: String(parts[2])) {
            afterMicros = micros
            afterID = id
        } else {
            afterMicros = nil
            afterID = nil
            violations.check(token.isEmpty, "page_token", "is not a token this method returned")
        }
    }

    /// The same, for a method whose only checked fields are the page's: throws
    /// `INVALID_ARGUMENT` naming `page_token`.
    public init(size: UInt32, token: String) throws(RPCError) {
        var v = FieldViolations()
        self.init(size: size, token: token, into: &v)
        try v.throwIfAny()
    }

    /// One more than the page, so that a full page knows whether another follows.
    public var limit: Int { size + 1 }

    /// The page's rows (at most `size`) and the next page's token ("" when this is the last),
    /// from up to `limit` rows with their keys.
    private func next<Row>(_ rows: [(row: Row, micros: Int64, id: UUID)]) -> (rows: [Row], token: String) {
        guard rows.count > size, let last = rows.prefix(size).last else { return (rows.map(\.row), "") }
        let token = Base64URL.encode(Data("p1:\(last.micros):\(last.id.uuidString.lowercased())".utf8))
        return (rows.prefix(size).map(\.row), token)
    }

    /// The page from decoded rows (`limit` of them at most), each made into its item and key.
    public func collect<S: AsyncSequence, Row>(_ decoded: S, _ item: (S.Element) throws -> (row: Row, micros: Int64, id: UUID))
        async throws -> (rows: [Row], token: String)
    {
        var found: [(row: Row, micros: Int64, id: UUID)] = []
        for try await element in decoded { found.append(try item(element)) }
        return next(found)
    }

    /// The page from rows already read (`limit` of them at most), with their keys.
    public func collect<Row>(_ rows: [(row: Row, micros: Int64, id: UUID)]) -> (rows: [Row], token: String) { next(rows) }

    /// SQL for a `timestamptz` column as whole microseconds since the epoch (exact).
    public static func micros(_ column: String) -> String { "(extract(epoch FROM \(column)) * 1000000)::int8" }
}

extension PostgresQuery.StringInterpolation {
    /// `(time, id)` before the page's key, values bound (`true` on the first page).
    public mutating func appendInterpolation(after page: Page, time: String, id: String) {
        guard let micros = page.afterMicros, let after = page.afterID else { return appendLiteral("true") }
        appendLiteral("(\(time), \(id)) < (timestamptz 'epoch' + ")
        appendInterpolation(micros)
        appendLiteral(" * interval '1 microsecond', ")
        appendInterpolation(after)
        appendLiteral(")")
    }
}

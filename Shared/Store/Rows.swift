import Foundation
import Logging
import SwiftProtobuf
import PostgresNIO

extension PostgresRowSequence {
    /// Whether the statement returned any row (reads them all).
    public func hasRows() async throws -> Bool {
        var any = false
        for try await _ in self { any = true }
        return any
    }

    /// The first row's single column (nil without rows; reads them all).
    public func first<T: PostgresDecodable & Sendable>(_ type: T.Type) async throws -> T? {
        var value: T?
        for try await v in decode(T.self) where value == nil { value = v }
        return value
    }
}

extension PostgresTransactionError {
    /// What went wrong: the transaction body's own error first.
    var cause: any Error { closureError ?? beginError ?? commitError ?? rollbackError ?? self }
}

extension PostgresConnection {
    /// Waits for the transaction-scoped advisory lock `name` (released at commit or rollback):
    /// serializes what one row lock cannot, e.g. "one at a time per person".
    public func lockForTransaction(_ name: String, logger: Logger) async throws {
        try await run(Prepared<AdvisoryTransactionLock>(advisoryLockKey(name)), logger: logger)
    }
}

/// An advisory-lock key for `name`: FNV-1a, the same in every process and build.
public func advisoryLockKey(_ name: String) -> Int64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return Int64(bitPattern: h)
}

extension UUID {
    /// The id as PostgreSQL and the API print it (lower case).
    public var text: String { uuidString.lowercased() }
}

extension Google_Protobuf_Timestamp {
    /// From seconds since the epoch, as `extract(epoch FROM column)::float8` reads a
    /// `timestamptz` (microsecond precision survives the double).
    public init(epochSeconds: Double) {
        self.init(date: Date(timeIntervalSince1970: epochSeconds))
    }
}

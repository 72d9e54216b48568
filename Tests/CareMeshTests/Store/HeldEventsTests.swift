import CareMeshContracts
import CareMeshStore
import CareMeshTesting
import Foundation
import PostgresNIO
import Testing

/// `HeldEvents`: the events a transaction appends while it works are written at its end, so the
/// outbox's ordering lock does not make other transactions wait for that work.
@Suite struct HeldEventsTests {
    let logger = TestDatabase.logger

    func event(_ text: String) -> Caremesh_Health_V1_HealthCheckRequest {
        var m = Caremesh_Health_V1_HealthCheckRequest()
        m.service = text
        return m
    }

    @Test("held events are appended last, in order; another transaction appends and commits meanwhile without waiting")
    func heldUntilTheEnd() async throws {
        let db = try await TestDatabase.fresh("held_events")
        let url = db.url("alerts")
        try await Migrator.forService("alerts", own: [], logger: logger).up(url)
        let logger = self.logger
        @Sendable func count(_ c: PostgresConnection) async throws -> Int64 {
            try await c.query("SELECT count(*) FROM outbox", logger: logger).first(Int64.self) ?? -1
        }
        try await Store.withSingleConnection(url, logger: logger) { a in
            try await Store.withSingleConnection(url, logger: logger) { b in
                // Were `a` holding the ordering lock, `b` would fail here instead of waiting for ever.
                try await b.query("SET lock_timeout = '3s'", logger: logger)
                try await a.query("BEGIN", logger: logger)
                let held = try await HeldEvents.holding(on: a) {
                    try await Outbox.append(event("held-1"), key: "k", schema: "alerts", on: a, logger: logger)
                    // Another connection's append, inside too, is written at once.
                    try await b.query("BEGIN", logger: logger)
                    try await Outbox.append(event("other"), key: "k", schema: "alerts", on: b, logger: logger)
                    try await b.query("COMMIT", logger: logger)
                    try await Outbox.append(event("held-2"), key: "k", schema: "alerts", on: a, logger: logger)
                    try await Outbox.append(event("held-3"), key: "k", schema: "alerts", on: a, logger: logger)
                }
                #expect(!held.isEmpty)
                #expect(try await count(a) == 1)  // only b's, committed
                try await held.append(on: a, logger: logger)
                #expect(held.isEmpty)
                try await a.query("COMMIT", logger: logger)
            }
        }
        let rows = try await Store.withSingleConnection(url, logger: logger) { c in
            try await c.query("SELECT payload FROM outbox ORDER BY seq", logger: logger).collect()
                .map { try Caremesh_Health_V1_HealthCheckRequest(serializedBytes: Array(buffer: try $0.decode(ByteBuffer.self))).service }
        }
        #expect(rows == ["other", "held-1", "held-2", "held-3"])
    }
}

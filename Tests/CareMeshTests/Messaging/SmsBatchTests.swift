import CareMeshRPC
import CareMeshStore
import CareMeshTesting
import Foundation
@testable import MessagingService
import PostgresNIO
import Testing

/// SendSms's group commit: `record_sms_batch` records many sends in one statement as
/// `record_sms` records one, and a batch that fails falls back to one send at a time.
@Suite struct SmsBatchTests {
    let logger = TestDatabase.logger

    func withStore(_ body: @Sendable (Store, DatabaseURL) async throws -> Void) async throws {
        let db = try await TestDatabase.fresh("sms_batch")
        let url = db.url("messaging")
        try await Migrator.forService("messaging", own: MessagingService.migrations, logger: logger).up(url)
        let store = try await Store.connect(url: url, logger: logger)
        try await TestStack.withServices([store]) { try await body(store, url) }
    }

    static func send(_ correlator: String, to: String, text: String = "Your results are ready.", type: String = "custom",
                     patient: UUID? = nil, language: String? = nil, scheduledAt: Date? = nil, callbackData: String? = nil)
        -> SmsDesk.Rendered
    {
        let plan = SmsDesk.SendPlan(correlator: correlator, to: to, patient: patient, type: type, template: nil, language: language,
                                    variables: [:], text: text, scheduledAt: scheduledAt, callbackData: callbackData)
        return SmsDesk.Rendered(plan, body: text, language: language, sender: "+15005550006", actor: "test")
    }

    func consent(_ phone: String, _ given: Bool, _ store: Store) async throws {
        _ = try await store.withConnection { c in
            try await c.query("""
                INSERT INTO sms_consent (phone_number, consent_given, consent_method, evidence, created_by)
                VALUES (\(phone), \(given), 'written', 'test', 'test')
                """, logger: self.logger)
        }
    }

    func count(_ store: Store, _ query: PostgresQuery) async throws -> Int64 {
        try await store.withConnection { c in
            var n: Int64 = -1
            for try await row in try await c.query(query, logger: self.logger) { n = try row.decode(Int64.self) }
            return n
        }
    }

    @Test("a batch gives each send record_sms's outcome: created, refused without consent, a correlator's earlier message, a repeat within the batch")
    func outcomes() async throws {
        try await withStore { store, _ in
            let yes = "+33612345001", no = "+33612345002", old = "+33612345003"
            try await consent(yes, true, store)
            try await consent(old, true, store)
            try await consent(no, true, store)
            try await consent(no, false, store)  // opted out since
            let earlier = try await store.withConnection { c in
                try await SmsDesk.recordOne(Self.send("earlier-1", to: old), on: c, logger: self.logger)
            }
            #expect(earlier.outcome == "created")

            let patient = UUID()
            let at = Date().addingTimeInterval(3_600)
            let batch = [
                Self.send("a", to: yes, patient: patient, language: "fr", scheduledAt: at, callbackData: "appointment:1"),
                Self.send("b", to: no),
                Self.send("earlier-1", to: old),
                Self.send("a", to: yes, patient: patient, language: "fr", scheduledAt: at, callbackData: "appointment:1"),
                Self.send("stop-ack", to: no, text: "You are unsubscribed.", type: "opt_out_confirmation"),
                Self.send("f", to: yes, text: "Ça va ? 🙂"),
            ]
            let recorded = try await store.withConnection { c in try await SmsDesk.recordBatch(batch, on: c, logger: self.logger) }
            #expect(recorded.map(\.outcome) == ["created", "no_consent", "existing", "existing", "created", "created"])
            let a = try #require(recorded[0].message)
            #expect(a.status == .scheduled)
            #expect(a.patientID == patient.text)
            #expect(a.language == "fr")
            #expect(a.callbackData == "appointment:1")
            #expect(abs(a.scheduledAt.date.timeIntervalSince(at)) < 0.001)
            #expect(recorded[1].message == nil)
            #expect(recorded[2].message?.id == earlier.message?.id)
            #expect(recorded[3].message?.id == a.id)
            #expect(recorded[4].message?.messageType == .optOutConfirmation)
            let f = try #require(recorded[5].message)
            #expect(f.status == .pending)
            #expect(f.patientID.isEmpty && f.language.isEmpty && f.callbackData.isEmpty && !f.hasScheduledAt)
            #expect(f.encoding == .ucs2)
            #expect(f.segments == 1)
            // Ids are time-ordered (version 7), their first 48 bits the creation's Unix milliseconds.
            for m in [a, f] {
                let id = try #require(UUID(uuidString: m.id)).uuid
                #expect(id.6 >> 4 == 7 && id.8 >> 6 == 2)
                let ms = [id.0, id.1, id.2, id.3, id.4, id.5].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                #expect(abs(Double(ms) / 1_000 - m.createdAt.date.timeIntervalSince1970) < 1)
            }

            // As the callers are answered: the repeat is the first send, not created again.
            let repeated = try SmsDesk.answer(recorded[3], for: batch[3].plan)
            #expect(!repeated.created && repeated.message.id == a.id)
            #expect(try SmsDesk.answer(recorded[0], for: batch[0].plan).created)
            #expect(await statusCode { _ = try SmsDesk.answer(recorded[1], for: batch[1].plan) } == .failedPrecondition)
            // The correlator of a batch's send again with another text: ALREADY_EXISTS.
            let other = Self.send("a", to: yes, text: "Something else")
            let again = try await store.withConnection { c in try await SmsDesk.recordBatch([other], on: c, logger: self.logger) }
            #expect(await statusCode { _ = try SmsDesk.answer(again[0], for: other.plan) } == .alreadyExists)

            #expect(try await count(store, "SELECT count(*) FROM sms_messages") == 4)
            #expect(try await count(store, "SELECT count(*) FROM sms_messages WHERE client_correlator = 'b'") == 0)
        }
    }

    @Test("a batch that fails is recorded one send at a time: only the send that cannot be recorded fails")
    func fallback() async throws {
        try await withStore { store, _ in
            let yes = "+33612345011"
            try await consent(yes, true, store)
            // Not a language code: the table's CHECK refuses it (the RPC's own checks would first).
            let batch = [Self.send("g1", to: yes), Self.send("bad", to: yes, language: "french"), Self.send("g2", to: yes)]
            let results = try await SmsDesk.recordAll(batch, store: store, logger: logger)
            #expect(results.count == 3)
            #expect((try? results[0].get())?.outcome == "created")
            #expect((try? results[1].get()) == nil)
            #expect((try? results[2].get())?.outcome == "created")
            #expect(try await count(store, "SELECT count(*) FROM sms_messages") == 2)
            // Alone, a failing send fails its caller.
            let alone = try await SmsDesk.recordAll([Self.send("bad2", to: yes, language: "french")], store: store, logger: logger)
            #expect((try? alone[0].get()) == nil)
        }
    }
}

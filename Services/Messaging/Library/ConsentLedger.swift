import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// The SMS consent ledger: opt-ins and opt-outs recorded with method and evidence, never
/// changed (the table refuses UPDATE and DELETE). A change holds the number's consent lock
/// exclusively, so it is ordered against every send of that number.
final class ConsentLedger: Sendable {
    let store: Store
    let outbox: Outbox
    let logger: Logger

    init(store: Store, outbox: Outbox, logger: Logger) {
        self.store = store
        self.outbox = outbox
        self.logger = logger
    }

    static let methods: [Caremesh_Messaging_V1_ConsentMethod: SmsConsent.Method] = [
        .registration: .registration, .verbal: .verbal, .written: .written, .smsReply: .smsReply, .admin: .admin, .app: .app,
    ]

    static let columns = """
        id, phone_number, patient_id, consent_given, consent_method, evidence, created_by, extract(epoch FROM created_at)::float8
        """

    static func entry(_ row: PostgresRandomAccessRow) throws -> Caremesh_Messaging_V1_ConsentEntry {
        var e = Caremesh_Messaging_V1_ConsentEntry()
        e.id = try row[0].decode(UUID.self).text
        e.phone = try row[1].decode(String.self)
        e.patientID = try row[2].decode(UUID?.self)?.text ?? ""
        e.optedIn = try row[3].decode(Bool.self)
        e.method = methods.key(for: SmsConsent.Method(rawValue: try row[4].decode(String.self)) ?? .admin) ?? .unspecified
        e.evidence = try row[5].decode(String.self)
        e.recordedBy = try row[6].decode(String.self)
        e.at = Google_Protobuf_Timestamp(epochSeconds: try row[7].decode(Double.self))
        return e
    }

    /// Appends an entry in the caller's transaction, and its `SmsConsentChanged` to `events`.
    static func append(phone: String, patient: UUID?, optedIn: Bool, method: SmsConsent.Method, evidence: String, by actor: String,
                       events: inout PendingEvents, on c: PostgresConnection, logger: Logger) async throws
        -> Caremesh_Messaging_V1_ConsentEntry
    {
        try await c.query("SELECT pg_advisory_xact_lock(\(SmsDesk.consentLockKey(phone)))", logger: logger)
        var saved: Caremesh_Messaging_V1_ConsentEntry?
        for try await row in try await c.query("""
            INSERT INTO sms_consent (patient_id, phone_number, consent_given, consent_method, evidence, created_by)
            VALUES (\(patient), \(phone), \(optedIn), \(method.rawValue), \(evidence), \(actor))
            RETURNING \(unescaped: columns)
            """, logger: logger) {
            saved = try entry(row.makeRandomAccess())
        }
        guard let saved else { throw RPCError(.internal, "the insert returned no row") }
        // Ids only: the number is PHI.
        var changed = Caremesh_Messaging_V1_SmsConsentChanged()
        changed.entryID = saved.id
        changed.patientID = saved.patientID
        changed.optedIn = saved.optedIn
        changed.method = saved.method
        try events.add(changed, key: saved.id)
        return saved
    }

    func record(_ r: Caremesh_Messaging_V1_RecordSmsConsentRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_RecordSmsConsentResponse
    {
        let caller = try context.requireRole(SmsDesk.senders)
        var v = FieldViolations()
        v.phone(r.phone, "phone")
        let patient = v.optionalUUID(r.patientID, "patient_id")
        let method = Self.methods[r.method]
        v.check(method != nil, "method", "must be REGISTRATION, VERBAL, WRITTEN, SMS_REPLY, ADMIN or APP")
        v.check(r.evidence.count <= 500, "evidence", "must be at most 500 characters")
        try v.throwIfAny()
        return try await store.withTransaction { c in
            var response = Caremesh_Messaging_V1_RecordSmsConsentResponse()
            var events = PendingEvents()
            response.entry = try await Self.append(phone: r.phone, patient: patient, optedIn: r.optedIn, method: method!,
                                                   evidence: r.evidence, by: caller.subject, events: &events, on: c, logger: self.logger)
            try await self.outbox.append(events, on: c)
            return response
        }
    }

    func get(_ r: Caremesh_Messaging_V1_GetSmsConsentRequest, _ context: RPCContext) async throws -> Caremesh_Messaging_V1_GetSmsConsentResponse {
        _ = try context.requireRole(SmsDesk.senders)
        var v = FieldViolations()
        v.phone(r.phone, "phone")
        try v.throwIfAny()
        return try await store.withConnection { c in
            var response = Caremesh_Messaging_V1_GetSmsConsentResponse()
            for try await row in try await c.query("""
                SELECT \(unescaped: Self.columns) FROM sms_consent WHERE phone_number = \(r.phone) ORDER BY seq DESC LIMIT 200
                """, logger: self.logger) {
                response.history.append(try Self.entry(row.makeRandomAccess()))
            }
            if let current = response.history.first {
                response.current = current
                response.consentGiven = current.optedIn
            }
            return response
        }
    }
}

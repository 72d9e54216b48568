import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

typealias SmsMessageProto = Caremesh_Messaging_V1_SmsMessage
typealias SmsType = Caremesh_Messaging_V1_SmsMessageType

/// SMS as callers see it: send (from a template or text, consent checked in the transaction
/// that records the send), read, list and cancel; the consent ledger; templates. `SmsSender`
/// hands the recorded messages to the providers.
final class SmsDesk: Sendable {
    let store: Store
    let configuration: MessagingConfiguration
    let sender: SmsSender
    let logger: Logger

    /// Who sends and reads SMS and records consent: care staff and services.
    static let senders: Set<String> = ["admin", "coordinator", "professional", "service"]
    static let admins: Set<String> = ["admin"]

    /// SendSms's writes: the calls that arrive while one batch is written go together in the
    /// next (one statement and one commit for all of them; `record_sms_batch`). At most the
    /// worker's capacity waits. A call whose deadline passes while its batch is written is
    /// answered DEADLINE_EXCEEDED though its send may be recorded (and go out), as with any
    /// call that times out: its `client_correlator` makes the retry safe.
    let sends: GroupCommit<Rendered, Result<Recorded, any Error>>

    init(store: Store, configuration: MessagingConfiguration, sender: SmsSender, logger: Logger) {
        self.store = store
        self.configuration = configuration
        self.sender = sender
        self.logger = logger
        sends = GroupCommit(maxBatch: 128) { [store, logger] batch in try await Self.recordAll(batch, store: store, logger: logger) }
    }

    static let types: [SmsType: String] = [
        .sevenDayReminder: "7_day_reminder", .oneDayReminder: "1_day_reminder", .overdueReminder: "overdue_reminder",
        .custom: "custom", .announcement: "announcement", .optOutConfirmation: "opt_out_confirmation",
        .optInConfirmation: "opt_in_confirmation", .help: "help",
    ]
    /// The message types that are templates (their stored names are the template kinds').
    static let templateTypes: [SmsType: SmsTemplate.Kind] = types.compactMapValues(SmsTemplate.Kind.init(rawValue:))
    static let statuses: [Caremesh_Messaging_V1_SmsStatus: SmsStatus] = [
        .scheduled: .scheduled, .pending: .pending, .sent: .sent, .delivered: .delivered, .failed: .failed, .cancelled: .cancelled,
    ]

    /// The message types sent only with consent.
    static func purpose(ofType type: String) -> SmsConsent.Purpose {
        switch type {
        case "opt_out_confirmation": .optOutConfirmation
        case "help": .help
        default: .regular
        }
    }

    // MARK: - Rows

    static let columns = """
        id, client_correlator, phone_number, patient_id, message_type, message_content, language_code, encoding, segments,
        status, delivery_status, delivery_description, provider, provider_message_id, sender_address,
        extract(epoch FROM scheduled_at)::float8, extract(epoch FROM sent_at)::float8, extract(epoch FROM delivered_at)::float8,
        extract(epoch FROM failed_at)::float8, retry_count, error_message, callback_data,
        extract(epoch FROM created_at)::float8, extract(epoch FROM updated_at)::float8
        """

    static func message(_ row: PostgresRandomAccessRow) throws -> SmsMessageProto {
        func time(_ i: Int) throws -> Google_Protobuf_Timestamp? {
            try row[i].decode(Double?.self).map(Google_Protobuf_Timestamp.init(epochSeconds:))
        }
        var m = SmsMessageProto()
        m.id = try row[0].decode(UUID.self).text
        m.clientCorrelator = try row[1].decode(String.self)
        m.to = try row[2].decode(String.self)
        m.patientID = try row[3].decode(UUID?.self)?.text ?? ""
        m.messageType = types.key(for: try row[4].decode(String.self)) ?? .unspecified
        m.body = try row[5].decode(String.self)
        m.language = try row[6].decode(String?.self) ?? ""
        m.encoding = SmsSegments.Encoding.proto(stored: try row[7].decode(String.self))
        m.segments = UInt32(try row[8].decode(Int32.self))
        m.status = statuses.key(for: SmsStatus(rawValue: try row[9].decode(String.self)) ?? .pending) ?? .unspecified
        m.deliveryStatus = try row[10].decode(String?.self) ?? ""
        m.deliveryDescription = try row[11].decode(String?.self) ?? ""
        m.provider = try row[12].decode(String?.self) ?? ""
        m.providerMessageID = try row[13].decode(String?.self) ?? ""
        m.senderAddress = try row[14].decode(String.self)
        if let t = try time(15) { m.scheduledAt = t }
        if let t = try time(16) { m.sentAt = t }
        if let t = try time(17) { m.deliveredAt = t }
        if let t = try time(18) { m.failedAt = t }
        m.retryCount = UInt32(try row[19].decode(Int32.self))
        m.errorMessage = try row[20].decode(String?.self) ?? ""
        m.callbackData = try row[21].decode(String?.self) ?? ""
        m.createdAt = try time(22)!
        m.updatedAt = try time(23)!
        return m
    }

    static func one(_ c: PostgresConnection, _ query: PostgresQuery, logger: Logger) async throws -> SmsMessageProto? {
        var out: SmsMessageProto?
        for try await row in try await c.query(query, logger: logger) { out = try message(row.makeRandomAccess()) }
        return out
    }

    // MARK: - Send

    /// What a valid send request asks for, before its text is known.
    struct SendPlan: Sendable {
        var correlator: String
        var to: String
        var patient: UUID?
        var type: String
        var template: SmsTemplate.Kind?
        var language: String?
        var variables: [String: String]
        var text: String
        var scheduledAt: Date?
        var callbackData: String?
    }

    static func plan(_ r: Caremesh_Messaging_V1_SendSmsRequest, now: Date = Date()) throws(RPCError) -> SendPlan {
        var v = FieldViolations()
        v.phone(r.to, "to")
        let patient = v.optionalUUID(r.patientID, "patient_id")
        v.check(r.clientCorrelator.count <= 100 && r.clientCorrelator.allSatisfy { $0.isASCII && !$0.isWhitespace && !$0.isNewline },
                "client_correlator", "must be at most 100 printable ASCII characters without spaces")
        let template = templateTypes[r.templateType]
        var type = "custom"
        if r.templateType != .unspecified {
            v.check(template != nil, "template_type", "must be SEVEN_DAY_REMINDER, ONE_DAY_REMINDER or OVERDUE_REMINDER")
            v.check(r.text.isEmpty, "text", "must be empty when a template is named")
            type = types[r.templateType] ?? "custom"
        } else {
            v.check(!r.text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "text", "is required without a template_type")
            v.check(r.text.count <= 1_600, "text", "must be at most 1600 characters")
            v.check(r.variables.isEmpty, "variables", "are only for a template")
            switch r.messageType {
            case .unspecified, .custom: type = "custom"
            case .announcement: type = "announcement"
            default: v.add("message_type", "must be CUSTOM or ANNOUNCEMENT for free text")
            }
        }
        v.language(r.language, "language")
        v.check(r.callbackData.count <= 200, "callback_data", "must be at most 200 characters")
        var scheduledAt: Date?
        if r.hasScheduledAt {
            let at = r.scheduledAt.date
            v.check((0..<1_000_000_000).contains(r.scheduledAt.nanos) && at < now.addingTimeInterval(366 * 86_400), "scheduled_at", "must be a valid time within a year")
            if at > now { scheduledAt = at }
        }
        try v.throwIfAny()
        return SendPlan(correlator: r.clientCorrelator.isEmpty ? "sms_" + UUID().uuidString.lowercased() : r.clientCorrelator,
                        to: r.to, patient: patient, type: type, template: template,
                        language: r.language.isEmpty ? nil : r.language, variables: r.variables, text: r.text,
                        scheduledAt: scheduledAt, callbackData: r.callbackData.isEmpty ? nil : r.callbackData)
    }

    /// A send with its text, ready to record.
    struct Rendered: Sendable {
        var plan: SendPlan
        var body: String
        var language: String?
        var encoding: String
        var segments: Int32
        var sender: String
        var actor: String

        init(_ plan: SendPlan, body: String, language: String?, sender: String, actor: String) {
            let counted = SmsSegments(body)
            (self.plan, self.body, self.language, self.sender, self.actor) = (plan, body, language, sender, actor)
            (encoding, segments) = (counted.encoding.rawValue, Int32(counted.segments))
        }

        var needsConsent: Bool { !SmsConsent.maySend(SmsDesk.purpose(ofType: plan.type), optedIn: nil) }
        var lockKey: Int64 { SmsDesk.consentLockKey(plan.to) }
    }

    /// What recording one send came to: `record_sms`'s outcome ('created', 'existing',
    /// 'no_consent', 'raced') and the message (created or earlier).
    struct Recorded: Sendable {
        var outcome: String
        var message: SmsMessageProto?
    }

    func send(_ r: Caremesh_Messaging_V1_SendSmsRequest, _ context: RPCContext) async throws -> Caremesh_Messaging_V1_SendSmsResponse {
        let caller = try context.requireRole(Self.senders)
        let plan = try Self.plan(r)
        // A template is read on a connection of its own; a text needs none.
        let rendering = plan.template == nil
            ? .ready(plainText(plan, by: caller.subject))
            : try await store.withConnection { c in try await self.render(plan, by: caller.subject, on: c) }
        let response: Caremesh_Messaging_V1_SendSmsResponse
        switch rendering {
        case .answered(let earlier): response = earlier
        case .ready(let send): response = try Self.answer(try await sends.submit(send).get(), for: plan)
        }
        if response.created, response.message.status == .pending { sender.wake() }
        return response
    }

    /// Records a send (in the caller's transaction, if any): the text rendered from its
    /// template, then one call of `record_sms`, which reads the number's consent under a shared
    /// lock (a consent change holds it exclusively) and inserts the row. The same correlator
    /// again returns the first message (ALREADY_EXISTS if it was for another number or text).
    func record(_ plan: SendPlan, by actor: String, on c: PostgresConnection) async throws -> Caremesh_Messaging_V1_SendSmsResponse {
        switch try await render(plan, by: actor, on: c) {
        case .answered(let earlier): return earlier
        case .ready(let send): return try Self.answer(try await Self.recordOne(send, on: c, logger: logger), for: plan)
        }
    }

    enum Rendering {
        case ready(Rendered)
        /// A repeat answered with its earlier message (its template since gone or broken).
        case answered(Caremesh_Messaging_V1_SendSmsResponse)
    }

    /// The send's text: its own, or its template's (the language's, else English) with the
    /// variables filled in.
    func render(_ plan: SendPlan, by actor: String, on c: PostgresConnection) async throws -> Rendering {
        guard let kind = plan.template else { return .ready(plainText(plan, by: actor)) }
        do {
            guard let template = try await Templates.find(kind, language: plan.language ?? "en", on: c, logger: logger) else {
                throw RPCError(.failedPrecondition, "no active template of type \(kind.rawValue)")
            }
            let body: String
            do { body = try template.render(plan.variables) } catch {
                throw RPCError.invalidArgument(field: "variables", "missing: \(error.names.joined(separator: ", "))")
            }
            return .ready(Rendered(plan, body: body, language: template.language, sender: configuration.defaultSender, actor: actor))
        } catch let error as RPCError {
            // A repeat is answered with its message, though the template changed since.
            guard let earlier = try await Self.one(c, "SELECT \(unescaped: Self.columns) FROM sms_messages WHERE client_correlator = \(plan.correlator)",
                                                   logger: logger) else { throw error }
            var response = Caremesh_Messaging_V1_SendSmsResponse()
            response.message = try Self.same(earlier, plan)
            return .answered(response)
        }
    }

    /// A send of its own text.
    func plainText(_ plan: SendPlan, by actor: String) -> Rendered {
        Rendered(plan, body: plan.text, language: nil, sender: configuration.defaultSender, actor: actor)
    }

    /// The answer to a send from what recording it came to.
    static func answer(_ recorded: Recorded, for plan: SendPlan) throws -> Caremesh_Messaging_V1_SendSmsResponse {
        var response = Caremesh_Messaging_V1_SendSmsResponse()
        switch (recorded.outcome, recorded.message) {
        case ("created", let message?):
            response.message = message
            response.created = true
        case ("existing", let earlier?):
            response.message = try same(earlier, plan)
        case ("no_consent", _):
            throw RPCError(.failedPrecondition, "the number has not consented to SMS (or opted out)",
                           details: [RPCError.fieldDetail("to", "has no SMS consent"), RPCError.detail(reason: "SMS_NO_CONSENT", domain: "messaging")])
        default:
            // A concurrent send with the same correlator won, not yet committed.
            throw RPCError(.aborted, "the send raced another; try again")
        }
        return response
    }

    static func recorded(_ row: PostgresRandomAccessRow) throws -> Recorded {
        let outcome = try row[24].decode(String.self)
        return Recorded(outcome: outcome, message: outcome == "created" || outcome == "existing" ? try message(row) : nil)
    }

    /// One send by `record_sms`, in the connection's transaction if it has one.
    static func recordOne(_ s: Rendered, on c: PostgresConnection, logger: Logger) async throws -> Recorded {
        let rows = try await c.run(Prepared<RecordSms>(s.plan.correlator, s.plan.to, s.plan.patient, s.body, s.plan.type, s.language,
                                                       s.encoding, s.segments, s.sender, s.plan.scheduledAt, s.plan.callbackData,
                                                       s.actor, s.needsConsent, s.lockKey), logger: logger)
        guard let row = rows.first else { throw RPCError(.internal, "record_sms returned no row") }
        return try recorded(row.makeRandomAccess())
    }

    /// A batch of sends by one call of `record_sms_batch` (its own transaction). If that fails,
    /// each send is recorded alone, so one that cannot be fails only its own caller.
    static func recordAll(_ batch: [Rendered], store: Store, logger: Logger) async throws -> [Result<Recorded, any Error>] {
        do {
            return try await store.withConnection { c in try await recordBatch(batch, on: c, logger: logger) }.map { .success($0) }
        } catch {
            guard batch.count > 1 else { return [.failure(error)] }
            logger.warning("an SMS batch failed; recording its sends one by one",
                           metadata: ["batch": "\(batch.count)", "error.kind": "\(RPCError.loggableKind(of: error))"])
            var out: [Result<Recorded, any Error>] = []
            for send in batch {
                do { out.append(.success(try await store.withConnection { c in try await recordOne(send, on: c, logger: logger) })) } catch {
                    out.append(.failure(error))
                }
            }
            return out
        }
    }

    static func recordBatch(_ batch: [Rendered], on c: PostgresConnection, logger: Logger) async throws -> [Recorded] {
        // Arrays cannot hold NULL here: the statement reads "" (and the nil UUID, the epoch) as none.
        let rows = try await c.run(Prepared<RecordSmsBatch>(
            batch.map(\.plan.correlator), batch.map(\.plan.to), batch.map { $0.plan.patient ?? .zero }, batch.map(\.body),
            batch.map(\.plan.type), batch.map { $0.language ?? "" }, batch.map(\.encoding), batch.map(\.segments),
            batch.map(\.sender), batch.map { $0.plan.scheduledAt ?? Date(timeIntervalSince1970: 0) },
            batch.map { $0.plan.callbackData ?? "" }, batch.map(\.actor), batch.map(\.needsConsent), batch.map(\.lockKey)), logger: logger)
        var out = [Recorded?](repeating: nil, count: batch.count)
        for row in rows {
            let r = row.makeRandomAccess()
            let ord = Int(try r[25].decode(Int32.self))
            guard (1...batch.count).contains(ord) else { throw RPCError(.internal, "record_sms_batch returned an unknown item") }
            out[ord - 1] = try recorded(r)
        }
        return try out.map { recorded in
            guard let recorded else { throw RPCError(.internal, "record_sms_batch left an item out") }
            return recorded
        }
    }

    /// One send, prepared (one per send: parsing and planning it every time cost PostgreSQL
    /// more than running it).
    enum RecordSms: PreparedSQL {
        static let sql = """
            SELECT \(SmsDesk.columns), r.outcome
            FROM record_sms($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) AS r, LATERAL (SELECT (r.message).*) AS m
            """
        static let types: [PostgresDataType] = [.text, .text, .uuid, .text, .text, .text, .text, .int4, .text, .timestamptz,
                                                .text, .text, .bool, .int8]
    }

    /// Sends together: `record_sms_batch`'s arrays, one element per send; none is "" for text,
    /// the nil UUID for the patient and the epoch for the scheduled time.
    enum RecordSmsBatch: PreparedSQL {
        static let sql = """
            SELECT \(SmsDesk.columns), r.o_outcome, r.o_ord
            FROM record_sms_batch($1, $2, array_replace($3::uuid[], '00000000-0000-0000-0000-000000000000', NULL), $4, $5,
                                  array_replace($6::text[], '', NULL), $7, $8, $9, array_replace($10::timestamptz[], 'epoch', NULL),
                                  array_replace($11::text[], '', NULL), $12, $13, $14) AS r,
                 LATERAL (SELECT (r.o_message).*) AS m
            """
        static let types: [PostgresDataType] = [.textArray, .textArray, .uuidArray, .textArray, .textArray, .textArray, .textArray,
                                                .int4Array, .textArray, .timestamptzArray, .textArray, .textArray, .boolArray, .int8Array]
    }

    /// `earlier`, if it is what `plan` asks for again; a correlator reused for another number,
    /// type or text is ALREADY_EXISTS.
    static func same(_ earlier: SmsMessageProto, _ plan: SendPlan) throws(RPCError) -> SmsMessageProto {
        guard earlier.to == plan.to, types[earlier.messageType] == plan.type, plan.template != nil || earlier.body == plan.text else {
            throw RPCError(.alreadyExists, "client_correlator names an earlier, different message",
                           details: [RPCError.fieldDetail("client_correlator", "was used for another message")])
        }
        return earlier
    }

    /// The advisory-lock key that serializes a number's sends (shared) and consent changes.
    static func consentLockKey(_ phone: String) -> Int64 { advisoryLockKey("messaging.consent:" + phone) }

    // MARK: - Read, list, cancel

    func get(_ r: Caremesh_Messaging_V1_GetSmsRequest, _ context: RPCContext) async throws -> Caremesh_Messaging_V1_GetSmsResponse {
        _ = try context.requireRole(Self.senders)
        guard let id = UUID(uuidString: r.id) else { throw RPCError.invalidArgument(field: "id", "must be a UUID") }
        return try await store.withConnection { c in
            guard let m = try await Self.one(c, "SELECT \(unescaped: Self.columns) FROM sms_messages WHERE id = \(id)", logger: self.logger) else {
                throw RPCError(.notFound, "no such message")
            }
            var response = Caremesh_Messaging_V1_GetSmsResponse()
            response.message = m
            return response
        }
    }

    func list(_ r: Caremesh_Messaging_V1_ListSmsRequest, _ context: RPCContext) async throws -> Caremesh_Messaging_V1_ListSmsResponse {
        _ = try context.requireRole(Self.senders)
        var v = FieldViolations()
        if !r.to.isEmpty { v.phone(r.to, "to") }
        let patient = v.optionalUUID(r.patientID, "patient_id")
        let statuses = r.statuses.compactMap { Self.statuses[$0]?.rawValue }
        v.check(statuses.count == r.statuses.count, "statuses", "must be known statuses")
        let page = Page(size: r.pageSize, token: r.pageToken, into: &v)
        try v.throwIfAny()
        let to = r.to.isEmpty ? nil : r.to
        return try await store.withConnection { c in
            let rows = try await c.query("""
                SELECT \(unescaped: Self.columns), \(unescaped: Page.micros("created_at")) FROM sms_messages
                WHERE (\(to)::text IS NULL OR phone_number = \(to)) AND (\(patient)::uuid IS NULL OR patient_id = \(patient))
                  AND (cardinality(\(statuses)::text[]) = 0 OR status = ANY(\(statuses)))
                  AND \(after: page, time: "created_at", id: "id")
                ORDER BY created_at DESC, id DESC LIMIT \(page.limit)
                """, logger: self.logger)
            let (messages, token) = try await page.collect(rows) { row in
                let r = row.makeRandomAccess()
                let m = try Self.message(r)
                return (m, try r[24].decode(Int64.self), UUID(uuidString: m.id)!)
            }
            var response = Caremesh_Messaging_V1_ListSmsResponse()
            response.messages = messages
            response.nextPageToken = token
            return response
        }
    }

    func cancel(_ r: Caremesh_Messaging_V1_CancelSmsRequest, _ context: RPCContext) async throws -> Caremesh_Messaging_V1_CancelSmsResponse {
        _ = try context.requireRole(Self.senders)
        guard let id = UUID(uuidString: r.id) else { throw RPCError.invalidArgument(field: "id", "must be a UUID") }
        return try await store.withTransaction { c in
            guard let m = try await Self.one(c, "SELECT \(unescaped: Self.columns) FROM sms_messages WHERE id = \(id) FOR UPDATE",
                                             logger: self.logger) else { throw RPCError(.notFound, "no such message") }
            var response = Caremesh_Messaging_V1_CancelSmsResponse()
            if m.status == .cancelled {
                response.message = m
                return response
            }
            guard let cancelled = try await self.cancelQueued(correlators: [m.clientCorrelator], on: c).first else {
                throw RPCError(.failedPrecondition, "the message has already gone to the provider (or is going now)")
            }
            response.message = cancelled
            return response
        }
    }

    /// Cancels the messages among `correlators` still queued (scheduled or pending) and not held
    /// by a sender (the provider may be taking those right now), in the caller's transaction,
    /// each announced by `SmsStatusChanged`.
    func cancelQueued(correlators: [String], on c: PostgresConnection) async throws -> [SmsMessageProto] {
        var before: [UUID: SmsStatus] = [:]
        for try await (id, status) in try await c.query("""
            SELECT id, status FROM sms_messages
            WHERE client_correlator = ANY(\(correlators)) AND status IN ('scheduled', 'pending') AND (lease_until IS NULL OR lease_until < now())
            FOR UPDATE
            """, logger: logger).decode((UUID, String).self) { before[id] = SmsStatus(rawValue: status) }
        guard !before.isEmpty else { return [] }
        let ids = Array(before.keys)
        var cancelled: [SmsMessageProto] = []
        for try await row in try await c.query("""
            UPDATE sms_messages SET status = 'cancelled', cancelled_at = now() WHERE id = ANY(\(ids))
            RETURNING \(unescaped: Self.columns)
            """, logger: logger) { cancelled.append(try Self.message(row.makeRandomAccess())) }
        var events = PendingEvents()
        for m in cancelled {
            let id = UUID(uuidString: m.id)!
            let previous: SmsStatus = before[id] ?? .pending
            let patient: UUID? = UUID(uuidString: m.patientID)
            let callbackData: String? = m.callbackData.isEmpty ? nil : m.callbackData
            let provider: String? = m.provider.isEmpty ? nil : m.provider
            let e = SmsEvents.statusChanged(id: id, correlator: m.clientCorrelator, status: .cancelled, previous: previous,
                                            patient: patient, callbackData: callbackData, provider: provider)
            try events.add(e, key: m.id)
        }
        try await sender.outbox.append(events, on: c)
        return cancelled
    }
}

extension SmsSegments.Encoding {
    /// The API's name for an encoding as `sms_messages` and `sms_templates` store it.
    static func proto(stored: String) -> Caremesh_Messaging_V1_SmsEncoding {
        switch Self(rawValue: stored) {
        case .gsm7: .gsm7
        case .ucs2: .ucs2
        case nil: .unspecified
        }
    }
}

extension FieldViolations {
    /// A two-letter ISO 639-1 language code in `field` (empty passes unless `required`).
    mutating func language(_ code: String, _ field: String, required: Bool = false) {
        check((code.isEmpty && !required) || code.wholeMatch(of: /[a-z]{2}/) != nil, field, "must be a two-letter ISO 639-1 code")
    }
}

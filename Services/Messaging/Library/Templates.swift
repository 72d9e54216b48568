import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// SMS templates in the database: seeded from `DefaultSmsTemplates` at start (a template an
/// admin changed is kept), read by type and language with fallback to English, replaced by
/// admins. Counts come from the text: characters, encoding and segments.
final class Templates: Sendable {
    let store: Store
    let logger: Logger

    init(store: Store, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    /// Inserts the shipped templates that are missing and brings those still as the service
    /// wrote them up to the shipped text when it changed (one an admin replaced is kept; an
    /// unchanged one is not rewritten at every start).
    static func seed(on c: PostgresConnection, logger: Logger) async throws {
        for t in DefaultSmsTemplates.all {
            _ = try await upsert(t, active: true, by: MessagingService.actor, replacing: false, on: c, logger: logger)
        }
    }

    /// Writes `t` with its counts; an existing one of its type and language is replaced only
    /// when `replacing` (else nil comes back).
    static func upsert(_ t: SmsTemplate, active: Bool, by actor: String, replacing: Bool, on c: PostgresConnection, logger: Logger)
        async throws -> Caremesh_Messaging_V1_SmsTemplate?
    {
        let segments = SmsSegments(t.text)
        var saved: Caremesh_Messaging_V1_SmsTemplate?
        for try await row in try await c.query("""
            INSERT INTO sms_templates (name, template_type, message_template, character_count, encoding, segments, language_code,
                                       is_active, created_by, updated_by)
            VALUES (\(t.name), \(t.kind.rawValue), \(t.text), \(t.characterCount), \(segments.encoding.rawValue), \(segments.segments),
                    \(t.language), \(active), \(actor), \(actor))
            ON CONFLICT (template_type, language_code) DO UPDATE SET message_template = EXCLUDED.message_template,
                character_count = EXCLUDED.character_count, encoding = EXCLUDED.encoding, segments = EXCLUDED.segments,
                is_active = EXCLUDED.is_active, updated_by = EXCLUDED.updated_by
            WHERE \(replacing)
               OR (sms_templates.updated_by = \(MessagingService.actor) AND sms_templates.message_template <> EXCLUDED.message_template)
            RETURNING \(unescaped: columns)
            """, logger: logger) {
            saved = try template(row.makeRandomAccess())
        }
        return saved
    }

    /// The active template of `kind` in `language`, else in English.
    static func find(_ kind: SmsTemplate.Kind, language: String, on c: PostgresConnection, logger: Logger) async throws -> SmsTemplate? {
        let rows = try await c.query("""
            SELECT language_code, message_template FROM sms_templates
            WHERE template_type = \(kind.rawValue) AND is_active AND language_code IN (\(language), 'en')
            ORDER BY language_code = \(language) DESC LIMIT 1
            """, logger: logger)
        for try await (found, text) in rows.decode((String, String).self) { return SmsTemplate(kind, found, text) }
        return nil
    }

    static let columns = """
        template_type, language_code, message_template, character_count, encoding, segments, is_active,
        extract(epoch FROM updated_at)::float8, name
        """

    static func template(_ row: PostgresRandomAccessRow) throws -> Caremesh_Messaging_V1_SmsTemplate {
        var t = Caremesh_Messaging_V1_SmsTemplate()
        t.templateType = SmsDesk.types.key(for: try row[0].decode(String.self)) ?? .unspecified
        t.language = try row[1].decode(String.self)
        t.name = try row[8].decode(String.self)
        t.text = try row[2].decode(String.self)
        t.characterCount = UInt32(try row[3].decode(Int32.self))
        t.encoding = SmsSegments.Encoding.proto(stored: try row[4].decode(String.self))
        t.segments = UInt32(try row[5].decode(Int32.self))
        t.isActive = try row[6].decode(Bool.self)
        t.updatedAt = Google_Protobuf_Timestamp(epochSeconds: try row[7].decode(Double.self))
        return t
    }

    func list(_ r: Caremesh_Messaging_V1_ListSmsTemplatesRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_ListSmsTemplatesResponse
    {
        _ = try context.requireRole(SmsDesk.senders)
        var v = FieldViolations()
        let kind = SmsDesk.templateTypes[r.templateType]
        v.check(r.templateType == .unspecified || kind != nil, "template_type", "must be a reminder type")
        v.language(r.language, "language")
        try v.throwIfAny()
        let type = kind?.rawValue
        let language = r.language.isEmpty ? nil : r.language
        return try await store.withConnection { c in
            var response = Caremesh_Messaging_V1_ListSmsTemplatesResponse()
            for try await row in try await c.query("""
                SELECT \(unescaped: Self.columns) FROM sms_templates
                WHERE (\(type)::text IS NULL OR template_type = \(type)) AND (\(language)::text IS NULL OR language_code = \(language))
                ORDER BY template_type, language_code
                """, logger: self.logger) {
                response.templates.append(try Self.template(row.makeRandomAccess()))
            }
            return response
        }
    }

    func put(_ r: Caremesh_Messaging_V1_PutSmsTemplateRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_PutSmsTemplateResponse
    {
        let caller = try context.requireRole(SmsDesk.admins)
        var v = FieldViolations()
        let kind = SmsDesk.templateTypes[r.templateType]
        v.check(kind != nil, "template_type", "must be SEVEN_DAY_REMINDER, ONE_DAY_REMINDER or OVERDUE_REMINDER")
        v.language(r.language, "language", required: true)
        v.check(!r.text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty && r.text.count <= 1_600, "text",
                "must be 1 to 1600 characters")
        try v.throwIfAny()
        let template = SmsTemplate(kind!, r.language, r.text)
        return try await store.withTransaction { c in
            guard let saved = try await Self.upsert(template, active: r.isActive, by: caller.subject, replacing: true, on: c,
                                                    logger: self.logger) else { throw RPCError(.internal, "the upsert returned no row") }
            var response = Caremesh_Messaging_V1_PutSmsTemplateResponse()
            response.template = saved
            return response
        }
    }
}

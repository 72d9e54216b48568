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

    /// Inserts the shipped templates that are missing.
    static func seed(on c: PostgresConnection, logger: Logger) async throws {
        for t in DefaultSmsTemplates.all {
            let segments = SmsSegments(t.text)
            try await c.query("""
                INSERT INTO sms_templates (name, template_type, message_template, character_count, encoding, segments, language_code, created_by)
                VALUES (\(t.kind.rawValue + "_" + t.language), \(t.kind.rawValue), \(t.text), \(t.characterCount),
                        \(segments.encoding.rawValue), \(segments.segments), \(t.language), 'service:messaging')
                ON CONFLICT (template_type, language_code) DO NOTHING
                """, logger: logger)
        }
    }

    /// The active template of `kind` in `language`, else in English, with the language found.
    static func find(_ kind: SmsTemplate.Kind, language: String, on c: PostgresConnection, logger: Logger) async throws
        -> (SmsTemplate?, String?)
    {
        let rows = try await c.query("""
            SELECT language_code, message_template FROM sms_templates
            WHERE template_type = \(kind.rawValue) AND is_active AND language_code IN (\(language), 'en')
            ORDER BY language_code = \(language) DESC LIMIT 1
            """, logger: logger)
        for try await (lang, text) in rows.decode((String, String).self) {
            return (SmsTemplate(kind, lang, text), lang)
        }
        return (nil, nil)
    }

    static let columns = """
        template_type, language_code, message_template, character_count, encoding, segments, is_active,
        extract(epoch FROM updated_at)::float8
        """

    static func template(_ row: PostgresRandomAccessRow) throws -> Caremesh_Messaging_V1_SmsTemplate {
        var t = Caremesh_Messaging_V1_SmsTemplate()
        let type = try row[0].decode(String.self)
        t.templateType = SmsDesk.types.key(for: type) ?? .unspecified
        t.language = try row[1].decode(String.self)
        t.name = type + "_" + t.language
        t.text = try row[2].decode(String.self)
        t.characterCount = UInt32(try row[3].decode(Int32.self))
        t.encoding = try row[4].decode(String.self) == SmsSegments.Encoding.ucs2.rawValue ? .ucs2 : .gsm7
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
        v.check(r.language.isEmpty || r.language.wholeMatch(of: /[a-z]{2}/) != nil, "language", "must be a two-letter ISO 639-1 code")
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
        v.check(r.language.wholeMatch(of: /[a-z]{2}/) != nil, "language", "must be a two-letter ISO 639-1 code")
        v.check(!r.text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty && r.text.count <= 1_600, "text",
                "must be 1 to 1600 characters")
        try v.throwIfAny()
        let template = SmsTemplate(kind!, r.language, r.text)
        let segments = SmsSegments(r.text)
        return try await store.withTransaction { c in
            var response = Caremesh_Messaging_V1_PutSmsTemplateResponse()
            for try await row in try await c.query("""
                INSERT INTO sms_templates (name, template_type, message_template, character_count, encoding, segments, language_code,
                                           is_active, created_by, updated_by)
                VALUES (\(template.kind.rawValue + "_" + template.language), \(template.kind.rawValue), \(template.text),
                        \(template.characterCount), \(segments.encoding.rawValue), \(segments.segments), \(template.language),
                        \(r.isActive), \(caller.subject), \(caller.subject))
                ON CONFLICT (template_type, language_code) DO UPDATE SET message_template = EXCLUDED.message_template,
                    character_count = EXCLUDED.character_count, encoding = EXCLUDED.encoding, segments = EXCLUDED.segments,
                    is_active = EXCLUDED.is_active, updated_by = EXCLUDED.updated_by
                RETURNING \(unescaped: Self.columns)
                """, logger: self.logger) {
                response.template = try Self.template(row.makeRandomAccess())
            }
            return response
        }
    }
}

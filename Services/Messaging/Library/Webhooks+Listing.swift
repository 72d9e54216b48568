import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import SwiftProtobuf

extension Webhooks {
    /// The log, newest first, for admins: what came and what became of it (headers and
    /// bodies stay in the database). Read under row-level security as the acting admin.
    func list(_ r: Caremesh_Messaging_V1_ListWebhookLogsRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_ListWebhookLogsResponse
    {
        let caller = try context.requireRole(SmsDesk.admins)
        var v = FieldViolations()
        let message = v.optionalUUID(r.relatedSmsMessageID, "related_sms_message_id")
        let page = Page(size: r.pageSize, token: r.pageToken, into: &v)
        try v.throwIfAny()
        return try await store.withActor(caller.subject, roles: caller.roles) { c in
            let rows = try await c.query("""
                SELECT id, kind, provider, webhook_type, processed, coalesce(processing_error, ''), related_sms_message_id, response_status,
                       extract(epoch FROM created_at)::float8, \(unescaped: Page.micros("created_at"))
                FROM sms_webhook_logs
                WHERE (\(message)::uuid IS NULL OR related_sms_message_id = \(message)) AND \(after: page, time: "created_at", id: "id")
                ORDER BY created_at DESC, id DESC LIMIT \(page.limit)
                """, logger: self.logger)
            let (logs, token) = try await page.collect(rows.decode((UUID, String, String, String, Bool, String, UUID?, Int32, Double, Int64).self)) {
                var l = Caremesh_Messaging_V1_WebhookLog()
                l.id = $0.0.text
                l.kind = $0.1
                l.provider = $0.2
                l.webhookType = $0.3
                l.processed = $0.4
                l.processingError = $0.5
                l.relatedSmsMessageID = $0.6?.text ?? ""
                l.responseStatus = UInt32($0.7)
                l.createdAt = Google_Protobuf_Timestamp(epochSeconds: $0.8)
                return (l, $0.9, $0.0)
            }
            var response = Caremesh_Messaging_V1_ListWebhookLogsResponse()
            response.logs = logs
            response.nextPageToken = token
            return response
        }
    }

    /// The body as JSON: itself if it is JSON, a form body as an object of its fields, else a
    /// note that it was neither.
    static func bodyAsJSON(_ body: Data) -> String {
        // Only an object or array can be JSON here (a form body never starts with either).
        let first = body.first { !" \t\r\n".utf8.contains($0) }
        if first == UInt8(ascii: "{") || first == UInt8(ascii: "["), (try? JSONSerialization.jsonObject(with: body)) != nil,
           let text = String(data: body, encoding: .utf8) {
            // jsonb refuses \u0000 (the raw body keeps it).
            return text.utf8.contains(0) || text.contains("\\u0000") ? #"{"unreadable":true}"# : text
        }
        if let text = String(data: body, encoding: .utf8), let form = FormEncoding.decode(text) {
            return WebhookReader.Form(fields: form).json
        }
        return #"{"unreadable":true}"#
    }
}

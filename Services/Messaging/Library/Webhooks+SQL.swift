import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import SwiftProtobuf

/// The log's and the status callbacks' statements, prepared: a flush runs each once, hundreds of
/// times a second, and parsing and planning them each time cost PostgreSQL more than running them.
extension Webhooks {
    enum InboxWaits: PreparedSQL {
        static let sql = """
            SELECT EXISTS (SELECT 1 FROM sms_webhook_logs WHERE \(Webhooks.waitingSQL))
            """
        static let types: [PostgresDataType] = []
    }

    enum InsertLogs: PreparedSQL {
        static let sql = """
            INSERT INTO sms_webhook_logs (id, kind, provider, webhook_type, request_url, request_headers, request_body, raw_body,
                                          request_ip, idempotency_key, processing_error, response_status, response_body,
                                          processed, duplicate, related_sms_message_id, attempts)
            SELECT id, kind, provider, type, url, headers::jsonb, body::jsonb, raw, nullif(ip, ''), nullif(key, ''),
                   nullif(error, ''), status, response, processed, duplicate,
                   nullif(related, '00000000-0000-0000-0000-000000000000'::uuid), processed::int
            FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                WITH ORDINALITY AS r(id, kind, provider, type, url, headers, body, raw, ip, key, error, status, response,
                                     processed, duplicate, related, n)
            ORDER BY n
            """
        static let types: [PostgresDataType] = [.uuidArray, .textArray, .textArray, .textArray, .textArray, .textArray, .textArray,
                                                .byteaArray, .textArray, .textArray, .textArray, .int4Array, .textArray, .boolArray,
                                                .boolArray, .uuidArray]
    }

    enum ClaimKeys: PreparedSQL {
        static let sql = """
            INSERT INTO webhook_applied (provider, idempotency_key, log_id)
            SELECT provider, key, id FROM unnest($1::text[], $2::text[], $3::uuid[]) WITH ORDINALITY AS r(provider, key, id, n)
            ORDER BY n
            ON CONFLICT DO NOTHING RETURNING log_id
            """
        static let types: [PostgresDataType] = [.textArray, .textArray, .uuidArray]
    }

    enum KnownMessages: PreparedSQL {
        static let sql = "SELECT id FROM sms_messages WHERE id = ANY($1)"
        static let types: [PostgresDataType] = [.uuidArray]
    }

    /// See `loadMessages`.
    enum LoadMessages: PreparedSQL {
        static let sql = """
            SELECT id, status, client_correlator, patient_id, callback_data, provider, provider_message_id FROM sms_messages
            WHERE id IN (SELECT unnest($1::uuid[])
                         UNION ALL
                         SELECT m.id FROM unnest($2::text[], $3::text[]) AS r(provider, provider_id)
                         JOIN sms_messages m ON m.provider = r.provider AND m.provider_message_id = r.provider_id)
            ORDER BY id FOR UPDATE
            """
        static let types: [PostgresDataType] = [.uuidArray, .textArray, .textArray]
    }

    enum WriteChanges: PreparedSQL {
        static let sql = """
            UPDATE sms_messages m SET status = u.status, delivery_status = u.raw,
                delivery_description = coalesce(nullif(u.code, '') , m.delivery_description),
                provider = coalesce(m.provider, u.provider), provider_message_id = coalesce(m.provider_message_id, nullif(u.provider_id, '')),
                sent_at = CASE WHEN u.sent THEN coalesce(m.sent_at, now()) ELSE m.sent_at END,
                delivered_at = CASE WHEN u.delivered THEN now() ELSE m.delivered_at END,
                failed_at = CASE WHEN u.failed THEN now() ELSE m.failed_at END,
                cancelled_at = CASE WHEN u.cancelled THEN now() ELSE m.cancelled_at END,
                error_message = CASE WHEN u.failed THEN coalesce(nullif(u.error, ''), 'undelivered') ELSE m.error_message END
            FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::bool[], $9::bool[],
                        $10::bool[], $11::text[])
                AS u(id, status, raw, code, provider, provider_id, sent, delivered, failed, cancelled, error)
            WHERE m.id = u.id
            """
        static let types: [PostgresDataType] = [.uuidArray, .textArray, .textArray, .textArray, .textArray, .textArray, .boolArray,
                                                .boolArray, .boolArray, .boolArray, .textArray]
    }
}

import CareMeshStore
import Foundation
import Logging
import PostgresNIO

/// Answers to texts people sent (a keyword's confirmation, an SOS answer's outcome): to the
/// number that wrote, without the consent check (they wrote first; carriers require the
/// answers to STOP and HELP), once per correlator.
extension SmsDesk {
    /// Queues the answer in `c`'s transaction; its id, or nil when the correlator already had one.
    static func queueReply(to phone: String, _ text: String, type: String, language: String, correlator: String, sender: String,
                           on c: PostgresConnection, logger: Logger) async throws -> UUID? {
        let segments = SmsSegments(text)
        return try await c.query("""
            INSERT INTO sms_messages (phone_number, message_content, message_type, language_code, encoding, segments, client_correlator,
                                      sender_address, status, created_by)
            VALUES (\(phone), \(text), \(type), \(language), \(segments.encoding.rawValue), \(Int32(segments.segments)),
                    \(correlator), \(sender), 'pending', \(MessagingService.actor))
            ON CONFLICT (client_correlator) DO NOTHING RETURNING id
            """, logger: logger).first(UUID.self)
    }
}

import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// Suspicious activities: recorded by identity itself (lockouts, refresh-token reuse) and by
/// other services (dispatch's SOS rate limit), reviewed by admins.
enum Suspicious {
    /// Inserts one, with a `SuspiciousActivityRecorded` event, in the caller's transaction.
    static func record(_ c: PostgresConnection, outbox: Outbox, userID: UUID?, type: String, details: [String: String],
                       ip: String?, logger: Logger) async throws -> Caremesh_Identity_V1_SuspiciousActivity {
        let json = String(data: try JSONSerialization.data(withJSONObject: details, options: [.sortedKeys]), encoding: .utf8)!
        let rows = try await c.query("""
            INSERT INTO suspicious_activities (user_id, activity_type, details, ip_address)
            VALUES (\(userID), \(type), \(json)::jsonb, \(ip)::inet)
            RETURNING id, extract(epoch FROM created_at)::float8
            """, logger: logger)
        var activity = Caremesh_Identity_V1_SuspiciousActivity()
        for try await (id, at) in rows.decode((UUID, Double).self) {
            activity.id = id.uuidString.lowercased()
            activity.createdAt = Google_Protobuf_Timestamp(epochSeconds: at)
        }
        activity.userID = userID?.uuidString.lowercased() ?? ""
        activity.activityType = type
        activity.details = details
        activity.ipAddress = ip ?? ""
        var event = Caremesh_Identity_V1_SuspiciousActivityRecorded()
        event.activityID = activity.id
        event.userID = activity.userID
        event.activityType = type
        _ = try await outbox.append(event, key: activity.userID.isEmpty ? activity.id : activity.userID, on: c)
        return activity
    }
}


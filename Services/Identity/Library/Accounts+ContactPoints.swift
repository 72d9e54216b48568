import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import PostgresNIO
import SwiftProtobuf

/// How messaging reaches account holders: their phone, email, language and the channels they
/// chose, for messaging only (the minimum necessary: no name, no address).
extension Accounts {
    static let contactReaders: Set<String> = ["service:messaging"]

    /// The channels of a person who never chose (seed 001's example: push and email, not SMS,
    /// which needs their consent besides).
    static let defaultChannels = Caremesh_Identity_V1_NotificationPreferences.with {
        $0.push = true
        $0.email = true
    }

    func contactPoints(_ r: Caremesh_Identity_V1_GetContactPointsRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_GetContactPointsResponse
    {
        _ = try context.requireService(Self.contactReaders, "only messaging reads contact points")
        var v = FieldViolations()
        v.check(r.userIds.count <= 100, "user_ids", "at most 100")
        let ids = r.userIds.enumerated().compactMap { i, id in v.uuid(id, "user_ids[\(i)]") }
        try v.throwIfAny()
        var response = Caremesh_Identity_V1_GetContactPointsResponse()
        guard !ids.isEmpty else { return response }
        let rows = try await store.query("""
            SELECT u.id, u.email, u.email_verified, u.is_active, coalesce(p.phone, ''), coalesce(p.preferences::text, '{}'),
                   coalesce(p.preferences ? 'notifications', false)
            FROM users u LEFT JOIN user_profiles p ON p.user_id = u.id
            WHERE u.id = ANY(\(ids))
            """)
        var options = JSONDecodingOptions()
        options.ignoreUnknownFields = true
        for row in rows {
            let (id, email, verified, active, phone, preferences, chose) = try row.decode((UUID, String, Bool, Bool, String, String, Bool).self)
            let prefs = (try? Caremesh_Identity_V1_Preferences(jsonString: preferences, options: options)) ?? .init()
            response.contacts.append(.with {
                $0.userID = id.text
                $0.email = email
                $0.emailVerified = verified
                $0.active = active
                $0.phone = phone
                $0.language = prefs.language
                $0.channels = chose ? prefs.notifications : Self.defaultChannels
            })
        }
        return response
    }
}

import CareMeshContracts
import CareMeshRPC
import Foundation

/// How to reach account holders, asked of identity (`GetContactPoints`, for messaging only)
/// when needed and never copied: their phone, email, language and chosen channels.
struct ContactDirectory: Sendable {
    let client: RPCClient

    /// The contact points of `people`, by id (an id naming no account is left out).
    func contactPoints(of people: [UUID]) async throws -> [UUID: Caremesh_Identity_V1_ContactPoints] {
        let unique = Array(Set(people))
        var out: [UUID: Caremesh_Identity_V1_ContactPoints] = [:]
        for start in stride(from: 0, to: unique.count, by: 100) {
            let request = Caremesh_Identity_V1_GetContactPointsRequest.with {
                $0.userIds = unique[start..<min(start + 100, unique.count)].map(\.text)
            }
            for contact in try await client.call(IdentityMethods.getContactPoints, request: request).contacts {
                if let id = UUID(uuidString: contact.userID) { out[id] = contact }
            }
        }
        return out
    }
}

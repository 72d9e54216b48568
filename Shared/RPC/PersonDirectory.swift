import CareMeshContracts
import Foundation

/// What identity says a person's id names (`ResolvePerson`), for the services that take one:
/// dispatch booking an appointment, alerts raising a care alert. Ids only, no PHI.
public struct Person: Sendable, Equatable {
    /// The patient or client record, if the id names one or the account is linked to one.
    public var record: UUID?
    public var kind: Caremesh_Identity_V1_PersonKind
    /// The person's active account, if the id names one or the record is linked to one.
    public var account: UUID?
    /// The record's home zone.
    public var zone: UUID?

    public init(record: UUID?, kind: Caremesh_Identity_V1_PersonKind, account: UUID?, zone: UUID?) {
        self.record = record
        self.kind = kind
        self.account = account
        self.zone = zone
    }
}

/// Asks identity who an id names, as the calling service (its own token).
public struct PersonDirectory: Sendable {
    let client: RPCClient

    public init(client: RPCClient) {
        self.client = client
    }

    /// What `id` names. `NOT_FOUND` naming `field` when it names neither a record nor an active
    /// account; `UNAVAILABLE` when identity cannot answer now (the caller may retry); any other
    /// failure of the call is this service's problem, not the caller's (`INTERNAL`).
    public func resolve(_ id: UUID, field: String) async throws(RPCError) -> Person {
        var request = Caremesh_Identity_V1_ResolvePersonRequest()
        request.id = id.uuidString.lowercased()
        let answer: Caremesh_Identity_V1_ResolvePersonResponse
        do {
            answer = try await client.call(IdentityMethods.resolvePerson, request: request)
        } catch {
            switch error.code {
            case .notFound:
                throw RPCError.notFound(field: field, "names no patient or client record and no active account")
            case .unavailable, .deadlineExceeded, .resourceExhausted:
                throw RPCError(.unavailable, "identity cannot say now who \(field) names; retry")
            default:
                throw RPCError(.internal, "identity refused to resolve \(field): \(error.code.name)")
            }
        }
        return Person(record: UUID(uuidString: answer.recordID), kind: answer.kind, account: UUID(uuidString: answer.accountID),
                      zone: UUID(uuidString: answer.zoneID))
    }
}

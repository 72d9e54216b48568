import CareMeshContracts
import Foundation

public typealias Caller = Caremesh_Rpc_V1_Caller

extension Caller {
    public func has(role: String) -> Bool { roles.contains(role) }
    public func hasAny(of roles: Set<String>) -> Bool { self.roles.contains { roles.contains($0) } }

    /// The signed-in person's id (a service's subject, `service:<name>`, is none).
    public var userID: UUID? { UUID(uuidString: subject) }

    /// `userID`, or `UNAUTHENTICATED`: the caller is a service, not a person.
    public func requireUserID() throws(RPCError) -> UUID {
        guard let id = userID else { throw RPCError(.unauthenticated, "the caller is not a user") }
        return id
    }
}

/// Authorization inside a handler. The router verified the token and stamped the caller; the
/// service decides what that caller may do, by role and by ownership.
extension RPCContext {
    /// The verified caller, or `UNAUTHENTICATED` (no caller: the router let an anonymous
    /// call through, which only happens for public methods or with authentication disabled).
    public func requireCaller() throws(RPCError) -> Caller {
        guard let caller, !caller.subject.isEmpty else {
            throw RPCError(.unauthenticated, "this method needs a signed-in caller")
        }
        return caller
    }

    /// The caller, if it holds one of `roles`; `PERMISSION_DENIED` otherwise.
    public func requireRole(_ roles: Set<String>) throws(RPCError) -> Caller {
        let caller = try requireCaller()
        guard caller.hasAny(of: roles) else {
            throw RPCError(.permissionDenied, "this needs one of the roles: \(roles.sorted().joined(separator: ", "))")
        }
        return caller
    }

    /// The caller, if it is one of the services `subjects` names (e.g. "service:messaging");
    /// `PERMISSION_DENIED` with `refusal` otherwise: a method only certain services call.
    public func requireService(_ subjects: Set<String>, _ refusal: String) throws(RPCError) -> Caller {
        let caller = try requireRole(["service"])
        guard subjects.contains(caller.subject) else { throw RPCError(.permissionDenied, refusal) }
        return caller
    }

    /// The user a request names in `field` (empty: the caller), if that is the caller or the
    /// caller holds one of `roles` (e.g. admins); a malformed id is `INVALID_ARGUMENT` naming
    /// the field, anyone else's `PERMISSION_DENIED`.
    public func requireSelf(_ named: String, field: String, orRole roles: Set<String>) throws(RPCError) -> UUID {
        let caller = try requireCaller()
        guard !named.isEmpty else { return try caller.requireUserID() }
        guard let id = UUID(uuidString: named) else { throw RPCError.invalidArgument(field: field, "must be a UUID") }
        guard id == caller.userID || caller.hasAny(of: roles) else {
            throw RPCError(.permissionDenied, "only that user themselves or one of the roles \(roles.sorted().joined(separator: ", ")) may do this")
        }
        return id
    }
}

extension Dictionary where Value: Equatable {
    /// The key of the first entry holding `value` (for small two-way tables of names).
    public func key(for value: Value) -> Key? { first { $0.value == value }?.key }
}

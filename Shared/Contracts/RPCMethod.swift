import SwiftProtobuf

/// Whether a method may be retried, from the proto's `idempotency_level` option.
public enum Idempotency: Sendable, Hashable {
    /// The default: the method may have effects; retried only with an idempotency key.
    case unknown
    /// `NO_SIDE_EFFECTS`: a read; always safe to retry.
    case noSideEffects
    /// `IDEMPOTENT`: repeating it has the effect of doing it once.
    case idempotent

    /// Whether a failed attempt may be sent again without an idempotency key.
    public var isSafeToRetry: Bool { self != .unknown }
}

/// Who may call a method, from the proto's `(caremesh.rpc.v1.access)` option.
public enum Access: Sendable, Hashable {
    /// The default: the router lets the call through only with a valid access token.
    case authenticated
    /// `PUBLIC`: reachable without a token (sign-in, signing keys, health).
    case `public`
}

/// One RPC method of a contract, with its request and response types.
///
/// Generated for every `rpc` in `proto/` (see `Methods.swift`); code names methods through
/// these values, never through hand-typed strings:
/// ```swift
/// let reply = try await client.call(HealthMethods.check, service: "identity", request: .init())
/// ```
public struct RPCMethod<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>: Sendable {
    /// The full name, "/package.Service/Method".
    public let path: String
    /// The MDP service that serves it; nil for methods every worker serves (health).
    public let serviceName: String?
    public let idempotency: Idempotency
    public let access: Access

    public init(path: String, serviceName: String?, idempotency: Idempotency, access: Access = .authenticated) {
        self.path = path
        self.serviceName = serviceName
        self.idempotency = idempotency
        self.access = access
    }

    /// The method without its types, for registries and JSON callers.
    public var erased: AnyRPCMethod {
        AnyRPCMethod(path: path, serviceName: serviceName, idempotency: idempotency, access: access,
                     requestType: Request.self, responseType: Response.self)
    }
}

/// An `RPCMethod` with its message types as values: what the CLI and the HTTP edge use to
/// turn JSON into the request and the response into JSON.
public struct AnyRPCMethod: Sendable {
    public let path: String
    public let serviceName: String?
    public let idempotency: Idempotency
    public let access: Access
    public let requestType: any SwiftProtobuf.Message.Type
    public let responseType: any SwiftProtobuf.Message.Type

    /// The method's short name: "Check" for "/caremesh.health.v1.Health/Check".
    public var name: Substring { path[path.index(after: path.lastIndex(of: "/")!)...] }

    /// Finds a method by its full path, or by "Service/Method" or "Method" when that is unique.
    public static func find(_ name: String, in methods: [AnyRPCMethod] = allRPCMethods) -> AnyRPCMethod? {
        if let exact = methods.first(where: { $0.path == name }) { return exact }
        let suffix = name.hasPrefix("/") ? name : "/" + name
        let matches = methods.filter { $0.path.hasSuffix(suffix) || $0.path.hasSuffix("." + name) }
        return matches.count == 1 ? matches[0] : nil
    }
}

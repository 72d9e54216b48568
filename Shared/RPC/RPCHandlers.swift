import CareMeshContracts
import Foundation
import SwiftProtobuf

/// The methods a worker serves: typed handlers registered by their generated `RPCMethod`.
///
/// ```swift
/// var handlers = RPCHandlers()
/// handlers.register(BenchMethods.echo) { request, context in
///     var reply = Caremesh_Bench_V1_EchoResponse(); reply.payload = request.payload; return reply
/// }
/// ```
public struct RPCHandlers: Sendable {
    public typealias Erased = @Sendable (Data, RPCContext) async throws -> Data
    private(set) var table: [String: Erased] = [:]

    public init() {}

    /// Serves `method` with `handler`. A request that does not decode is `INVALID_ARGUMENT`.
    public mutating func register<Request, Response>(
        _ method: RPCMethod<Request, Response>,
        _ handler: @escaping @Sendable (Request, RPCContext) async throws -> Response
    ) {
        table[method.path] = { bytes, context in
            let request: Request
            do { request = try Request(serializedBytes: bytes) } catch {
                throw RPCError(.invalidArgument, "the request is not a valid \(Request.protoMessageName)")
            }
            return try await handler(request, context).wireBytes()
        }
    }

    /// The handler for a full method path.
    public func handler(for path: String) -> Erased? { table[path] }

    /// Every method path served.
    public var paths: [String] { table.keys.sorted() }
}

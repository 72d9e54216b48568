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
    private var inline: Set<String> = []

    public init() {}

    /// Where a handler's task starts.
    public enum Start: Sendable {
        /// On the concurrency pool: the worker's I/O thread only hands the request over, so the
        /// handler may do anything (the default).
        case pool
        /// On the worker's I/O thread, running there until it first suspends (`Task.immediate`):
        /// a handler that answers at once costs no hop to the pool and back. Only for handlers
        /// that never block and do little before their first `await` (health, the bench's
        /// no-op): heartbeats and other requests wait while it runs there.
        case inline
    }

    /// Serves `method` with `handler`. A request that does not decode is `INVALID_ARGUMENT`.
    public mutating func register<Request, Response>(
        _ method: RPCMethod<Request, Response>, start: Start = .pool,
        _ handler: @escaping @Sendable (Request, RPCContext) async throws -> Response
    ) {
        if start == .inline { inline.insert(method.path) } else { inline.remove(method.path) }
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

    /// Whether the handler for `path` starts on the worker's I/O thread (`Start.inline`).
    public func startsInline(_ path: String) -> Bool { inline.contains(path) }

    /// Every method path served.
    public var paths: [String] { table.keys.sorted() }
}

import CareMeshContracts
import Foundation
import SwiftProtobuf

public typealias StatusCode = Caremesh_Rpc_V1_Code
public typealias RequestHeader = Caremesh_Rpc_V1_RequestHeader
public typealias RequestHeaderView = Caremesh_Rpc_V1_RequestHeaderView
public typealias ResponseHeader = Caremesh_Rpc_V1_ResponseHeader
public typealias ErrorDetail = Caremesh_Rpc_V1_ErrorDetail
public typealias WorkerInfo = Caremesh_Rpc_V1_WorkerInfo

/// A failed call: a canonical code, a message safe to show the caller, and typed details.
///
/// What clients catch and what handlers throw. Domain errors conform to
/// `RPCErrorConvertible` instead; anything else a handler throws becomes `INTERNAL` with a
/// correlation id (see `RPCError.init(mapping:)`), so nothing internal leaks.
public struct RPCError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: StatusCode
    public var message: String
    public var details: [ErrorDetail]

    public init(_ code: StatusCode, _ message: String, details: [ErrorDetail] = []) {
        self.code = code
        self.message = message
        self.details = details
    }

    /// `INVALID_ARGUMENT` naming the field.
    public static func invalidArgument(field: String, _ description: String) -> RPCError {
        RPCError(.invalidArgument, "\(field): \(description)", details: [fieldDetail(field, description)])
    }

    /// `NOT_FOUND` of what a field names (a patient id that names no patient), the field named
    /// in the message and in a `BadRequest` detail, as for `ALREADY_EXISTS` of a unique field.
    public static func notFound(field: String, _ description: String) -> RPCError {
        RPCError(.notFound, "\(field): \(description)", details: [fieldDetail(field, description)])
    }

    /// A `BadRequest` detail naming one field (also for `ALREADY_EXISTS` of a unique field).
    public static func fieldDetail(_ field: String, _ description: String) -> ErrorDetail {
        var v = FieldViolations()
        v.add(field, description)
        return v.detail
    }

    public var description: String { "\(code.name) (\(code.rawValue)): \(message)" }

    /// The retry-after hint, if the details carry one.
    public var retryAfterMs: UInt32? {
        details.lazy.compactMap { $0.kind.flatMap { if case .retryInfo(let r) = $0 { r.retryAfterMs } else { nil } } }.first
    }

    /// The `ErrorInfo.reason`, if the details carry one.
    public var reason: String? {
        details.lazy.compactMap { $0.kind.flatMap { if case .errorInfo(let e) = $0 { e.reason } else { nil } } }.first
    }

    /// The correlation id of an `INTERNAL` error, to find it in the service's log.
    public var correlationID: String? {
        details.lazy.compactMap { $0.kind.flatMap { if case .debugInfo(let d) = $0 { d.correlationID } else { nil } } }.first
    }

    /// The wire status.
    public var status: Caremesh_Rpc_V1_Status {
        var s = Caremesh_Rpc_V1_Status()
        s.code = code
        s.message = message
        s.details = details
        return s
    }

    public init(status: Caremesh_Rpc_V1_Status) {
        self.init(status.code, status.message, details: status.details)
    }
}

/// A domain error that knows its wire status: the one place where a domain failure turns
/// into a code (like grpc-swift-2's `RPCErrorConvertible`).
public protocol RPCErrorConvertible: Error {
    var rpcError: RPCError { get }
}

/// An error that can say what kind it is without saying anything about the data involved
/// (a SQLSTATE, say): logged beside the correlation id of an `INTERNAL` answer.
public protocol DiagnosticCode: Error {
    var diagnosticCode: String { get }
}

extension RPCError {
    /// What kind of error `error` is, safe to log or store: its diagnostic code (a SQLSTATE,
    /// say), its status code's name, or its type, never its text (which may carry PHI).
    public static func loggableKind(of error: any Error) -> String {
        (error as? any DiagnosticCode)?.diagnosticCode ?? (error as? RPCError)?.code.name ?? String(reflecting: type(of: error))
    }
}

extension RPCError {
    /// Maps anything a handler threw to the status the caller sees. `RPCError` and
    /// `RPCErrorConvertible` pass through; cancellation is `CANCELLED`; everything else is
    /// `INTERNAL` with a fresh correlation id (returned so the caller can log the cause with it).
    public init(mapping error: any Error, correlationID: @autoclosure () -> String = RPCError.newCorrelationID()) {
        switch error {
        case let e as RPCError: self = e
        case let e as any RPCErrorConvertible: self = e.rpcError
        case is CancellationError: self = RPCError(.cancelled, "the call was cancelled")
        default:
            var d = ErrorDetail()
            let id = correlationID()
            d.debugInfo.correlationID = id
            self = RPCError(.internal, "internal error (correlation id \(id))", details: [d])
        }
    }

    /// A short random id that ties an `INTERNAL` answer to its log line.
    public static func newCorrelationID() -> String {
        var g = SystemRandomNumberGenerator()
        return String(g.next() as UInt64, radix: 16)
    }

    public static func detail(reason: String, domain: String, metadata: [String: String] = [:]) -> ErrorDetail {
        var d = ErrorDetail()
        d.errorInfo.reason = reason
        d.errorInfo.domain = domain
        d.errorInfo.metadata = metadata
        return d
    }

    /// The metadata of the error's `ErrorInfo` (empty without one).
    public var infoMetadata: [String: String] {
        details.first { $0.errorInfo.reason != "" }?.errorInfo.metadata ?? [:]
    }

    static func retryDetail(ms: UInt32) -> ErrorDetail {
        var d = ErrorDetail()
        d.retryInfo.retryAfterMs = ms
        return d
    }

    /// An error decided by the router, with its machine-readable reason.
    public static func router(_ code: StatusCode, _ message: String, reason: String, retryAfterMs: UInt32? = nil) -> RPCError {
        var details = [detail(reason: reason, domain: "router")]
        if let ms = retryAfterMs { details.append(retryDetail(ms: ms)) }
        return RPCError(code, message, details: details)
    }
}

extension StatusCode {
    /// "NOT_FOUND" for `.notFound`: the canonical name, as the CLI and the HTTP edge print it.
    public var name: String {
        switch self {
        case .ok: "OK"
        case .cancelled: "CANCELLED"
        case .unknown: "UNKNOWN"
        case .invalidArgument: "INVALID_ARGUMENT"
        case .deadlineExceeded: "DEADLINE_EXCEEDED"
        case .notFound: "NOT_FOUND"
        case .alreadyExists: "ALREADY_EXISTS"
        case .permissionDenied: "PERMISSION_DENIED"
        case .resourceExhausted: "RESOURCE_EXHAUSTED"
        case .failedPrecondition: "FAILED_PRECONDITION"
        case .aborted: "ABORTED"
        case .outOfRange: "OUT_OF_RANGE"
        case .unimplemented: "UNIMPLEMENTED"
        case .internal: "INTERNAL"
        case .unavailable: "UNAVAILABLE"
        case .dataLoss: "DATA_LOSS"
        case .unauthenticated: "UNAUTHENTICATED"
        case .UNRECOGNIZED(let n): "CODE_\(n)"
        }
    }

    /// The HTTP status of google/rpc/code.proto's mapping (WIRE.md's HTTP edge).
    public var httpStatus: Int {
        switch self {
        case .ok: 200
        case .cancelled: 499
        case .invalidArgument, .outOfRange, .failedPrecondition: 400
        case .deadlineExceeded: 504
        case .notFound: 404
        case .alreadyExists, .aborted: 409
        case .permissionDenied: 403
        case .resourceExhausted: 429
        case .unimplemented: 501
        case .unavailable: 503
        case .unauthenticated: 401
        default: 500
        }
    }
}

extension ResponseHeader {
    /// A reply header carrying an error.
    public init(requestID: UInt64, error: RPCError) {
        self.init()
        self.requestID = requestID
        self.status = error.status
    }

    /// A reply header for success.
    public init(requestID: UInt64) {
        self.init()
        self.requestID = requestID
    }

    /// The error this header reports, or nil for OK.
    public var error: RPCError? { status.code == .ok ? nil : RPCError(status: status) }
}

extension SwiftProtobuf.Message {
    /// Binary serialization as Data (the untyped form is ambiguous in swift-protobuf 1.39).
    @inline(__always) public func wireBytes() -> Data {
        // Serializing a message we built cannot fail (no required fields in proto3).
        (try? serializedBytes() as Data) ?? Data()
    }
}

/// Collects what is wrong with a request, field by field, so the caller hears about every bad
/// field at once: `INVALID_ARGUMENT` with a `BadRequest` naming each.
public struct FieldViolations: Sendable {
    public private(set) var violations: [Caremesh_Rpc_V1_FieldViolation] = []

    public init() {}

    public mutating func add(_ field: String, _ description: String) {
        var v = Caremesh_Rpc_V1_FieldViolation()
        v.field = field
        v.description_p = description
        violations.append(v)
    }

    /// Adds `description` for `field` unless `ok`.
    public mutating func check(_ ok: Bool, _ field: String, _ description: @autoclosure () -> String) {
        if !ok { add(field, description()) }
    }

    public var isEmpty: Bool { violations.isEmpty }

    /// A request's `limit`: 0 means `defaultValue`; more than `max` is a violation of `field`.
    public mutating func limit(_ value: UInt32, default defaultValue: Int, max: Int = 1_000, field: String = "limit") -> Int {
        check(value <= max, field, "must be at most \(max)")
        return value == 0 ? defaultValue : Int(value)
    }

    /// A `BadRequest` detail naming every field.
    public var detail: ErrorDetail {
        var d = ErrorDetail()
        d.badRequest.fieldViolations = violations
        return d
    }

    /// Throws `INVALID_ARGUMENT` if anything was added.
    public func throwIfAny() throws(RPCError) {
        guard !violations.isEmpty else { return }
        let summary = violations.map { "\($0.field): \($0.description_p)" }.joined(separator: "; ")
        throw RPCError(.invalidArgument, summary, details: [detail])
    }
}

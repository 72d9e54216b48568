import CZMQ
import Foundation

/// A CurveZMQ key (Curve25519, 32 bytes), written as operators see it: 40 characters of Z85,
/// as `curve_keygen` prints and every ZeroMQ binding reads.
public struct CurveKey: Sendable, Hashable, CustomStringConvertible {
    /// The 32 raw bytes.
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }

    /// Reads 40 characters of Z85 (surrounding white space ignored); nil for anything else.
    public init?(z85 text: some StringProtocol) {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.utf8.count == 40 else { return nil }
        var out = [UInt8](repeating: 0, count: 32)
        let decoded = trimmed.withCString { zmq_z85_decode(&out, $0) }
        guard decoded != nil else { return nil }
        bytes = out
    }

    /// The key in Z85 (40 characters).
    public var z85: String {
        var buf = [CChar](repeating: 0, count: 41)
        _ = bytes.withUnsafeBufferPointer { zmq_z85_encode(&buf, $0.baseAddress, 32) }
        return String(decoding: buf.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// A short name for logs and the router's tables: the first 12 characters of the Z85 text
    /// (public keys only: never print a secret key).
    public var id: String { String(z85.prefix(12)) }

    public var description: String { id }
}

/// A CurveZMQ key pair: the public key others are told, the secret key this process keeps.
public struct CurveKeyPair: Sendable, Equatable {
    public let publicKey: CurveKey
    public let secretKey: CurveKey

    /// A fresh pair from libsodium (through libzmq).
    public static func generate() -> CurveKeyPair {
        var pub = [CChar](repeating: 0, count: 41), sec = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&pub, &sec) == 0 else { fatalError("zmq_curve_keypair failed: \(ZMQError.last)") }
        func key(_ c: [CChar]) -> CurveKey { CurveKey(z85: String(decoding: c.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self))! }
        return CurveKeyPair(publicKey: key(pub), secretKey: key(sec))
    }

    /// The pair of a secret key (its public key derived from it).
    public init(secretKey: CurveKey) {
        var pub = [CChar](repeating: 0, count: 41)
        let rc = secretKey.z85.withCString { zmq_curve_public(&pub, $0) }
        precondition(rc == 0, "zmq_curve_public failed: \(ZMQError.last)")
        self.init(publicKey: CurveKey(z85: String(decoding: pub.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self))!,
                  secretKey: secretKey)
    }

    public init(publicKey: CurveKey, secretKey: CurveKey) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// Whether this libzmq was built with CurveZMQ (Debian's is, with libsodium).
    public static var isAvailable: Bool { zmq_has("curve") == 1 }
}

extension ZMQSocket {
    /// Makes this socket a CurveZMQ server with `keys`: every connection is encrypted, and the
    /// ZAP handler of its context (which must be bound first) decides who may connect, per
    /// `zapDomain`.
    public func becomeCurveServer(_ keys: CurveKeyPair, zapDomain: String) throws(ZMQError) {
        try setOption(ZMQ_CURVE_SERVER, 1)
        try setOption(ZMQ_CURVE_SECRETKEY, bytes: keys.secretKey.bytes)
        try setOption(ZMQ_ZAP_DOMAIN, bytes: Array(zapDomain.utf8))
    }

    /// Makes this socket a CurveZMQ client of the server whose public key is `server`,
    /// known as `own` (call before `connect`).
    public func becomeCurveClient(of server: CurveKey, own: CurveKeyPair) throws(ZMQError) {
        try setOption(ZMQ_CURVE_SERVERKEY, bytes: server.bytes)
        try setOption(ZMQ_CURVE_PUBLICKEY, bytes: own.publicKey.bytes)
        try setOption(ZMQ_CURVE_SECRETKEY, bytes: own.secretKey.bytes)
    }
}

import Crypto
import CryptoExtras
import Foundation

/// Password hashing with scrypt (memory-hard), in a PHC-style string that carries its own
/// parameters and salt, so they can be raised later and old hashes still verify:
/// `$scrypt$ln=17,r=8,p=1$<salt, base64>$<hash, base64>`.
///
/// Defaults follow OWASP's password storage cheat sheet for scrypt: N = 2^17, r = 8, p = 1
/// (128 MiB per hash), a 16-byte random salt per password, a 32-byte hash.
public struct PasswordHasher: Sendable {
    public struct Parameters: Sendable, Equatable {
        /// log2 of N (the CPU/memory cost).
        public var logN: Int
        public var r: Int
        public var p: Int

        public static let owasp = Parameters(logN: 17, r: 8, p: 1)

        public init(logN: Int, r: Int, p: Int) {
            self.logN = logN
            self.r = r
            self.p = p
        }

        /// Whether these are at least as strong as `other`.
        public func atLeast(_ other: Parameters) -> Bool { logN >= other.logN && r >= other.r && p >= other.p }
    }

    public let parameters: Parameters

    public init(parameters: Parameters = .owasp) {
        self.parameters = parameters
    }

    public enum Failure: Error, Equatable {
        /// The stored string is not one this hasher wrote.
        case malformed
    }

    /// A new hash of `password` with a fresh salt.
    public func hash(_ password: String) throws -> String {
        var salt = [UInt8](repeating: 0, count: 16)
        var g = SystemRandomNumberGenerator()
        for i in salt.indices { salt[i] = g.next() }
        let key = try Self.derive(password, salt: salt, parameters)
        return "$scrypt$ln=\(parameters.logN),r=\(parameters.r),p=\(parameters.p)$\(Data(salt).base64EncodedString())$\(Data(key).base64EncodedString())"
    }

    /// Whether `password` matches `stored` (compared in constant time).
    public func verify(_ password: String, against stored: String) throws -> Bool {
        let (params, salt, expected) = try Self.parse(stored)
        let key = try Self.derive(password, salt: salt, params, length: expected.count)
        return Self.constantTimeEqual(key, expected)
    }

    /// Spends the same work as `verify` on a real hash, for an account that does not exist:
    /// login then answers in the same time for an unknown email as for a wrong password.
    public func verifyNothing(_ password: String) {
        _ = try? Self.derive(password, salt: [UInt8](repeating: 0, count: 16), parameters)
    }

    /// Whether `stored` was made with weaker parameters than this hasher's (rehash on login).
    public func needsRehash(_ stored: String) -> Bool {
        guard let (params, _, _) = try? Self.parse(stored) else { return true }
        return !params.atLeast(parameters)
    }

    // MARK: - Plumbing

    static func derive(_ password: String, salt: [UInt8], _ p: Parameters, length: Int = 32) throws -> [UInt8] {
        let key = try KDF.Scrypt.deriveKey(from: Array(password.utf8), salt: salt, outputByteCount: length,
                                           rounds: 1 << p.logN, blockSize: p.r, parallelism: p.p,
                                           maxMemory: 129 * p.r * (1 << p.logN) * p.p + 1 << 20)
        return key.withUnsafeBytes { Array($0) }
    }

    static func parse(_ stored: String) throws(Failure) -> (Parameters, [UInt8], [UInt8]) {
        let parts = stored.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[0].isEmpty, parts[1] == "scrypt" else { throw .malformed }
        var values: [String: Int] = [:]
        for kv in parts[2].split(separator: ",") {
            let pair = kv.split(separator: "=")
            guard pair.count == 2, let v = Int(pair[1]) else { throw .malformed }
            values[String(pair[0])] = v
        }
        guard let logN = values["ln"], let r = values["r"], let p = values["p"],
              (1...24).contains(logN), (1...32).contains(r), (1...16).contains(p),
              let salt = Data(base64Encoded: String(parts[3])), salt.count >= 8,
              let hash = Data(base64Encoded: String(parts[4])), (16...64).contains(hash.count) else { throw .malformed }
        return (Parameters(logN: logN, r: r, p: p), Array(salt), Array(hash))
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in a.indices { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}

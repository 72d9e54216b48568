import CareMeshRPC
import CareMeshStore
import Crypto
import Foundation

/// Identity's settings, from the environment. Every key is optional but the key-encryption key.
public struct IdentityConfiguration: Sendable {
    /// Seals the signing keys' private halves in the database (32 bytes, base64):
    /// `IDENTITY_KEY_ENCRYPTION_KEY`. Required: identity refuses to start without it.
    public var keyEncryptionKey: SymmetricKey
    /// Derives a rotated refresh token's successor from the presented token (HMAC-SHA256 under a
    /// key derived from the key-encryption key), so a replay inside the grace window is answered
    /// with the same successor instead of a second chain.
    public var refreshSuccessorKey: SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: keyEncryptionKey, info: Data("caremesh identity refresh successor v1".utf8),
                               outputByteCount: 32)
    }
    /// Keys the hashes of emailed account codes (password reset, email verification), derived
    /// as the successor key is.
    public var accountCodeKey: SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: keyEncryptionKey, info: Data("caremesh identity account codes v1".utf8),
                               outputByteCount: 32)
    }
    /// Access-token life (`IDENTITY_ACCESS_TOKEN_TTL_S`, 900).
    public var accessTokenTTL: Int64 = 900
    /// Refresh-token life (`IDENTITY_REFRESH_TOKEN_TTL_S`, 30 days).
    public var refreshTokenTTL: Int64 = 30 * 86_400
    /// How long a rotated refresh token may still be presented, for concurrent refreshes
    /// (`IDENTITY_REFRESH_REUSE_GRACE_S`, 10). Later use revokes the family.
    public var refreshReuseGrace: Int64 = 10
    /// Failed sign-ins within `lockoutWindow` that lock the account for `lockoutDuration`
    /// (`IDENTITY_LOCKOUT_THRESHOLD` 5, `IDENTITY_LOCKOUT_WINDOW_S` 900, `IDENTITY_LOCKOUT_DURATION_S` 900).
    public var lockoutThreshold = 5
    public var lockoutWindow: Int64 = 900
    public var lockoutDuration: Int64 = 900
    /// How long a signing key signs before the next takes over (`IDENTITY_KEY_ROTATION_S`, 30 days).
    public var keyRotation: Int64 = 30 * 86_400
    /// How long a new key is published before it signs, so every router knows it first
    /// (`IDENTITY_KEY_PUBLISH_LEAD_S`, 600).
    public var keyPublishLead: Int64 = 600
    /// scrypt cost, log2 N (`IDENTITY_SCRYPT_LN`, 17: OWASP's N = 2^17, r = 8, p = 1). Lower it
    /// only for tests.
    public var passwordParameters = PasswordHasher.Parameters.owasp
    /// Password hashes computed at once (`IDENTITY_HASH_CONCURRENCY`, the core count): each
    /// takes 128 MiB, so a burst of sign-ins queues instead of exhausting memory.
    public var hashConcurrency = max(1, ProcessInfo.processInfo.activeProcessorCount)
    /// The SHA-256 of each service's secret (`DISPATCH_SERVICE_SECRET`, `ALERTS_SERVICE_SECRET`,
    /// `MESSAGING_SERVICE_SECRET`; at least 32 characters): who may get a service token. A
    /// service without one cannot sign in.
    public var serviceSecrets: [String: SHA256Digest] = [:]

    /// The services that sign in with a secret.
    public static let servicesWithSecrets = Provisioner.servicesWithSecrets

    public enum Failure: Error, CustomStringConvertible {
        case missingKeyEncryptionKey
        case badValue(String)

        public var description: String {
            switch self {
            case .missingKeyEncryptionKey:
                "IDENTITY_KEY_ENCRYPTION_KEY is not set: give 32 random bytes in base64 (e.g. `openssl rand -base64 32`)"
            case .badValue(let key): "\(key) is not a valid value"
            }
        }
    }

    public init(keyEncryptionKey: SymmetricKey) {
        self.keyEncryptionKey = keyEncryptionKey
    }

    public init(environment env: [String: String]) throws(Failure) {
        guard let kek = env["IDENTITY_KEY_ENCRYPTION_KEY"], !kek.isEmpty else { throw .missingKeyEncryptionKey }
        guard let raw = Data(base64Encoded: kek), raw.count == 32 else { throw .badValue("IDENTITY_KEY_ENCRYPTION_KEY") }
        self.init(keyEncryptionKey: SymmetricKey(data: raw))
        func int(_ key: String, _ range: ClosedRange<Int64>) throws(Failure) -> Int64? {
            guard let text = env[key] else { return nil }
            guard let v = Int64(text), range.contains(v) else { throw .badValue(key) }
            return v
        }
        if let v = try int("IDENTITY_ACCESS_TOKEN_TTL_S", 10...86_400) { accessTokenTTL = v }
        if let v = try int("IDENTITY_REFRESH_TOKEN_TTL_S", 60...(400 * 86_400)) { refreshTokenTTL = v }
        if let v = try int("IDENTITY_REFRESH_REUSE_GRACE_S", 0...300) { refreshReuseGrace = v }
        if let v = try int("IDENTITY_LOCKOUT_THRESHOLD", 1...1000) { lockoutThreshold = Int(v) }
        if let v = try int("IDENTITY_LOCKOUT_WINDOW_S", 1...86_400) { lockoutWindow = v }
        if let v = try int("IDENTITY_LOCKOUT_DURATION_S", 1...(30 * 86_400)) { lockoutDuration = v }
        if let v = try int("IDENTITY_KEY_ROTATION_S", 60...(365 * 86_400)) { keyRotation = v }
        if let v = try int("IDENTITY_KEY_PUBLISH_LEAD_S", 0...86_400) { keyPublishLead = v }
        if let v = try int("IDENTITY_SCRYPT_LN", 10...20) { passwordParameters.logN = Int(v) }
        if let v = try int("IDENTITY_HASH_CONCURRENCY", 1...256) { hashConcurrency = Int(v) }
        for service in Self.servicesWithSecrets {
            let key = ServiceCredentials.variable(for: service)
            guard let secret = env[key], !secret.isEmpty else { continue }
            guard secret.utf8.count >= 32 else { throw .badValue(key) }
            serviceSecrets[service] = SHA256.hash(data: Data(secret.utf8))
        }
    }
}

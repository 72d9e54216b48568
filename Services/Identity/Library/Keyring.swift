import CareMeshAuth
import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Crypto
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// The Ed25519 keys that sign access tokens, kept in `signing_keys` so every identity
/// instance signs with the same key and every router can verify it.
///
/// A key is published (by `GetSigningKeys`) from the moment it is created and signs from
/// `active_from`, `keyPublishLead` later, so routers, which refresh their copy every minute,
/// know a key before any token carries it. Each key signs for `keyRotation`, then the next
/// takes over; it stays published until the last token it signed has expired. Private keys are
/// stored sealed (ChaCha20-Poly1305 under the key-encryption key, bound to their kid).
final class Keyring: Sendable {
    struct Key: Sendable {
        var kid: String
        var publicKey: Curve25519.Signing.PublicKey
        var privateKey: Curve25519.Signing.PrivateKey
        var activeFrom: Int64
        var retiresAt: Int64
    }

    private let configuration: IdentityConfiguration
    private let store: Store
    private let logger: Logger
    private let cache = Mutex<(keys: [Key], loadedAt: UInt64)>(([], 0))
    /// How long instances may differ on the key set before they reload it.
    static let reloadIntervalNs: UInt64 = 60_000_000_000

    init(configuration: IdentityConfiguration, store: Store, logger: Logger) {
        self.configuration = configuration
        self.store = store
        self.logger = logger
    }

    /// The key to sign with now.
    func signingKey() async throws -> Key {
        let now = Self.epochNow()
        if let key = Self.signing(in: cache.withLock({ fresh($0) }) ?? [], at: now) { return key }
        let keys = try await reload()
        guard let key = Self.signing(in: keys, at: now) else {
            throw RPCError(mapping: KeyringFailure.noSigningKey)
        }
        return key
    }

    /// Every key a verifier should accept now (pending ones included).
    func publishedKeys() async throws -> [Key] {
        if let keys = cache.withLock({ fresh($0) }) { return keys }
        return try await reload()
    }

    private func fresh(_ c: (keys: [Key], loadedAt: UInt64)) -> [Key]? {
        c.loadedAt != 0 && DispatchTime.now().uptimeNanoseconds - c.loadedAt < Self.reloadIntervalNs ? c.keys : nil
    }

    /// Whether a key is due, and how long before it signs: the very first key at once (no
    /// verifier can be out of step yet); the next one `publishLead` ahead once the signing
    /// key's rotation is that close and no key is pending; nil otherwise.
    static func leadForNewKey(_ keys: [Key], now: Int64, rotation: Int64, publishLead: Int64) -> Int64? {
        guard !keys.contains(where: { $0.activeFrom > now }) else { return nil }
        guard let signing = keys.filter({ $0.activeFrom <= now }).max(by: { $0.activeFrom < $1.activeFrom }) else { return 0 }
        return signing.activeFrom + rotation - publishLead <= now ? publishLead : nil
    }

    static func signing(in keys: [Key], at now: Int64) -> Key? {
        keys.filter { $0.activeFrom <= now && now < $0.retiresAt }.max { $0.activeFrom < $1.activeFrom }
            ?? keys.filter { now < $0.retiresAt }.min { $0.activeFrom < $1.activeFrom }
    }

    /// Loads the live keys, creating the next one when it is due (under a transaction
    /// advisory lock, so two instances never both create one).
    @discardableResult
    func reload() async throws -> [Key] {
        let configuration = self.configuration
        let keys = try await store.withTransaction { c in
            try await c.lockForTransaction("identity.signing_keys", logger: self.logger)
            var keys = try await self.load(c)
            if let lead = Self.leadForNewKey(keys, now: Self.epochNow(), rotation: configuration.keyRotation,
                                             publishLead: configuration.keyPublishLead) {
                let life = configuration.keyRotation + configuration.accessTokenTTL + configuration.keyPublishLead
                keys.append(try await self.create(c, lead: lead, life: life))
            }
            return keys
        }
        cache.withLock { $0 = (keys, DispatchTime.now().uptimeNanoseconds) }
        return keys
    }

    private func load(_ c: PostgresConnection) async throws -> [Key] {
        let rows = try await c.query("""
            SELECT kid, public_key, private_key_sealed, extract(epoch FROM active_from)::bigint,
                   extract(epoch FROM retires_at)::bigint
            FROM signing_keys WHERE retires_at > now() ORDER BY active_from
            """, logger: logger)
        var keys: [Key] = []
        for try await (kid, pub, sealed, from, retires) in rows.decode((String, ByteBuffer, ByteBuffer, Int64, Int64).self) {
            do {
                let box = try ChaChaPoly.SealedBox(combined: Data(buffer: sealed))
                let raw = try ChaChaPoly.open(box, using: configuration.keyEncryptionKey, authenticating: Data(kid.utf8))
                let privateKey = try Curve25519.Signing.PrivateKey(rawRepresentation: raw)
                guard privateKey.publicKey.rawRepresentation == Data(buffer: pub) else { throw KeyringFailure.mismatch }
                keys.append(Key(kid: kid, publicKey: privateKey.publicKey, privateKey: privateKey,
                                activeFrom: from, retiresAt: retires))
            } catch {
                // A key sealed under another key-encryption key: never sign with it, say so once.
                logger.error("a signing key cannot be opened with IDENTITY_KEY_ENCRYPTION_KEY; skipped",
                             metadata: ["kid": "\(kid)"])
            }
        }
        return keys
    }

    /// A new key, signing `lead` seconds from now (the database's clock) for `life` seconds.
    private func create(_ c: PostgresConnection, lead: Int64, life: Int64) async throws -> Key {
        let privateKey = Curve25519.Signing.PrivateKey()
        let kid = Base64URL.encode(SymmetricKey(size: .bits128).withUnsafeBytes { Data($0) })
        let sealed = try ChaChaPoly.seal(privateKey.rawRepresentation, using: configuration.keyEncryptionKey,
                                         authenticating: Data(kid.utf8)).combined
        let pub = ByteBuffer(bytes: privateKey.publicKey.rawRepresentation)
        let box = ByteBuffer(bytes: sealed)
        let rows = try await c.query("""
            INSERT INTO signing_keys (kid, algorithm, public_key, private_key_sealed, active_from, retires_at)
            VALUES (\(kid), 'EdDSA', \(pub), \(box), now() + make_interval(secs => \(Double(lead))),
                    now() + make_interval(secs => \(Double(lead + life))))
            RETURNING extract(epoch FROM active_from)::bigint, extract(epoch FROM retires_at)::bigint
            """, logger: logger)
        var key = Key(kid: kid, publicKey: privateKey.publicKey, privateKey: privateKey, activeFrom: 0, retiresAt: 0)
        for try await (from, retires) in rows.decode((Int64, Int64).self) {
            key.activeFrom = from
            key.retiresAt = retires
        }
        logger.info("signing key created", metadata: ["kid": "\(kid)", "active_from": "\(key.activeFrom)"])
        return key
    }

    static func epochNow() -> Int64 { Int64(Date().timeIntervalSince1970) }

    /// `GetSigningKeys`' answer: JWK-shaped public keys.
    func signingKeysResponse() async throws -> Caremesh_Identity_V1_GetSigningKeysResponse {
        var response = Caremesh_Identity_V1_GetSigningKeysResponse()
        response.issuer = AccessToken.issuer
        response.audience = AccessToken.audience
        response.maxAgeSeconds = 60
        for key in try await publishedKeys() {
            var k = Caremesh_Identity_V1_SigningKey()
            k.kid = key.kid
            k.kty = "OKP"
            k.crv = "Ed25519"
            k.alg = AccessToken.algorithm
            k.x = Base64URL.encode(key.publicKey.rawRepresentation)
            k.activeFrom = .init(seconds: key.activeFrom)
            k.retiresAt = .init(seconds: key.retiresAt)
            response.keys.append(k)
        }
        return response
    }
}

enum KeyringFailure: Error {
    case noSigningKey
    case mismatch
}

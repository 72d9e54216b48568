import CareMeshContracts
import CareMeshRPC
import Crypto
import Foundation

/// The router's view of identity's signing keys, and a cache of tokens already verified.
///
/// A client sends the same access token with every call for its 15-minute life, so the
/// signature is checked once and later calls cost a dictionary lookup (as Envoy's jwt_authn
/// caches verified tokens). The cache is keyed by the whole token, signature included, so a
/// forged token can never hit it; it is emptied when the key set changes and bounded in size.
public struct TokenVerifier: Sendable {
    public private(set) var keys: [String: Curve25519.Signing.PublicKey] = [:]
    private var cache: [String: AccessClaims] = [:]
    public let cacheLimit: Int
    public let leeway: Int64

    public init(cacheLimit: Int = 50_000, leeway: Int64 = 30) {
        self.cacheLimit = cacheLimit
        self.leeway = leeway
    }

    /// Replaces the key set (from `GetSigningKeys`); forgets every cached verification.
    public mutating func setKeys(_ keys: [String: Curve25519.Signing.PublicKey]) {
        let old = Set(self.keys.keys), new = Set(keys.keys)
        let sameKeys = old == new && keys.allSatisfy { self.keys[$0.key]?.rawRepresentation == $0.value.rawRepresentation }
        self.keys = keys
        if !sameKeys { cache.removeAll(keepingCapacity: true) }
    }

    /// The caller `token` proves at `now` (seconds since the Unix epoch).
    public mutating func verify(_ token: String, now: Int64) throws(AccessToken.Failure) -> AccessClaims {
        if let hit = cache[token] {
            guard now < hit.exp + leeway else {
                cache[token] = nil
                throw .expired
            }
            return hit
        }
        let claims = try AccessToken.verify(token, keys: keys, now: now, leeway: leeway)
        if cache.count >= cacheLimit { evictExpired(now: now) }
        if cache.count >= cacheLimit { cache.removeAll(keepingCapacity: true) }
        cache[token] = claims
        return claims
    }

    public var cachedCount: Int { cache.count }

    private mutating func evictExpired(now: Int64) {
        cache = cache.filter { now < $0.value.exp + leeway }
    }

    /// Public keys from `GetSigningKeys`' JWK-shaped answer (keys of other types are skipped).
    public static func keys(from response: Caremesh_Identity_V1_GetSigningKeysResponse) -> [String: Curve25519.Signing.PublicKey] {
        var out: [String: Curve25519.Signing.PublicKey] = [:]
        for k in response.keys where k.kty == "OKP" && k.crv == "Ed25519" && k.alg == AccessToken.algorithm {
            if let raw = Base64URL.decode(k.x), let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw) {
                out[k.kid] = key
            }
        }
        return out
    }
}

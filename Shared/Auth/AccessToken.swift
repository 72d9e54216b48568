import CareMeshContracts
import CareMeshRPC
import Crypto
import Foundation

/// What an access token says (RFC 7519 registered claims plus CareMesh's own).
public struct AccessClaims: Codable, Sendable, Equatable {
    /// Issuer and audience: tokens of another deployment are refused.
    public var iss: String
    public var aud: String
    /// The user id.
    public var sub: String
    /// Lowercase role names ("volunteer", "admin", …).
    public var roles: [String]
    /// The sign-in session (refresh-token family) it belongs to.
    public var sid: String
    /// Issued at, not before, expires (seconds since the Unix epoch).
    public var iat: Int64
    public var nbf: Int64
    public var exp: Int64
    /// Unique per token.
    public var jti: String
    /// The user's token version when it was issued (absent in a service's token, and in tokens
    /// from before versions: read as 0). The router refuses it once identity announces a later one.
    public var tv: Int64?

    public init(iss: String, aud: String, sub: String, roles: [String], sid: String, iat: Int64, nbf: Int64,
                exp: Int64, jti: String, tv: Int64? = nil) {
        self.tv = tv
        self.iss = iss
        self.aud = aud
        self.sub = sub
        self.roles = roles
        self.sid = sid
        self.iat = iat
        self.nbf = nbf
        self.exp = exp
        self.jti = jti
    }

    /// The caller the router stamps on a request that carries this token.
    public var caller: Caremesh_Rpc_V1_Caller {
        var c = Caremesh_Rpc_V1_Caller()
        c.subject = sub
        c.roles = roles
        c.sessionID = sid
        return c
    }
}

/// Compact JWS (RFC 7515) with EdDSA over Ed25519 (RFC 8037) only: the algorithm is fixed by
/// the key type, so `alg: none`, HMAC-with-the-public-key and every other confusion is refused
/// before any signature work.
public enum AccessToken {
    public static let algorithm = "EdDSA"
    public static let issuer = "caremesh-identity"
    public static let audience = "caremesh"

    struct Header: Codable {
        var alg: String
        var typ: String?
        var kid: String?
    }

    /// `header.payload.signature`, signed with `key` and naming `kid`.
    public static func sign(_ claims: AccessClaims, kid: String, key: Curve25519.Signing.PrivateKey) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let header = try encoder.encode(Header(alg: algorithm, typ: "JWT", kid: kid))
        let payload = try encoder.encode(claims)
        let signingInput = Base64URL.encode(header) + "." + Base64URL.encode(payload)
        let signature = try key.signature(for: Data(signingInput.utf8))
        return signingInput + "." + Base64URL.encode(signature)
    }

    /// Why a token was refused. The router answers each with UNAUTHENTICATED (and a message
    /// that does not help a forger); the reason goes to metrics and debug logs.
    public enum Failure: Error, Equatable, Sendable {
        case malformed
        case algorithmNotAllowed
        case unknownKey(kid: String)
        case badSignature
        case wrongIssuerOrAudience
        case expired
        case notYetValid
    }

    /// Checks `token` against `keys` (kid → public key) at `now` (seconds), allowing `leeway`
    /// seconds of clock skew, and returns its claims.
    public static func verify(_ token: String, keys: [String: Curve25519.Signing.PublicKey], now: Int64,
                              leeway: Int64 = 30) throws(Failure) -> AccessClaims {
        let utf8 = Array(token.utf8)
        guard utf8.count < 8192,
              let firstDot = utf8.firstIndex(of: UInt8(ascii: ".")),
              let lastDot = utf8.lastIndex(of: UInt8(ascii: ".")), lastDot > firstDot,
              !utf8[(firstDot + 1)..<lastDot].contains(UInt8(ascii: ".")),
              let headerBytes = Base64URL.decode(utf8[..<firstDot]),
              let header = try? JSONDecoder().decode(Header.self, from: headerBytes)
        else { throw .malformed }
        guard header.alg == algorithm else { throw .algorithmNotAllowed }
        guard let kid = header.kid, let key = keys[kid] else { throw .unknownKey(kid: header.kid ?? "") }
        guard let signature = Base64URL.decode(utf8[(lastDot + 1)...]), signature.count == 64 else { throw .malformed }
        guard key.isValidSignature(signature, for: Data(utf8[..<lastDot])) else { throw .badSignature }
        guard let payload = Base64URL.decode(utf8[(firstDot + 1)..<lastDot]),
              let claims = try? JSONDecoder().decode(AccessClaims.self, from: payload),
              !claims.sub.isEmpty
        else { throw .malformed }
        guard claims.iss == issuer, claims.aud == audience else { throw .wrongIssuerOrAudience }
        guard now < claims.exp + leeway else { throw .expired }
        guard claims.nbf <= now + leeway, claims.iat <= now + leeway else { throw .notYetValid }
        return claims
    }
}

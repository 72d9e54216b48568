import CareMeshRPC
import Foundation

/// A JSON Web Signature in compact form (`header.claims.signature`, each base64url without
/// padding; RFC 7515), as both push providers take them: Google's service-account assertion
/// (RS256) and Apple's provider token (ES256). Signing is the caller's (`sign` gets the
/// signing input); `parse` splits a token for whoever checks one (the provider sandbox).
public enum CompactJWS {
    /// `header` and `claims` encoded as JSON, signed by `sign`.
    public static func make(header: some Encodable, claims: some Encodable, sign: (Data) throws -> Data) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let input = Base64URL.encode(try encoder.encode(header)) + "." + Base64URL.encode(try encoder.encode(claims))
        return input + "." + Base64URL.encode(try sign(Data(input.utf8)))
    }

    public struct Parsed: Sendable {
        /// What was signed: `header.claims` as sent.
        public var signingInput: Data
        public var header: Data
        public var claims: Data
        public var signature: Data
    }

    /// The parts of `token`, or nil when it is not three base64url parts.
    public static func parse(_ token: String) -> Parsed? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let header = Base64URL.decode(Array(parts[0].utf8)), let claims = Base64URL.decode(Array(parts[1].utf8)),
              let signature = Base64URL.decode(Array(parts[2].utf8))
        else { return nil }
        return Parsed(signingInput: Data("\(parts[0]).\(parts[1])".utf8), header: header, claims: claims, signature: signature)
    }
}

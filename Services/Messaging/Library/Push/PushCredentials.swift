import Crypto
import CryptoExtras
import Foundation

/// A Google service account's key file, as the Cloud console downloads it: what FCM HTTP v1
/// needs to sign its OAuth 2.0 assertion (RS256 with `private_key`, `kid` = `private_key_id`,
/// `iss` = `client_email`, `aud` = `token_uri`).
public struct FcmServiceAccount: Codable, Sendable, Equatable {
    public var type = "service_account"
    public var projectID: String
    public var privateKeyID: String
    /// PEM (PKCS#8, "BEGIN PRIVATE KEY").
    public var privateKey: String
    public var clientEmail: String
    public var tokenURI: String

    enum CodingKeys: String, CodingKey {
        case type, projectID = "project_id", privateKeyID = "private_key_id", privateKey = "private_key", clientEmail = "client_email"
        case tokenURI = "token_uri"
    }

    public init(projectID: String, privateKeyID: String, privateKey: String, clientEmail: String, tokenURI: String) {
        self.projectID = projectID
        self.privateKeyID = privateKeyID
        self.privateKey = privateKey
        self.clientEmail = clientEmail
        self.tokenURI = tokenURI
    }

    /// A new account with a fresh 2048-bit key (the provider sandbox's, and `caremesh up`'s).
    public static func generate(projectID: String, clientEmail: String, tokenURI: String) throws -> Self {
        let key = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let id = SHA256.hash(data: key.publicKey.derRepresentation).prefix(20).map { String(format: "%02x", $0) }.joined()
        return Self(projectID: projectID, privateKeyID: id, privateKey: key.pkcs8PEMRepresentation, clientEmail: clientEmail,
                    tokenURI: tokenURI)
    }

    public func signingKey() throws -> _RSA.Signing.PrivateKey { try _RSA.Signing.PrivateKey(pemRepresentation: privateKey) }

    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self)
    }
}

/// An APNs authentication key (the `.p8` file from Apple's developer account) and what goes
/// with it: its 10-character key id, the team id, and the app's bundle id (the `apns-topic`).
public struct ApnsKey: Sendable, Equatable {
    public var keyID: String
    public var teamID: String
    public var topic: String
    /// PEM (PKCS#8, "BEGIN PRIVATE KEY"), a P-256 key.
    public var privateKey: String

    public init(keyID: String, teamID: String, topic: String, privateKey: String) {
        self.keyID = keyID
        self.teamID = teamID
        self.topic = topic
        self.privateKey = privateKey
    }

    /// A fresh P-256 key in the `.p8` format.
    public static func generatePEM() -> String { P256.Signing.PrivateKey().pemRepresentation }

    public func signingKey() throws -> P256.Signing.PrivateKey { try P256.Signing.PrivateKey(pemRepresentation: privateKey) }
}

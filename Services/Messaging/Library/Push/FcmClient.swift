import AsyncHTTPClient
import CareMeshContracts
import Crypto
import CryptoExtras
import Foundation
import NIOCore
import Synchronization

/// Firebase Cloud Messaging's HTTP v1 API. An OAuth 2.0 access token comes from the service
/// account's `token_uri` for a signed assertion (RS256, scope `firebase.messaging`, RFC 7523),
/// is kept until a minute before it expires and fetched again after a 401; then
/// `POST /v1/projects/{project}/messages:send` with `{"message": {"token", "notification",
/// "data", "android"}}` answers `{"name": …}`, or a `google.rpc.Status` whose FcmError
/// `errorCode` says what went wrong (`UNREGISTERED`: the token is gone).
final class FcmClient: PushProvider {
    var platform: Caremesh_Messaging_V1_PushPlatform { .fcm }
    let account: FcmServiceAccount
    let baseURL: String
    private let key: _RSA.Signing.PrivateKey
    private let token = Mutex<(value: String, expires: ContinuousClock.Instant)?>(nil)

    static let scope = "https://www.googleapis.com/auth/firebase.messaging"

    init(account: FcmServiceAccount, baseURL: String) throws {
        self.account = account
        self.baseURL = ProviderHTTP.base(baseURL)
        key = try account.signingKey()
    }

    struct Header: Codable { var alg = "RS256"; var typ = "JWT"; var kid: String }
    struct Claims: Codable { var iss: String; var scope: String; var aud: String; var iat: Int; var exp: Int }

    /// The signed assertion exchanged for an access token: valid for an hour.
    func assertion(now: Date = Date()) throws -> String {
        let iat = Int(now.timeIntervalSince1970)
        return try CompactJWS.make(header: Header(kid: account.privateKeyID),
                                   claims: Claims(iss: account.clientEmail, scope: Self.scope, aud: account.tokenURI, iat: iat, exp: iat + 3_600)) {
            try key.signature(for: SHA256.hash(data: $0), padding: .insecurePKCS1v1_5).rawRepresentation
        }
    }

    struct TokenAnswer: Decodable {
        var accessToken: String
        var expiresIn: Int
        enum CodingKeys: String, CodingKey { case accessToken = "access_token", expiresIn = "expires_in" }
    }

    /// A valid access token: the cached one, or a new one for a fresh assertion.
    func accessToken(timeout: Duration, refresh: Bool) async throws(ProviderError) -> String {
        if !refresh, let cached = token.withLock({ $0 }), cached.expires > .now { return cached.value }
        let signed: String
        do { signed = try assertion() } catch {
            throw ProviderError(provider: "fcm", retryable: false, code: "assertion", message: "the service account's key cannot sign")
        }
        var request = HTTPClientRequest(url: account.tokenURI)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.body = .bytes(ByteBuffer(string: FormEncoding.encode([("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                                                                      ("assertion", signed)])))
        let (status, body) = try await ProviderHTTP.execute(request, provider: "fcm", timeout: timeout)
        guard status == .ok, let answer = try? JSONDecoder().decode(TokenAnswer.self, from: body) else {
            throw ProviderError(provider: "fcm", retryable: ProviderHTTP.isRetryable(status), code: "token",
                                message: "the access token request was refused", httpStatus: Int(status.code))
        }
        token.withLock { $0 = (answer.accessToken, .now + .seconds(max(answer.expiresIn - 60, 1))) }
        return answer.accessToken
    }

    struct Request: Encodable {
        struct Note: Encodable { var title: String; var body: String }
        struct Android: Encodable { var priority: String; var ttl: String }
        struct Message: Encodable {
            var token: String
            var notification: Note
            var data: [String: String]
            var android: Android
        }
        var message: Message
    }

    static func request(_ m: PushMessage, token: String, now: Date = Date()) -> Request {
        let ttl = max(0, Int(m.expires.timeIntervalSince(now)))
        return Request(message: .init(token: token, notification: .init(title: m.title, body: m.body), data: m.payload,
                                      android: .init(priority: m.critical ? "HIGH" : "NORMAL", ttl: "\(ttl)s")))
    }

    func send(_ message: PushMessage, to deviceToken: String, timeout: Duration) async -> PushOutcome {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        guard let body = try? encoder.encode(Self.request(message, token: deviceToken)) else { return .refused("the message could not be encoded") }
        return await reauthenticatingOnce { refresh in
            do {
                let bearer = try await accessToken(timeout: timeout, refresh: refresh)
                var request = HTTPClientRequest(url: "\(baseURL)/v1/projects/\(account.projectID)/messages:send")
                request.method = .POST
                request.headers.add(name: "Authorization", value: "Bearer \(bearer)")
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(bytes: body))
                let (status, answer) = try await ProviderHTTP.execute(request, provider: "fcm", timeout: timeout)
                return Self.classify(status: Int(status.code), body: answer)
            } catch let error as ProviderError {
                return error.retryable ? .retry(error.description, reauthenticate: false) : .refused(error.description)
            } catch {
                return .retry("fcm \(type(of: error))", reauthenticate: false)
            }
        }
    }

    struct Failure: Decodable {
        struct Detail: Decodable {
            struct Violation: Decodable { var field: String? }
            var type: String?
            var errorCode: String?
            var fieldViolations: [Violation]?
            enum CodingKeys: String, CodingKey { case type = "@type", errorCode, fieldViolations }
        }
        struct Status: Decodable { var code: Int?; var message: String?; var status: String?; var details: [Detail]? }
        var error: Status
    }
    struct Sent: Decodable { var name: String }

    /// What FCM's answer means (its documented error codes: `UNREGISTERED` and
    /// `SENDER_ID_MISMATCH` for a token that is gone or another project's, `INVALID_ARGUMENT`
    /// naming `message.token` for one that never was; `UNAUTHENTICATED` for our token;
    /// `QUOTA_EXCEEDED`, `UNAVAILABLE`, `INTERNAL` worth a retry).
    static func classify(status: Int, body: Data) -> PushOutcome {
        if status == 200 {
            return .sent((try? JSONDecoder().decode(Sent.self, from: body))?.name ?? "")
        }
        let failure = (try? JSONDecoder().decode(Failure.self, from: body))?.error
        let errorCode = failure?.details?.compactMap(\.errorCode).first ?? failure?.status ?? "\(status)"
        let why = "fcm HTTP \(status) \(errorCode): \(failure?.message ?? "")"
        let namesToken = failure?.details?.contains { $0.fieldViolations?.contains { $0.field == "message.token" } == true } == true
        switch errorCode {
        case "UNREGISTERED", "SENDER_ID_MISMATCH": return .invalidToken(why)
        case "INVALID_ARGUMENT" where namesToken: return .invalidToken(why)
        case "UNAUTHENTICATED": return .retry(why, reauthenticate: true)
        case "QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL", "THIRD_PARTY_AUTH_ERROR": return .retry(why, reauthenticate: false)
        default:
            if status == 404 { return .invalidToken(why) }
            if status == 401 { return .retry(why, reauthenticate: true) }
            return status == 429 || status >= 500 ? .retry(why, reauthenticate: false) : .refused(why)
        }
    }
}

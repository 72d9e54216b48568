import Crypto
import CryptoExtras
import Foundation
import HTTPTypes
import Hummingbird
import MessagingService
import NIOCore

/// Firebase Cloud Messaging's HTTP v1 API as Google checks it: the service account's OAuth 2.0
/// token endpoint (`token_uri`: a JWT-bearer assertion signed RS256 by the account's key, with
/// its `kid`, `iss`, the messaging scope, an `aud` that is the token endpoint and at most an
/// hour of life) and `messages:send` (that token, the account's project, one registration
/// token, string-valued `data`), answering `{"name": …}` or a `google.rpc.Status` with FCM's
/// `errorCode`. A token scripted gone (`push_gone`) answers 404 `UNREGISTERED`.
extension ProviderSandbox {
    /// The sandbox's service account, as a key file names it (its token endpoint is the sandbox's).
    public func fcmServiceAccount() -> FcmServiceAccount {
        var account = configuration.fcmAccount
        account.tokenURI = baseURL + "/token"
        return account
    }

    static func googleError(_ status: HTTPResponse.Status, _ state: String, _ message: String, details: [ProviderJSON] = []) -> Response {
        var error: [(String, ProviderJSON)] = [("code", .int(Int(status.code))), ("message", .string(message)), ("status", .string(state))]
        if !details.isEmpty { error.append(("details", .array(details))) }
        return json(status, ["error": .object(error)])
    }

    static func fcmError(_ code: String) -> ProviderJSON {
        ["@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": .string(code)]
    }

    struct FcmClaims: Decodable { var iss: String; var scope: String; var aud: String; var iat: Int; var exp: Int }
    struct JWSHeader: Decodable { var alg: String; var kid: String? }

    func fcmToken(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        var body = request
        let form = FormEncoding.decode(String(buffer: try await body.collectBody(upTo: 1 << 20))) ?? []
        let field = { (name: String) in form.last { $0.name == name }?.value }
        guard field("grant_type") == "urn:ietf:params:oauth:grant-type:jwt-bearer" else {
            return Self.json(.badRequest, ["error": "unsupported_grant_type", "error_description": "Invalid grant_type"])
        }
        let invalid = { (why: String) in Self.json(.badRequest, ["error": "invalid_grant", "error_description": .string(why)]) }
        let account = configuration.fcmAccount
        guard let jws = field("assertion").flatMap(CompactJWS.parse), let header = try? JSONDecoder().decode(JWSHeader.self, from: jws.header),
              let claims = try? JSONDecoder().decode(FcmClaims.self, from: jws.claims) else { return invalid("Invalid JWT.") }
        guard header.alg == "RS256", header.kid == account.privateKeyID,
              let key = try? account.signingKey().publicKey,
              key.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: jws.signature), for: SHA256.hash(data: jws.signingInput),
                                   padding: .insecurePKCS1v1_5)
        else { return invalid("Invalid JWT Signature.") }
        let now = Int(Date().timeIntervalSince1970)
        guard claims.iss == account.clientEmail else { return invalid("Invalid JWT: iss is not the service account.") }
        guard claims.aud.hasSuffix("/token") else { return invalid("Invalid JWT: aud is not the token endpoint.") }
        guard claims.scope.split(separator: " ").contains("https://www.googleapis.com/auth/firebase.messaging") else {
            return invalid("Invalid JWT: the scope does not allow FCM.")
        }
        guard claims.iat <= now + 60, claims.exp > now, claims.exp - claims.iat <= 3_600 else {
            return invalid("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.")
        }
        let token = "ya29.sandbox" + Self.newID("")
        state.withLock { $0.fcmTokens[token] = Date().addingTimeInterval(3_600) }
        return Self.json(.ok, ["access_token": .string(token), "expires_in": 3599, "token_type": "Bearer"])
    }

    struct FcmSend: Decodable {
        struct Note: Decodable { var title: String?; var body: String? }
        struct Android: Decodable { var priority: String?; var ttl: String? }
        struct Message: Decodable {
            var token: String?
            var topic: String?
            var notification: Note?
            var android: Android?
        }
        var message: Message?
    }

    func fcmSend(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        guard let auth = request.headers[.authorization], auth.hasPrefix("Bearer "),
              state.withLock({ ($0.fcmTokens[String(auth.dropFirst(7))] ?? .distantPast) > Date() }) else {
            return Self.googleError(.unauthorized, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token.",
                                    details: [Self.fcmError("UNAUTHENTICATED")])
        }
        guard context.parameters.get("project") == configuration.fcmAccount.projectID else {
            return Self.googleError(.forbidden, "PERMISSION_DENIED", "Permission 'cloudmessaging.messages.create' denied on resource")
        }
        var body = request
        let data = Data(buffer: try await body.collectBody(upTo: 1 << 20))
        let invalid = { (field: String, why: String) -> Response in
            let violation: ProviderJSON = ["field": .string(field), "description": .string(why)]
            let badRequest: ProviderJSON = ["@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": .array([violation])]
            return Self.googleError(.badRequest, "INVALID_ARGUMENT", why, details: [Self.fcmError("INVALID_ARGUMENT"), badRequest])
        }
        guard let send = try? JSONDecoder().decode(FcmSend.self, from: data), let message = send.message else {
            return invalid("message", "Invalid JSON payload received.")
        }
        // `data` must be an object of strings (FCM refuses a number or a nested object).
        let raw = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["message"] as? [String: Any]
        let values = raw?["data"] as? [String: Any] ?? [:]
        guard raw?["data"] == nil || raw?["data"] is [String: Any], values.values.allSatisfy({ $0 is String }) else {
            return invalid("message.data", "Invalid value at 'message.data': values must be strings")
        }
        guard let token = message.token, message.topic == nil else { return invalid("message", "Recipient of the message is not set.") }
        guard token.utf8.count >= 20, token.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_:-.".contains($0)) }) else {
            return invalid("message.token", "The registration token is not a valid FCM registration token")
        }
        if let priority = message.android?.priority, !["HIGH", "NORMAL"].contains(priority) {
            return invalid("message.android.priority", "Invalid value at 'message.android.priority'")
        }
        if let ttl = message.android?.ttl, ttl.wholeMatch(of: /[0-9]+(\.[0-9]{1,9})?s/) == nil {
            return invalid("message.android.ttl", "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)")
        }
        if scripted(\.pushGone, api: "fcm", to: token) == true {
            return Self.googleError(.notFound, "NOT_FOUND", "Requested entity was not found.", details: [Self.fcmError("UNREGISTERED")])
        }
        if let status = nextError(api: "fcm", to: token) {
            let state = switch status { case 429: "RESOURCE_EXHAUSTED"; case 401: "UNAUTHENTICATED"; case 500: "INTERNAL"; default: "UNAVAILABLE" }
            let code = switch status { case 429: "QUOTA_EXCEEDED"; case 401: "UNAUTHENTICATED"; case 500: "INTERNAL"; default: "UNAVAILABLE" }
            return Self.googleError(HTTPResponse.Status(code: status), state, "Scripted failure", details: [Self.fcmError(code)])
        }
        let id = "0:\(Int(Date().timeIntervalSince1970 * 1000))%" + Self.newID("").prefix(16)
        recordPush(ReceivedPush(platform: "fcm", id: id, token: token, title: message.notification?.title ?? "",
                                body: message.notification?.body ?? "", data: values.compactMapValues { $0 as? String },
                                priority: message.android?.priority ?? "NORMAL"))
        return Self.json(.ok, ["name": .string("projects/\(configuration.fcmAccount.projectID)/messages/\(id)")])
    }
}

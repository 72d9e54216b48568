import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import MessagingService
import NIOCore

/// APNs' `POST /3/device/{token}` as Apple checks it, with token-based authentication: a
/// provider token (ES256 by the auth key, its `kid`, `iss` the team, issued within the hour),
/// `apns-topic` the app's bundle id, `apns-push-type`, `apns-priority` 5 or 10, a numeric
/// `apns-expiration`, an `apns-id` that is a UUID, a hex device token, a payload of at most
/// 4 KB with an `aps` alert. 200 with `apns-id`, or `{"reason": …}`; a token scripted gone
/// (`push_gone`) answers 410 `Unregistered` with its timestamp.
///
/// Apple serves this only over HTTP/2; the sandbox serves it over HTTP/1.1 (the request and
/// the answer are the same).
extension ProviderSandbox {
    static func apnsError(_ status: HTTPResponse.Status, _ reason: String) -> Response {
        var body: [(String, ProviderJSON)] = [("reason", .string(reason))]
        if status == .gone { body.append(("timestamp", .int(Int(Date().timeIntervalSince1970 * 1000)))) }
        return json(status, .object(body))
    }

    struct ApnsClaims: Decodable { var iss: String; var iat: Int }
    struct ApnsPayload: Decodable {
        struct Alert: Decodable { var title: String?; var body: String? }
        struct Aps: Decodable { var alert: Alert? }
        var aps: Aps?
        var data: [String: String]?
    }

    func apnsSend(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let key = configuration.apnsKey
        guard let auth = request.headers[.authorization], auth.lowercased().hasPrefix("bearer ") else {
            return Self.apnsError(.forbidden, "MissingProviderToken")
        }
        guard let jws = CompactJWS.parse(String(auth.dropFirst(7))), let header = try? JSONDecoder().decode(JWSHeader.self, from: jws.header),
              let claims = try? JSONDecoder().decode(ApnsClaims.self, from: jws.claims), header.alg == "ES256", header.kid == key.keyID,
              claims.iss == key.teamID, let publicKey = try? key.signingKey().publicKey,
              let signature = try? P256.Signing.ECDSASignature(rawRepresentation: jws.signature),
              publicKey.isValidSignature(signature, for: jws.signingInput)
        else { return Self.apnsError(.forbidden, "InvalidProviderToken") }
        let now = Int(Date().timeIntervalSince1970)
        guard claims.iat > now - 3_600, claims.iat <= now + 60 else { return Self.apnsError(.forbidden, "ExpiredProviderToken") }
        let field = { (name: String) in request.headers[HTTPField.Name(name)!] }
        guard let topic = field("apns-topic") else { return Self.apnsError(.badRequest, "MissingTopic") }
        guard topic == key.topic else { return Self.apnsError(.badRequest, "TopicDisallowed") }
        guard let type = field("apns-push-type"), ["alert", "background", "voip", "complication", "fileprovider", "mdm", "liveactivity"]
            .contains(type) else { return Self.apnsError(.badRequest, "InvalidPushType") }
        let priority = field("apns-priority") ?? "10"
        guard ["5", "10", "1"].contains(priority) else { return Self.apnsError(.badRequest, "BadPriority") }
        if let expiration = field("apns-expiration"), Int(expiration) == nil { return Self.apnsError(.badRequest, "BadExpirationDate") }
        let id = field("apns-id") ?? UUID().uuidString
        guard UUID(uuidString: id) != nil else { return Self.apnsError(.badRequest, "BadMessageId") }
        let token = context.parameters.get("token") ?? ""
        guard (64...200).contains(token.utf8.count), token.utf8.count % 2 == 0, token.allSatisfy(\.isHexDigit) else {
            return Self.apnsError(.badRequest, "BadDeviceToken")
        }
        var body = request
        let data = Data(buffer: try await body.collectBody(upTo: 1 << 20))
        guard data.count <= 4_096 else { return Self.apnsError(.contentTooLarge, "PayloadTooLarge") }
        guard let payload = try? JSONDecoder().decode(ApnsPayload.self, from: data), let alert = payload.aps?.alert else {
            return Self.apnsError(.badRequest, "PayloadEmpty")
        }
        if scripted(\.pushGone, api: "apns", to: token) == true { return Self.apnsError(.gone, "Unregistered") }
        if let status = nextError(api: "apns", to: token) {
            let reason = switch status { case 429: "TooManyRequests"; case 500: "InternalServerError"; case 403: "ExpiredProviderToken"
                                         default: "ServiceUnavailable" }
            return Self.apnsError(HTTPResponse.Status(code: status), reason)
        }
        recordPush(ReceivedPush(platform: "apns", id: id, token: token, title: alert.title ?? "", body: alert.body ?? "",
                                data: payload.data ?? [:], priority: priority))
        var response = Response(status: .ok)
        response.headers[HTTPField.Name("apns-id")!] = id
        return response
    }
}

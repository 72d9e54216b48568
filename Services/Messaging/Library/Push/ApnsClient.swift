import AsyncHTTPClient
import CareMeshContracts
import Crypto
import Foundation
import NIOCore
import Synchronization

/// Apple Push Notification service, with token-based authentication: a provider token (ES256,
/// `kid` = the key's id, `iss` = the team, `iat`), made again every 40 minutes (Apple refuses
/// one older than an hour, and one renewed more often than every 20), then
/// `POST /3/device/{token}` with `authorization: bearer …`, `apns-topic` (the bundle id),
/// `apns-push-type: alert`, `apns-priority`, `apns-expiration` and `apns-id`, and an `aps`
/// payload. 200 with `apns-id`, or `{"reason": …}`: 410 `Unregistered` or 400 `BadDeviceToken`
/// mean the token is gone.
///
/// APNs speaks only HTTP/2: AsyncHTTPClient negotiates it over TLS (ALPN) with Apple's hosts,
/// and HTTP/1.1 with a local sandbox over plain HTTP; the request is the same.
final class ApnsClient: PushProvider {
    var platform: Caremesh_Messaging_V1_PushPlatform { .apns }
    let key: ApnsKey
    let baseURL: String
    private let signingKey: P256.Signing.PrivateKey
    private let token = Mutex<(value: String, made: Date)?>(nil)

    /// How long a provider token is used before a new one is made.
    static let tokenLifetime: TimeInterval = 40 * 60

    init(key: ApnsKey, baseURL: String) throws {
        self.key = key
        self.baseURL = ProviderHTTP.base(baseURL)
        signingKey = try key.signingKey()
    }

    struct Header: Codable { var alg = "ES256"; var kid: String }
    struct Claims: Codable { var iss: String; var iat: Int }

    func providerToken(now: Date = Date(), refresh: Bool = false) throws -> String {
        if !refresh, let cached = token.withLock({ $0 }), now.timeIntervalSince(cached.made) < Self.tokenLifetime { return cached.value }
        let made = try CompactJWS.make(header: Header(kid: key.keyID), claims: Claims(iss: key.teamID, iat: Int(now.timeIntervalSince1970))) {
            try signingKey.signature(for: $0).rawRepresentation
        }
        token.withLock { $0 = (made, now) }
        return made
    }

    struct Payload: Encodable {
        struct Alert: Encodable { var title: String; var body: String }
        struct Aps: Encodable {
            var alert: Alert
            var sound = "default"
            /// "time-sensitive" for critical kinds: shown at once, through Focus.
            var interruptionLevel: String
            enum CodingKeys: String, CodingKey { case alert, sound, interruptionLevel = "interruption-level" }
        }
        var aps: Aps
        /// The app's data, as FCM's `data`.
        var data: [String: String]
    }

    static func payload(_ m: PushMessage) -> Payload {
        Payload(aps: .init(alert: .init(title: m.title, body: m.body), interruptionLevel: m.critical ? "time-sensitive" : "active"),
                data: m.payload)
    }

    func send(_ message: PushMessage, to deviceToken: String, timeout: Duration) async -> PushOutcome {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        guard let body = try? encoder.encode(Self.payload(message)) else { return .refused("the payload could not be encoded") }
        return await reauthenticatingOnce { refresh in
            let bearer: String
            do { bearer = try providerToken(refresh: refresh) } catch { return .refused("the APNs key cannot sign") }
            var request = HTTPClientRequest(url: "\(baseURL)/3/device/\(deviceToken)")
            request.method = .POST
            request.headers.add(name: "authorization", value: "bearer \(bearer)")
            request.headers.add(name: "apns-topic", value: key.topic)
            request.headers.add(name: "apns-push-type", value: "alert")
            request.headers.add(name: "apns-priority", value: message.critical ? "10" : "5")
            request.headers.add(name: "apns-expiration", value: "\(Int(message.expires.timeIntervalSince1970))")
            request.headers.add(name: "apns-id", value: message.id.uuidString)
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
            do {
                let (status, headers, answer) = try await ProviderHTTP.exchange(request, provider: "apns", timeout: timeout)
                return Self.classify(status: Int(status.code), body: answer, apnsID: headers.first(name: "apns-id"))
            } catch {
                return .retry((error as? ProviderError)?.description ?? "apns \(type(of: error))", reauthenticate: false)
            }
        }
    }

    struct Failure: Decodable { var reason: String }

    /// What APNs' answer means (its documented reasons).
    static func classify(status: Int, body: Data, apnsID: String?) -> PushOutcome {
        if status == 200 { return .sent(apnsID ?? "") }
        let reason = (try? JSONDecoder().decode(Failure.self, from: body))?.reason ?? "\(status)"
        let why = "apns HTTP \(status) \(reason)"
        switch (status, reason) {
        case (410, _), (400, "BadDeviceToken"), (400, "DeviceTokenNotForTopic"): return .invalidToken(why)
        case (403, "ExpiredProviderToken"), (403, "InvalidProviderToken"): return .retry(why, reauthenticate: true)
        case (429, _), (500...599, _): return .retry(why, reauthenticate: false)
        default: return .refused(why)
        }
    }
}

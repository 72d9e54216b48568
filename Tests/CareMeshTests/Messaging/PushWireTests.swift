import CareMeshContracts
import CareMeshRPC
import CareMeshTesting
import Crypto
import CryptoExtras
import Foundation
@testable import MessagingService
import ProviderSandbox
import Testing

/// The push providers' wire formats and what their answers mean, without a database: each
/// client's request as its provider documents it, its credential verifiable with the public
/// key, every documented answer classified; then each client against the sandbox, which checks
/// them as the providers do.
@Suite struct PushWireTests {
    static let account = ProviderSandbox.Configuration().fcmAccount
    static let apnsKey = ProviderSandbox.Configuration().apnsKey

    static func message(critical: Bool) -> PushMessage {
        PushMessage(id: UUID(uuidString: "0190A000-0000-7000-8000-000000000001")!, notification: UUID(uuidString: "0190A000-0000-7000-8000-000000000002")!,
                    seq: 7, kind: critical ? .sosOffered : .chatMessage, critical: critical, title: "SOS near you", body: "Someone near you needs help.",
                    data: ["sos_id": "s1"], expires: Date(timeIntervalSince1970: 1_800_000_900))
    }

    @Test func fcmsAssertionIsAnRS256JWTGoogleCanVerify() throws {
        let client = try FcmClient(account: Self.account, baseURL: "http://127.0.0.1:1")
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let jws = try #require(CompactJWS.parse(try client.assertion(now: now)))
        let header = try JSONDecoder().decode([String: String].self, from: jws.header)
        #expect(header == ["alg": "RS256", "typ": "JWT", "kid": Self.account.privateKeyID])
        let claims = try JSONDecoder().decode(FcmClient.Claims.self, from: jws.claims)
        #expect(claims.iss == Self.account.clientEmail && claims.aud == Self.account.tokenURI && claims.scope == FcmClient.scope)
        #expect(claims.iat == 1_800_000_000 && claims.exp == 1_800_003_600)
        let key = try Self.account.signingKey().publicKey
        #expect(key.isValidSignature(.init(rawRepresentation: jws.signature), for: SHA256.hash(data: jws.signingInput), padding: .insecurePKCS1v1_5))
        // Another key's signature does not verify.
        let other = try _RSA.Signing.PrivateKey(keySize: .bits2048).publicKey
        #expect(!other.isValidSignature(.init(rawRepresentation: jws.signature), for: SHA256.hash(data: jws.signingInput), padding: .insecurePKCS1v1_5))
    }

    @Test func apnsProviderTokenIsAnES256JWTReusedForFortyMinutes() throws {
        let client = try ApnsClient(key: Self.apnsKey, baseURL: "http://127.0.0.1:1")
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let token = try client.providerToken(now: now)
        let jws = try #require(CompactJWS.parse(token))
        #expect(try JSONDecoder().decode([String: String].self, from: jws.header) == ["alg": "ES256", "kid": Self.apnsKey.keyID])
        let claims = try JSONDecoder().decode(ApnsClient.Claims.self, from: jws.claims)
        #expect(claims.iss == Self.apnsKey.teamID && claims.iat == 1_800_000_000)
        #expect(try Self.apnsKey.signingKey().publicKey.isValidSignature(try .init(rawRepresentation: jws.signature), for: jws.signingInput))
        #expect(try client.providerToken(now: now.addingTimeInterval(39 * 60)) == token)
        #expect(try client.providerToken(now: now.addingTimeInterval(41 * 60)) != token)
    }

    @Test func requestsAreThoseTheProvidersDocument() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let fcm = String(decoding: try encoder.encode(FcmClient.request(Self.message(critical: true), token: "tok", now: now)), as: UTF8.self)
        #expect(fcm == #"{"message":{"android":{"priority":"HIGH","ttl":"900s"},"data":{"kind":"SOS_OFFERED","notification_id":"0190a000-0000-7000-8000-000000000002","seq":"7","sos_id":"s1"},"notification":{"body":"Someone near you needs help.","title":"SOS near you"},"token":"tok"}}"#)
        let normal = FcmClient.request(Self.message(critical: false), token: "tok", now: now.addingTimeInterval(1_000))
        #expect(normal.message.android.priority == "NORMAL" && normal.message.android.ttl == "0s")
        let apns = String(decoding: try encoder.encode(ApnsClient.payload(Self.message(critical: true))), as: UTF8.self)
        #expect(apns == #"{"aps":{"alert":{"body":"Someone near you needs help.","title":"SOS near you"},"interruption-level":"time-sensitive","sound":"default"},"data":{"kind":"SOS_OFFERED","notification_id":"0190a000-0000-7000-8000-000000000002","seq":"7","sos_id":"s1"}}"#)
        #expect(ApnsClient.payload(Self.message(critical: false)).aps.interruptionLevel == "active")
    }

    static func google(_ status: Int, _ state: String, errorCode: String? = nil, field: String? = nil) -> Data {
        var details: [String] = []
        if let errorCode { details.append(#"{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"\#(errorCode)"}"#) }
        if let field { details.append(#"{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"\#(field)"}]}"#) }
        return Data(#"{"error":{"code":\#(status),"message":"m","status":"\#(state)","details":[\#(details.joined(separator: ","))]}}"#.utf8)
    }

    @Test func fcmAnswersMeanWhatFCMDocuments() {
        let cases: [(Int, Data, String)] = [
            (200, Data(#"{"name":"projects/p/messages/1"}"#.utf8), "sent projects/p/messages/1"),
            (404, Self.google(404, "NOT_FOUND", errorCode: "UNREGISTERED"), "invalid"),
            (403, Self.google(403, "PERMISSION_DENIED", errorCode: "SENDER_ID_MISMATCH"), "invalid"),
            (400, Self.google(400, "INVALID_ARGUMENT", errorCode: "INVALID_ARGUMENT", field: "message.token"), "invalid"),
            (400, Self.google(400, "INVALID_ARGUMENT", errorCode: "INVALID_ARGUMENT", field: "message.data"), "refused"),
            (401, Self.google(401, "UNAUTHENTICATED"), "reauthenticate"),
            (429, Self.google(429, "RESOURCE_EXHAUSTED", errorCode: "QUOTA_EXCEEDED"), "retry"),
            (503, Self.google(503, "UNAVAILABLE", errorCode: "UNAVAILABLE"), "retry"),
            (500, Data("oops".utf8), "retry"),
            (403, Self.google(403, "PERMISSION_DENIED"), "refused"),
        ]
        for (status, body, expected) in cases {
            #expect(Self.name(FcmClient.classify(status: status, body: body)) == expected, "HTTP \(status) \(String(decoding: body, as: UTF8.self))")
        }
    }

    @Test func apnsAnswersMeanWhatAppleDocuments() {
        let cases: [(Int, String?, String)] = [
            (200, nil, "sent id"), (410, "Unregistered", "invalid"), (410, "ExpiredToken", "invalid"), (400, "BadDeviceToken", "invalid"),
            (400, "DeviceTokenNotForTopic", "invalid"), (403, "ExpiredProviderToken", "reauthenticate"),
            (403, "InvalidProviderToken", "reauthenticate"), (429, "TooManyRequests", "retry"), (503, "ServiceUnavailable", "retry"),
            (500, "InternalServerError", "retry"), (400, "TopicDisallowed", "refused"), (413, "PayloadTooLarge", "refused"),
            (403, "BadCertificate", "refused"),
        ]
        for (status, reason, expected) in cases {
            let body = reason.map { Data(#"{"reason":"\#($0)"}"#.utf8) } ?? Data()
            #expect(Self.name(ApnsClient.classify(status: status, body: body, apnsID: "id")) == expected, "HTTP \(status) \(reason ?? "")")
        }
    }

    static func name(_ outcome: PushOutcome) -> String {
        switch outcome {
        case .sent(let id): "sent \(id)"
        case .invalidToken: "invalid"
        case .retry(_, let reauthenticate): reauthenticate ? "reauthenticate" : "retry"
        case .refused: "refused"
        }
    }

    @Test func tokensAreCheckedPerPlatform() {
        let cases: [(Caremesh_Messaging_V1_PushPlatform, String, Set<String>)] = [
            (.fcm, "dGhpc2lzYXRva2Vu:APA91bH-x_y.z0123", []), (.fcm, "too-short", ["token"]), (.fcm, "bad token with spaces here!", ["token"]),
            (.fcm, String(repeating: "a", count: 4_097), ["token"]), (.apns, String(repeating: "ab", count: 32), []),
            (.apns, String(repeating: "AB", count: 32), []), (.apns, String(repeating: "a", count: 63), ["token"]),
            (.apns, String(repeating: "g", count: 64), ["token"]), (.apns, String(repeating: "a", count: 202), ["token"]),
            (.unspecified, "x", ["platform"]),
        ]
        for (platform, token, fields) in cases {
            var v = FieldViolations()
            let normalized = PushDevices.validate(platform, token, &v)
            let named = Set(((try? v.throwIfAny()).map { _ in [] } ?? Self.fields(v)))
            #expect(named == fields, "\(platform) \(token.prefix(20))")
            if platform == .apns && fields.isEmpty { #expect(normalized == token.lowercased()) }
        }
    }

    static func fields(_ v: FieldViolations) -> [String] {
        do { try v.throwIfAny(); return [] } catch { return error.details.flatMap { $0.badRequest.fieldViolations.map(\.field) } }
    }

    /// Each client against the sandbox: taken; a forged credential refused; a gone token; the provider's trouble.
    @Test func eachClientAgainstTheSandbox() async throws {
        let sandbox = ProviderSandbox(logger: TestStack.quietLogger("sandbox"))
        try await TestStack.withServices([sandbox]) {
            let base = "http://127.0.0.1:\(await sandbox.port())"
            let fcm = try FcmClient(account: sandbox.fcmServiceAccount(), baseURL: base)
            let apns = try ApnsClient(key: sandbox.configuration.apnsKey, baseURL: base)
            let (android, iphone) = (SmsTests.fcmToken(), SmsTests.apnsToken())
            let m = Self.message(critical: true)
            #expect(Self.name(await fcm.send(m, to: android, timeout: .seconds(5))).hasPrefix("sent projects/caremesh-sandbox/messages/"))
            #expect(await apns.send(m, to: iphone, timeout: .seconds(5)) == .sent(m.id.uuidString))
            #expect(sandbox.pushes.map(\.platform) == ["fcm", "apns"] && sandbox.pushes.allSatisfy { $0.title == "SOS near you" })

            // Forged: another service account's key, another APNs key with the same ids.
            var forgedAccount = try FcmServiceAccount.generate(projectID: "caremesh-sandbox", clientEmail: sandbox.fcmServiceAccount().clientEmail,
                                                               tokenURI: base + "/token")
            forgedAccount.privateKeyID = sandbox.fcmServiceAccount().privateKeyID
            #expect(Self.name(await (try FcmClient(account: forgedAccount, baseURL: base)).send(m, to: android, timeout: .seconds(5))) == "refused")
            var forgedKey = sandbox.configuration.apnsKey
            forgedKey.privateKey = ApnsKey.generatePEM()
            #expect(Self.name(await (try ApnsClient(key: forgedKey, baseURL: base)).send(m, to: iphone, timeout: .seconds(5))) == "reauthenticate")
            var wrongTopic = sandbox.configuration.apnsKey
            wrongTopic.topic = "org.example.other"
            #expect(Self.name(await (try ApnsClient(key: wrongTopic, baseURL: base)).send(m, to: iphone, timeout: .seconds(5))) == "refused")

            // Gone, malformed, and the provider's trouble.
            sandbox.apply(.init(api: "fcm", to: android, pushGone: true))
            sandbox.apply(.init(api: "apns", to: iphone, pushGone: true))
            #expect(Self.name(await fcm.send(m, to: android, timeout: .seconds(5))) == "invalid")
            #expect(Self.name(await apns.send(m, to: iphone, timeout: .seconds(5))) == "invalid")
            #expect(Self.name(await fcm.send(m, to: "not a token", timeout: .seconds(5))) == "invalid")
            #expect(Self.name(await apns.send(m, to: "abc", timeout: .seconds(5))) == "invalid")
            let (other, otherPhone) = (SmsTests.fcmToken(), SmsTests.apnsToken())
            sandbox.apply(.init(api: "fcm", to: other, sendErrors: [503]))
            sandbox.apply(.init(api: "apns", to: otherPhone, sendErrors: [429]))
            #expect(Self.name(await fcm.send(m, to: other, timeout: .seconds(5))) == "retry")
            #expect(Self.name(await apns.send(m, to: otherPhone, timeout: .seconds(5))) == "retry")
            #expect(sandbox.pushes.count == 2)
        }
    }
}

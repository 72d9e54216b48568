import AsyncHTTPClient
import CareMeshRPC
import Foundation
import Hummingbird
import Logging
import MessagingService
import NIOCore
import ServiceLifecycle
import Synchronization

/// A local stand-in for the SMS providers, speaking their wire formats: Twilio's Messages API
/// (HTTP Basic with the account SID and auth token, form bodies, `X-Twilio-Signature`d status
/// callbacks to the message's `StatusCallback`), Orange's SMS API (OAuth 2.0 client
/// credentials, `outboundSMSMessageRequest`, delivery receipts to the `notifyURL`), Twilio's
/// voice calls, SendGrid's mail send, and push: FCM HTTP v1 and APNs.
///
/// Outcomes are scripted, per API and per destination number: the next sends may answer HTTP
/// errors (for retries and failover), a number's messages end delivered, undelivered or
/// failed, after a delay. Scripts come from Swift (tests) or `POST /sandbox/script`; what was
/// sent is listed at `GET /sandbox/messages`.
public final class ProviderSandbox: Service, Sendable {
    public struct Configuration: Sendable {
        public var host = "127.0.0.1"
        /// 0: any free port (read `port` once started).
        public var port = 0
        public var twilioAccountSID = "AC00000000000000000000000000000000"
        public var twilioAuthToken = "sandbox-twilio-auth-token"
        public var orangeClientID = "sandbox-orange-client"
        public var orangeClientSecret = "sandbox-orange-secret"
        public var sendGridAPIKey = "SG.sandbox-sendgrid-key"
        /// FCM's service account (its `token_uri` is ignored: the sandbox's is `/token`).
        public var fcmAccount = Self.generatedFcmAccount
        /// APNs' auth key, its id, the team and the app's bundle id.
        public var apnsKey = Self.generatedApnsKey
        /// Before each status callback.
        public var callbackDelay: Duration = .milliseconds(20)

        public init() {}

        /// `SANDBOX_HOST`, `SANDBOX_PORT`, `SANDBOX_TWILIO_ACCOUNT_SID`, `SANDBOX_TWILIO_AUTH_TOKEN`,
        /// `SANDBOX_ORANGE_CLIENT_ID`, `SANDBOX_ORANGE_CLIENT_SECRET`, `SANDBOX_CALLBACK_DELAY_MS`.
        public init(environment env: [String: String]) {
            if let v = env["SANDBOX_HOST"] { host = v }
            if let v = env["SANDBOX_PORT"].flatMap(Int.init) { port = v }
            if let v = env["SANDBOX_TWILIO_ACCOUNT_SID"] { twilioAccountSID = v }
            if let v = env["SANDBOX_TWILIO_AUTH_TOKEN"] { twilioAuthToken = v }
            if let v = env["SANDBOX_ORANGE_CLIENT_ID"] { orangeClientID = v }
            if let v = env["SANDBOX_ORANGE_CLIENT_SECRET"] { orangeClientSecret = v }
            if let v = env["SANDBOX_SENDGRID_API_KEY"] { sendGridAPIKey = v }
            if let v = env["SANDBOX_CALLBACK_DELAY_MS"].flatMap(Int.init) { callbackDelay = .milliseconds(v) }
            if let data = env["SANDBOX_FCM_CREDENTIALS_FILE"].flatMap({ FileManager.default.contents(atPath: $0) }),
               let account = try? JSONDecoder().decode(FcmServiceAccount.self, from: data) { fcmAccount = account }
            if let pem = env["SANDBOX_APNS_KEY_FILE"].flatMap({ try? String(contentsOfFile: $0, encoding: .utf8) }) {
                apnsKey = ApnsKey(keyID: env["SANDBOX_APNS_KEY_ID"] ?? apnsKey.keyID, teamID: env["SANDBOX_APNS_TEAM_ID"] ?? apnsKey.teamID,
                                  topic: env["SANDBOX_APNS_TOPIC"] ?? apnsKey.topic, privateKey: pem)
            }
        }

        /// Made once per process: a fresh service account and a fresh APNs key.
        static let generatedFcmAccount = try! FcmServiceAccount.generate(
            projectID: "caremesh-sandbox", clientEmail: "messaging@caremesh-sandbox.iam.gserviceaccount.com", tokenURI: "http://127.0.0.1/token")
        static let generatedApnsKey = ApnsKey(keyID: "SANDBOXK01", teamID: "SANDBOXT01", topic: "org.caremesh.app",
                                              privateKey: ApnsKey.generatePEM())
    }

    /// How a message ends.
    public enum Outcome: String, Sendable, Codable, CaseIterable {
        case delivered, undelivered, failed
    }

    /// How a voice call ends.
    public enum VoiceOutcome: String, Sendable, Codable, CaseIterable {
        /// A person answers (in-progress) and, when the call asks for a key (a `<Gather>`),
        /// presses 1 (posted to the gather's action); then completed.
        case answered
        /// A person answers and presses nothing (in-progress, then completed).
        case pickedUp = "picked-up"
        case busy
        case noAnswer = "no-answer"
        case failed
        /// Answering-machine detection finds a machine.
        case machine
    }

    public struct Script: Sendable, Codable, Equatable {
        /// "twilio", "orange", or nil for both.
        public var api: String?
        /// A destination number, or nil for every number.
        public var to: String?
        /// The next sends answer these HTTP statuses, one each, in order.
        public var sendErrors: [Int]?
        public var outcome: Outcome?
        /// How calls to the number end (Twilio's Calls API).
        public var voice: VoiceOutcome?
        /// Extra delay before the final callback.
        public var delayMs: Int?
        /// A push token (`api` "fcm" or "apns", `to` the token) no longer valid: FCM answers
        /// `UNREGISTERED`, APNs 410 `Unregistered`.
        public var pushGone: Bool?

        enum CodingKeys: String, CodingKey {
            case api, to, sendErrors = "send_errors", outcome, voice, delayMs = "delay_ms", pushGone = "push_gone"
        }

        public init(api: String? = nil, to: String? = nil, sendErrors: [Int]? = nil, outcome: Outcome? = nil, voice: VoiceOutcome? = nil,
                    delayMs: Int? = nil, pushGone: Bool? = nil) {
            self.pushGone = pushGone
            self.api = api
            self.to = to
            self.sendErrors = sendErrors
            self.outcome = outcome
            self.voice = voice
            self.delayMs = delayMs
        }
    }

    /// A message the sandbox took.
    public struct Received: Sendable, Codable, Equatable {
        public var api: String
        public var id: String
        public var to: String
        public var from: String
        public var body: String
        public var clientCorrelator: String?
    }

    /// An email the sandbox took (SendGrid's v3 mail send).
    public struct ReceivedEmail: Sendable, Codable, Equatable {
        public var id: String
        public var to: String
        public var from: String
        public var subject: String
        public var text: String
    }

    /// A push the sandbox took (FCM or APNs).
    public struct ReceivedPush: Sendable, Codable, Equatable {
        /// "fcm" or "apns".
        public var platform: String
        public var id: String
        public var token: String
        public var title: String
        public var body: String
        public var data: [String: String]
        /// FCM's android priority (HIGH, NORMAL), or APNs' (10, 5).
        public var priority: String
    }

    /// A call the sandbox placed.
    public struct ReceivedCall: Sendable, Codable, Equatable {
        public var id: String
        public var to: String
        public var from: String
        public var twiml: String
        public var timeout: Int
    }

    struct State {
        var sendErrors: [String: [Int]] = [:]
        var outcomes: [String: Outcome] = [:]
        var voiceOutcomes: [String: VoiceOutcome] = [:]
        var calls: [ReceivedCall] = []
        var emails: [ReceivedEmail] = []
        var pushes: [ReceivedPush] = []
        var pushGone: [String: Bool] = [:]
        var fcmTokens: [String: Date] = [:]
        var hangups: [String] = []
        var delays: [String: Int] = [:]
        var received: [Received] = []
        var byCorrelator: [String: Received] = [:]
        var tokens: Set<String> = []
        var sendAttempts: [String: Int] = [:]
    }

    public let configuration: Configuration
    let logger: Logger
    let state = Mutex(State())
    private let bound = BoundPort()

    public init(configuration: Configuration = .init(), logger: Logger = Logger(label: "caremesh.sandbox")) {
        self.configuration = configuration
        self.logger = logger
    }

    /// The port it listens on, once running.
    public func port() async -> Int { await bound.wait() }

    public var baseURL: String { "http://\(configuration.host):\(bound.current ?? configuration.port)" }

    // MARK: - Scripts

    public func apply(_ script: Script) {
        state.withLock { s in
            for api in script.api.map({ [$0] }) ?? ["twilio", "orange"] {
                let key = api + "|" + (script.to ?? "*")
                if let errors = script.sendErrors { s.sendErrors[key] = errors }
                if let outcome = script.outcome { s.outcomes[key] = outcome }
                if let voice = script.voice { s.voiceOutcomes[key] = voice }
                if let delay = script.delayMs { s.delays[key] = delay }
                if let gone = script.pushGone { s.pushGone[key] = gone }
            }
        }
    }

    /// Forgets scripts, messages and calls (and Orange's tokens).
    public func reset() { state.withLock { $0 = State() } }

    /// Every message taken, oldest first.
    public var received: [Received] { state.withLock { $0.received } }

    /// Every email taken, oldest first.
    public var emails: [ReceivedEmail] { state.withLock { $0.emails } }

    func recordEmail(_ email: ReceivedEmail) { state.withLock { $0.emails.append(email) } }

    /// Every push taken, oldest first.
    public var pushes: [ReceivedPush] { state.withLock { $0.pushes } }

    func recordPush(_ push: ReceivedPush) { state.withLock { $0.pushes.append(push) } }

    /// Every call placed, oldest first, and the ids of those hung up.
    public var calls: [ReceivedCall] { state.withLock { $0.calls } }
    public var hangups: [String] { state.withLock { $0.hangups } }

    /// Send requests answered, successful or not, per API.
    public func attempts(_ api: String) -> Int { state.withLock { $0.sendAttempts[api] ?? 0 } }

    /// The scripted HTTP error for this send, if any (consumed).
    func nextError(api: String, to: String) -> Int? {
        state.withLock { s in
            s.sendAttempts[api, default: 0] += 1
            for key in [api + "|" + to, api + "|*"] {
                if var errors = s.sendErrors[key], !errors.isEmpty {
                    let e = errors.removeFirst()
                    s.sendErrors[key] = errors
                    return e
                }
            }
            return nil
        }
    }

    /// What the script says for `api` and `to`: the number's own entry, else the API's.
    func scripted<T: Sendable>(_ table: KeyPath<State, [String: T]>, api: String, to: String) -> T? {
        state.withLock { s in s[keyPath: table][api + "|" + to] ?? s[keyPath: table][api + "|*"] }
    }

    /// How a message to `to` ends, and the extra delay before it does.
    func plan(api: String, to: String) -> (Outcome, Int) {
        (scripted(\.outcomes, api: api, to: to) ?? .delivered, scripted(\.delays, api: api, to: to) ?? 0)
    }

    // MARK: - Server

    public func run() async throws {
        let router = Router()
        router.post("/2010-04-01/Accounts/:sid/Messages.json") { request, context in
            do { return try await self.twilioSend(request, context) } catch let r as Refusal { return r.response }
        }
        router.post("/2010-04-01/Accounts/:sid/Calls.json") { request, context in
            do { return try await self.twilioCall(request, context) } catch let r as Refusal { return r.response }
        }
        router.post("/2010-04-01/Accounts/:sid/Calls/:call") { request, context in
            do { return try await self.twilioHangUp(request, context) } catch let r as Refusal { return r.response }
        }
        router.post("/oauth/v3/token") { request, context in try await self.orangeToken(request, context) }
        router.post("/v3/mail/send") { request, context in try await self.sendGridSend(request, context) }
        router.get("/sandbox/emails") { _, _ in Self.json(.ok, try JSONEncoder().encode(self.emails)) }
        router.post("/token") { request, context in try await self.fcmToken(request, context) }
        router.post("/v1/projects/:project/messages:send") { request, context in try await self.fcmSend(request, context) }
        router.post("/3/device/:token") { request, context in try await self.apnsSend(request, context) }
        router.get("/sandbox/pushes") { _, _ in Self.json(.ok, try JSONEncoder().encode(self.pushes)) }
        router.post("/smsmessaging/v1/outbound/:sender/requests") { request, context in
            try await self.orangeSend(request, context)
        }
        router.post("/sandbox/script") { request, context -> HTTPResponse.Status in
            self.apply(try await request.decode(as: Script.self, context: context))
            return .noContent
        }
        router.post("/sandbox/reset") { _, _ -> HTTPResponse.Status in
            self.reset()
            return .noContent
        }
        router.get("/sandbox/messages") { _, _ in
            Self.json(.ok, try JSONEncoder().encode(self.received))
        }
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "caremesh-sandbox"),
            onServerRunning: { channel in self.bound.set(channel.localAddress?.port ?? 0) },
            logger: logger)
        try await app.run()
    }

    static func json(_ status: HTTPResponse.Status, _ body: Data) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    static func json(_ status: HTTPResponse.Status, _ object: ProviderJSON) -> Response {
        json(status, object.data)
    }

    static func basicCredentials(_ request: Request) -> (String, String)? {
        guard let value = request.headers[.authorization], value.hasPrefix("Basic "),
              let decoded = Data(base64Encoded: String(value.dropFirst(6))).flatMap({ String(data: $0, encoding: .utf8) }),
              let colon = decoded.firstIndex(of: ":") else { return nil }
        return (String(decoded[..<colon]), String(decoded[decoded.index(after: colon)...]))
    }

    /// `prefix` and 32 random lowercase hex digits, as Twilio's SIDs (128 bits from the
    /// system's generator: also unguessable enough for the sandbox's OAuth tokens). Written
    /// directly: Foundation's `UUID()` opens and reads /dev/urandom on each call here, and
    /// removing its dashes went through `NSString` (together ~12% of the sandbox's CPU under
    /// `bench messaging`).
    static func newID(_ prefix: String) -> String {
        var random = SystemRandomNumberGenerator()
        let high: UInt64 = random.next(), low: UInt64 = random.next()
        let digits: StaticString = "0123456789abcdef"
        return prefix + String(unsafeUninitializedCapacity: 32) { buffer in
            for i in 0..<32 {
                let nibble = ((i < 16 ? high : low) >> UInt64(60 - 4 * (i % 16))) & 0xF
                buffer[i] = digits.utf8Start[Int(nibble)]
            }
            return 32
        }
    }
}

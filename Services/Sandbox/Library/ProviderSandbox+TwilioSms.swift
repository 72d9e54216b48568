import AsyncHTTPClient
import CareMeshRPC
import Foundation
import Hummingbird
import Logging
import MessagingService
import NIOCore
import ServiceLifecycle
import Synchronization

/// Twilio's Messages API, as Twilio checks it: HTTP Basic with the account SID (also the
/// path's) and the auth token, a form body with a valid `To` and a `Body`; a message taken is
/// answered 201 and followed by signed status callbacks to its `StatusCallback`.
extension ProviderSandbox {
    func twilioError(_ status: HTTPResponse.Status, code: Int, _ message: String) -> Response {
        Self.json(status, ["code": .int(code), "message": .string(message), "more_info": "https://www.twilio.com/docs/errors/\(code)",
                           "status": .int(Int(status.code))])
    }

    /// A request Twilio refuses, with the answer it gives.
    struct Refusal: Error { let response: Response }

    /// HTTP Basic with the account SID (also the path's) and the auth token, as Twilio checks it.
    func requireTwilioAccount(_ request: Request, _ context: BasicRequestContext) throws(Refusal) {
        guard let (user, password) = Self.basicCredentials(request), user == configuration.twilioAccountSID,
              user == context.parameters.get("sid"), password == configuration.twilioAuthToken else {
            throw Refusal(response: twilioError(.unauthorized, code: 20003, "Authenticate"))
        }
    }

    /// An authenticated Twilio request's form (a field by name: its last value) and its `To`,
    /// checked as Twilio checks them.
    func twilioRequest(_ request: Request, _ context: BasicRequestContext) async throws -> (field: (String) -> String?, to: String) {
        try requireTwilioAccount(request, context)
        var body = request
        guard let form = FormEncoding.decode(String(buffer: try await body.collectBody(upTo: 1 << 20))) else {
            throw Refusal(response: twilioError(.badRequest, code: 21000, "The request body could not be read"))
        }
        let field = { (name: String) in form.last { $0.name == name }?.value }
        let to = field("To") ?? ""
        guard FieldViolations.isE164(to) else {
            throw Refusal(response: twilioError(.badRequest, code: 21211, "The 'To' number \(to) is not a valid phone number."))
        }
        return (field, to)
    }

    func twilioSend(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let sid = context.parameters.get("sid") ?? ""
        let (field, to) = try await twilioRequest(request, context)
        let from = field("From") ?? "", text = field("Body") ?? ""
        guard !text.isEmpty else { return twilioError(.badRequest, code: 21602, "Message body is required.") }
        if let status = nextError(api: "twilio", to: to) {
            return twilioError(HTTPResponse.Status(code: status), code: status == 429 ? 20429 : 20500, "Scripted failure")
        }
        let message = Received(api: "twilio", id: Self.newID("SM"), to: to, from: from, body: text, clientCorrelator: nil)
        state.withLock { $0.received.append(message) }
        if let callback = field("StatusCallback") {
            let (outcome, delay) = plan(api: "twilio", to: to)
            Task { await self.twilioCallbacks(message, outcome: outcome, extraDelayMs: delay, url: callback) }
        }
        return Self.json(.created, ["sid": .string(message.id), "account_sid": .string(sid), "to": .string(to), "from": .string(from),
                                    "body": .string(text), "status": "queued", "num_segments": "\(SmsSegments(text).segments)",
                                    "date_created": .string(Date().formatted(.iso8601))])
    }

    /// `sent`, then the outcome, each a signed form POST to the message's callback URL.
    func twilioCallbacks(_ m: Received, outcome: Outcome, extraDelayMs: Int, url: String) async {
        try? await Task.sleep(for: configuration.callbackDelay)
        await postTwilio(url: url, [("MessageSid", m.id), ("SmsSid", m.id), ("AccountSid", configuration.twilioAccountSID),
                                    ("From", m.from), ("To", m.to), ("MessageStatus", "sent"), ("SmsStatus", "sent")])
        try? await Task.sleep(for: configuration.callbackDelay + .milliseconds(extraDelayMs))
        var final: [(name: String, value: String)] = [("MessageSid", m.id), ("SmsSid", m.id), ("AccountSid", configuration.twilioAccountSID),
                                                      ("From", m.from), ("To", m.to), ("MessageStatus", outcome.rawValue),
                                                      ("SmsStatus", outcome.rawValue)]
        if outcome != .delivered { final.append(("ErrorCode", outcome == .failed ? "30008" : "30003")) }
        await postTwilio(url: url, final)
    }

    /// Posts a form as Twilio does, signed with the auth token.
    public func postTwilio(url: String, _ form: [(name: String, value: String)]) async {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.headers.add(name: "X-Twilio-Signature",
                            value: TwilioSignature.compute(authToken: configuration.twilioAuthToken, url: url, params: form))
        request.headers.add(name: "I-Twilio-Idempotency-Token", value: Self.newID(""))
        request.body = .bytes(ByteBuffer(string: FormEncoding.encode(form)))
        await post(request)
    }

    /// The client its callbacks go out on: as many connections as Twilio's callbacks come on
    /// at a busy moment (`HTTPClient.shared` keeps 8 per host, and queued callbacks then lag
    /// seconds behind their messages under load).
    static let callbackClient: HTTPClient = {
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow)
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// Callbacks in flight at once, as many as the client's connections; the rest wait their
    /// turn, in order. AsyncHTTPClient keeps the requests waiting for a connection in a queue
    /// whose timeouts remove from the middle (linear each): with tens of thousands queued (a
    /// burst of sends, two callbacks each) those removals took its event loop whole, the
    /// connections starved, and every callback timed out while the sandbox spun at 100% CPU.
    /// Waiting here is O(1), and a request's timeout starts once it has a connection.
    static let callbackLane = FIFOLimiter(limit: 64)

    func post(_ request: HTTPClientRequest) async {
        await Self.callbackLane.acquire()
        defer { Self.callbackLane.release() }
        do {
            let response = try await Self.callbackClient.execute(request, timeout: .seconds(10))
            _ = try await response.body.collect(upTo: 1 << 20)
            if response.status.code >= 300 {
                logger.notice("sandbox callback refused", metadata: ["http.status": "\(response.status.code)"])
            }
        } catch {
            logger.notice("sandbox callback failed", metadata: ["error": "\(type(of: error))"])
        }
    }
}

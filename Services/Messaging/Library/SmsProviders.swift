import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// One SMS for a provider to take.
public struct OutboundSms: Sendable, Equatable {
    public var id: UUID
    /// E.164.
    public var to: String
    public var body: String
    /// Our idempotency key (Orange refuses a second request with the same one).
    public var clientCorrelator: String

    public init(id: UUID, to: String, body: String, clientCorrelator: String) {
        self.id = id
        self.to = to
        self.body = body
        self.clientCorrelator = clientCorrelator
    }
}

/// What a provider answered to a send.
public struct ProviderAcceptance: Sendable, Equatable {
    public var provider: String
    public var providerMessageID: String
    /// The sender address used.
    public var from: String
}

/// Why a provider did not take a message. `retryable` errors (the provider's 5xx, 429, a
/// timeout, a refused connection) are worth another try, there or at the next provider;
/// permanent ones (an invalid number, a refused message) are not.
public struct ProviderError: Error, Sendable, Equatable, CustomStringConvertible {
    public var provider: String
    public var retryable: Bool
    /// The provider's error code, or an HTTP status, or "network".
    public var code: String
    /// The provider's text (never the message body).
    public var message: String
    /// The HTTP status it answered with (nil: no answer).
    public var httpStatus: Int? = nil

    public var description: String { "\(provider)\(httpStatus.map { " HTTP \($0)" } ?? "") \(code): \(message)" }
}

/// A provider's SMS API.
public protocol SmsProvider: Sendable {
    /// "twilio" or "orange": what `sms_messages.provider` records and webhooks are routed by.
    var name: String { get }
    func send(_ sms: OutboundSms, timeout: Duration) async throws(ProviderError) -> ProviderAcceptance
}

/// The HTTP client every provider shares: one connection pool per host, sized for many sends
/// in flight, redirects not followed (an API answers, it does not redirect).
enum ProviderHTTP {
    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow)
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(30))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// Executes `request`; a transport failure (refused, reset, timed out) is a retryable
    /// `ProviderError` with code "network".
    static func execute(_ request: HTTPClientRequest, provider: String, timeout: Duration,
                        maxBody: Int = 1 << 20) async throws(ProviderError) -> (status: HTTPResponseStatus, body: Data) {
        let (status, _, body) = try await exchange(request, provider: provider, timeout: timeout, maxBody: maxBody)
        return (status, body)
    }

    /// `execute`, with the response's headers.
    static func exchange(_ request: HTTPClientRequest, provider: String, timeout: Duration,
                         maxBody: Int = 1 << 20) async throws(ProviderError) -> (status: HTTPResponseStatus, headers: HTTPHeaders, body: Data) {
        do {
            let response = try await client.execute(request, timeout: .nanoseconds(Int64(timeout.nanoseconds)))
            let body = try await response.body.collect(upTo: maxBody)
            return (response.status, response.headers, Data(body.readableBytesView))
        } catch {
            throw ProviderError(provider: provider, retryable: true, code: "network", message: "\(type(of: error))")
        }
    }

    /// A provider's base URL without its trailing slash (paths are appended with their own).
    static func base(_ url: String) -> String { url.hasSuffix("/") ? String(url.dropLast()) : url }

    static func basic(_ user: String, _ password: String) -> String {
        "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
    }

    /// A status worth retrying: the provider's own trouble or its rate limit.
    static func isRetryable(_ status: HTTPResponseStatus) -> Bool {
        status.code >= 500 || status == .tooManyRequests || status == .requestTimeout
    }
}

/// Twilio's Messages API: `Messages.json` with `To`, `From`, `Body` and `StatusCallback`.
public struct TwilioSmsProvider: SmsProvider {
    public var name: String { "twilio" }
    let api: TwilioAPI
    public let from: String
    /// Where Twilio posts status callbacks (the router's `/webhooks/sms/twilio`), or nil.
    public let statusCallback: String?

    public init(baseURL: String, accountSID: String, authToken: String, from: String, statusCallback: String?) {
        api = TwilioAPI(baseURL: baseURL, accountSID: accountSID, authToken: authToken)
        self.from = from
        self.statusCallback = statusCallback
    }

    public func send(_ sms: OutboundSms, timeout: Duration) async throws(ProviderError) -> ProviderAcceptance {
        var form: [(name: String, value: String)] = [("To", sms.to), ("From", from), ("Body", sms.body)]
        // Our id rides in the callback URL, so a callback names the message even before its
        // `MessageSid` is recorded here.
        if let statusCallback { form.append(("StatusCallback", "\(statusCallback)?m=\(sms.id.text)")) }
        return ProviderAcceptance(provider: name, providerMessageID: try await api.post("Messages.json", form, timeout: timeout), from: from)
    }
}

/// Twilio's REST API as the SMS and voice providers call it: `POST
/// /2010-04-01/Accounts/{AccountSid}/{path}` with a form body and HTTP Basic authorization
/// (account SID and auth token); it answers with the resource (its `sid`) or an error object
/// (`code`, `message`).
struct TwilioAPI: Sendable {
    let baseURL: String
    let accountSID: String
    let authToken: String

    init(baseURL: String, accountSID: String, authToken: String) {
        self.baseURL = ProviderHTTP.base(baseURL)
        self.accountSID = accountSID
        self.authToken = authToken
    }

    struct Resource: Decodable { var sid: String }
    struct Failure: Decodable { var code: Int?; var message: String? }

    /// The sid of the resource the POST created or updated.
    func post(_ path: String, _ form: [(name: String, value: String)], timeout: Duration) async throws(ProviderError) -> String {
        var request = HTTPClientRequest(url: "\(baseURL)/2010-04-01/Accounts/\(accountSID)/\(path)")
        request.method = .POST
        request.headers.add(name: "Authorization", value: ProviderHTTP.basic(accountSID, authToken))
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.headers.add(name: "Accept", value: "application/json")
        request.body = .bytes(ByteBuffer(string: FormEncoding.encode(form)))
        let (status, body) = try await ProviderHTTP.execute(request, provider: "twilio", timeout: timeout)
        if status == .created || status == .ok, let resource = try? JSONDecoder().decode(Resource.self, from: body) {
            return resource.sid
        }
        let failure = try? JSONDecoder().decode(Failure.self, from: body)
        throw ProviderError(provider: "twilio", retryable: ProviderHTTP.isRetryable(status),
                            code: failure?.code.map(String.init) ?? "\(status.code)",
                            message: failure?.message ?? status.reasonPhrase, httpStatus: Int(status.code))
    }
}

/// Orange's SMS API (seed 004): an OAuth 2.0 client-credentials token from
/// `POST /oauth/v3/token`, kept until shortly before it expires and fetched again after a 401,
/// then `POST /smsmessaging/v1/outbound/{sender}/requests` with an `outboundSMSMessageRequest`.
/// Our message id goes out as `callbackData`, so the delivery receipt names the message.
public final class OrangeSmsProvider: SmsProvider {
    public var name: String { "orange" }
    public let baseURL: String
    public let clientID: String
    public let clientSecret: String
    public let sender: String
    public let senderName: String?
    /// Where Orange posts delivery receipts (the router's `/webhooks/sms/orange`), or nil.
    public let notifyURL: String?
    private let token = Mutex<(value: String, expires: ContinuousClock.Instant)?>(nil)

    public init(baseURL: String, clientID: String, clientSecret: String, sender: String, senderName: String? = nil, notifyURL: String?) {
        self.baseURL = ProviderHTTP.base(baseURL)
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.sender = sender
        self.senderName = senderName
        self.notifyURL = notifyURL
    }

    struct Accepted: Decodable {
        struct Body: Decodable { var resourceURL: String? }
        var outboundSMSMessageRequest: Body
    }
    struct Failure: Decodable {
        struct Exception: Decodable { var messageId: String?; var text: String? }
        struct Errors: Decodable { var serviceException: Exception?; var policyException: Exception? }
        var requestError: Errors?
    }

    /// A valid access token: the cached one until a minute before it expires.
    func accessToken(timeout: Duration, refresh: Bool = false) async throws(ProviderError) -> String {
        if !refresh, let cached = token.withLock({ $0 }), cached.expires > .now { return cached.value }
        var request = HTTPClientRequest(url: "\(baseURL)/oauth/v3/token")
        request.method = .POST
        request.headers.add(name: "Authorization", value: ProviderHTTP.basic(clientID, clientSecret))
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.headers.add(name: "Accept", value: "application/json")
        request.body = .bytes(ByteBuffer(string: "grant_type=client_credentials"))
        let (status, body) = try await ProviderHTTP.execute(request, provider: name, timeout: timeout)
        guard status == .ok, let answer = try? JSONDecoder().decode(OrangeSms.Token.self, from: body) else {
            // A refused client is configuration, not load: retrying will not help.
            throw ProviderError(provider: name, retryable: ProviderHTTP.isRetryable(status), code: "token",
                                message: "the access token request was refused", httpStatus: Int(status.code))
        }
        let lifetime = max(answer.expiresIn - 60, 1)
        token.withLock { $0 = (answer.accessToken, .now + .seconds(lifetime)) }
        return answer.accessToken
    }

    public func send(_ sms: OutboundSms, timeout: Duration) async throws(ProviderError) -> ProviderAcceptance {
        let payload = OrangeSms.SendRequest(to: sms.to, from: sender, senderName: senderName, text: sms.body,
                                            clientCorrelator: sms.clientCorrelator, notifyURL: notifyURL,
                                            callbackData: sms.id.uuidString.lowercased())
        let encoded: Data
        do { encoded = try JSONEncoder().encode(payload) } catch {
            throw ProviderError(provider: name, retryable: false, code: "encoding", message: "the request could not be encoded")
        }
        var refreshed = false
        while true {
            let bearer = try await accessToken(timeout: timeout, refresh: refreshed)
            var request = HTTPClientRequest(url: baseURL + OrangeSms.sendPath(sender: sender))
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer " + bearer)
            request.headers.add(name: "Content-Type", value: "application/json")
            request.headers.add(name: "Accept", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: encoded))
            let (status, body) = try await ProviderHTTP.execute(request, provider: name, timeout: timeout)
            if status == .unauthorized, !refreshed {
                refreshed = true
                continue
            }
            if status == .created || status == .ok {
                let url = (try? JSONDecoder().decode(Accepted.self, from: body))?.outboundSMSMessageRequest.resourceURL
                let id = url.flatMap { $0.split(separator: "/").last.map(String.init) } ?? sms.clientCorrelator
                return ProviderAcceptance(provider: name, providerMessageID: id, from: sender)
            }
            let failure = try? JSONDecoder().decode(Failure.self, from: body)
            let exception = failure?.requestError?.serviceException ?? failure?.requestError?.policyException
            throw ProviderError(provider: name, retryable: ProviderHTTP.isRetryable(status),
                                code: exception?.messageId ?? "\(status.code)", message: exception?.text ?? status.reasonPhrase,
                                httpStatus: Int(status.code))
        }
    }
}

import Foundation

/// Messaging's settings, from the environment (`MESSAGING_…`). Switching from the sandbox to
/// the real providers is only this: their base URLs and credentials.
///
/// | key | meaning |
/// |---|---|
/// | `MESSAGING_SMS_PROVIDERS` | providers in failover order, e.g. `twilio,orange` (default: each one configured, Twilio first) |
/// | `MESSAGING_TWILIO_URL` | Twilio's API (`https://api.twilio.com`) |
/// | `MESSAGING_TWILIO_ACCOUNT_SID`, `MESSAGING_TWILIO_AUTH_TOKEN`, `MESSAGING_TWILIO_FROM` | account, auth token (also the webhook signing key), sender number |
/// | `MESSAGING_ORANGE_URL` | Orange's API (`https://api.orange.com`) |
/// | `MESSAGING_ORANGE_CLIENT_ID`, `MESSAGING_ORANGE_CLIENT_SECRET`, `MESSAGING_ORANGE_SENDER` | OAuth client, sender number |
/// | `MESSAGING_ORANGE_WEBHOOK_KEY` | the secret in the receipts' `notifyURL` (Orange signs nothing) |
/// | `MESSAGING_SENDGRID_URL` | SendGrid's API (`https://api.sendgrid.com`) |
/// | `MESSAGING_SENDGRID_API_KEY`, `MESSAGING_EMAIL_FROM` | the API key, and the address emails come from |
/// | `MESSAGING_FCM_CREDENTIALS_FILE`, `MESSAGING_FCM_URL` | a Google service account's key file (JSON), FCM's API (`https://fcm.googleapis.com`) |
/// | `MESSAGING_APNS_KEY_FILE`, `MESSAGING_APNS_KEY_ID`, `MESSAGING_APNS_TEAM_ID`, `MESSAGING_APNS_TOPIC` | an APNs auth key (`.p8`), its id, the team, the app's bundle id |
/// | `MESSAGING_APNS_URL` | APNs (`https://api.push.apple.com`; `https://api.sandbox.push.apple.com` for development builds) |
/// | `MESSAGING_WEBHOOK_BASE_URL` | where providers reach the router's HTTP edge, e.g. `https://edge.example.org` |
/// | `MESSAGING_SEND_TIMEOUT_MS` | one provider request (10000) |
/// | `MESSAGING_RETRY_BACKOFF_MS` | the first retry's delay, doubled each time (2000) |
/// | `MESSAGING_FACILITY_NAME` | the `{facility_name}` of appointment reminders (`CareMesh`) |
/// | `MESSAGING_OVERDUE_AFTER_HOURS` | how long after an appointment's end, still not completed, the overdue reminder goes (24) |
/// | `MESSAGING_WEBHOOK_LOG_RETENTION_DAYS` | how long webhook logs and their idempotency records are kept (90) |
/// | `MESSAGING_RETENTION_BATCH` | rows of each deleted per transaction by the retention job (10000) |
public struct MessagingConfiguration: Sendable {
    public struct Twilio: Sendable, Equatable {
        public var baseURL = "https://api.twilio.com"
        public var accountSID: String
        public var authToken: String
        public var from: String
    }

    public struct Orange: Sendable, Equatable {
        public var baseURL = "https://api.orange.com"
        public var clientID: String
        public var clientSecret: String
        public var sender: String
        public var webhookKey: String
    }

    public struct SendGrid: Sendable, Equatable {
        public var baseURL = "https://api.sendgrid.com"
        public var apiKey: String
        public var from: String
    }

    public struct Fcm: Sendable, Equatable {
        public var baseURL = "https://fcm.googleapis.com"
        public var account: FcmServiceAccount
    }

    public struct Apns: Sendable, Equatable {
        public var baseURL = "https://api.push.apple.com"
        public var key: ApnsKey
    }

    public var twilio: Twilio?
    public var orange: Orange?
    /// The email provider, or nil (emails wait, queued, until one is configured).
    public var sendGrid: SendGrid?
    /// The push providers, each or neither (pushes for a platform not configured wait, queued).
    public var fcm: Fcm?
    public var apns: Apns?
    /// Provider names in failover order.
    public var providerOrder: [String] = []
    public var webhookBaseURL: String?
    public var sendTimeout: Duration = .seconds(10)
    /// At most this many retries after the first attempt (the issue's 3).
    public var maxRetries = 3
    public var retryBackoff: Duration = .seconds(2)
    /// How long a claimed message is the claimer's before another sender may take it.
    public var lease: Duration = .seconds(60)
    /// Messages claimed, and sent concurrently, per round.
    public var batchSize = 128
    /// Rounds in flight at once: while one waits for its provider's answers, another claims,
    /// sends or records (they share the work as separate instances do: leases, SKIP LOCKED).
    public var sendRounds = 4
    public var pollInterval: Duration = .milliseconds(250)
    /// What appointment reminders call the place of care.
    public var facilityName = "CareMesh"
    /// How long after an appointment's end the overdue reminder goes, unless it was completed.
    public var overdueAfter: Duration = .seconds(86_400)
    /// How long webhook logs (PHI) and the idempotency records of applied webhooks are kept.
    public var webhookLogRetention: Duration = .seconds(90 * 86_400)
    /// Rows of each table the retention job deletes per transaction.
    public var retentionBatch = 10_000

    public init() {}

    public struct BadValue: Error, CustomStringConvertible {
        public let key: String
        public let why: String
        public var description: String { "\(key) \(why)" }
    }

    public init(environment env: [String: String]) throws(BadValue) {
        func value(_ key: String) -> String? { env[key].flatMap { $0.isEmpty ? nil : $0 } }
        func e164(_ key: String) throws(BadValue) -> String? {
            guard let v = value(key) else { return nil }
            guard v.wholeMatch(of: /\+[1-9][0-9]{6,14}/) != nil else { throw BadValue(key: key, why: "must be an E.164 number") }
            return v
        }
        if let sid = value("MESSAGING_TWILIO_ACCOUNT_SID") {
            guard let token = value("MESSAGING_TWILIO_AUTH_TOKEN") else { throw BadValue(key: "MESSAGING_TWILIO_AUTH_TOKEN", why: "is needed") }
            guard let from = try e164("MESSAGING_TWILIO_FROM") else { throw BadValue(key: "MESSAGING_TWILIO_FROM", why: "is needed") }
            twilio = Twilio(accountSID: sid, authToken: token, from: from)
            if let url = value("MESSAGING_TWILIO_URL") { twilio!.baseURL = url }
        }
        if let id = value("MESSAGING_ORANGE_CLIENT_ID") {
            guard let secret = value("MESSAGING_ORANGE_CLIENT_SECRET") else { throw BadValue(key: "MESSAGING_ORANGE_CLIENT_SECRET", why: "is needed") }
            guard let sender = try e164("MESSAGING_ORANGE_SENDER") else { throw BadValue(key: "MESSAGING_ORANGE_SENDER", why: "is needed") }
            guard let key = value("MESSAGING_ORANGE_WEBHOOK_KEY"), key.count >= 16 else {
                throw BadValue(key: "MESSAGING_ORANGE_WEBHOOK_KEY", why: "must be a secret of at least 16 characters")
            }
            orange = Orange(clientID: id, clientSecret: secret, sender: sender, webhookKey: key)
            if let url = value("MESSAGING_ORANGE_URL") { orange!.baseURL = url }
        }
        if let key = value("MESSAGING_SENDGRID_API_KEY") {
            guard let from = value("MESSAGING_EMAIL_FROM"), from.contains("@") else {
                throw BadValue(key: "MESSAGING_EMAIL_FROM", why: "must be an email address")
            }
            sendGrid = SendGrid(apiKey: key, from: from)
            if let url = value("MESSAGING_SENDGRID_URL") { sendGrid!.baseURL = url }
        }
        try parsePush(value)
        if let order = value("MESSAGING_SMS_PROVIDERS") {
            providerOrder = order.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            for name in providerOrder {
                guard (name == "twilio" && twilio != nil) || (name == "orange" && orange != nil) else {
                    throw BadValue(key: "MESSAGING_SMS_PROVIDERS", why: "names \(name), which is not configured")
                }
            }
        } else {
            providerOrder = (twilio == nil ? [] : ["twilio"]) + (orange == nil ? [] : ["orange"])
        }
        webhookBaseURL = value("MESSAGING_WEBHOOK_BASE_URL").map(ProviderHTTP.base)
        if let text = value("MESSAGING_SEND_TIMEOUT_MS") {
            guard let ms = Int(text), (100...120_000).contains(ms) else { throw BadValue(key: "MESSAGING_SEND_TIMEOUT_MS", why: "must be 100 to 120000") }
            sendTimeout = .milliseconds(ms)
        }
        if let text = value("MESSAGING_SEND_ROUNDS") {
            guard let n = Int(text), (1...16).contains(n) else { throw BadValue(key: "MESSAGING_SEND_ROUNDS", why: "must be 1 to 16") }
            sendRounds = n
        }
        if let text = value("MESSAGING_RETRY_BACKOFF_MS") {
            guard let ms = Int(text), (10...600_000).contains(ms) else { throw BadValue(key: "MESSAGING_RETRY_BACKOFF_MS", why: "must be 10 to 600000") }
            retryBackoff = .milliseconds(ms)
        }
        if let name = value("MESSAGING_FACILITY_NAME") {
            guard name.count <= 60 else { throw BadValue(key: "MESSAGING_FACILITY_NAME", why: "must be at most 60 characters") }
            facilityName = name
        }
        if let text = value("MESSAGING_OVERDUE_AFTER_HOURS") {
            guard let hours = Int(text), (1...2_160).contains(hours) else {
                throw BadValue(key: "MESSAGING_OVERDUE_AFTER_HOURS", why: "must be 1 to 2160")
            }
            overdueAfter = .seconds(hours * 3_600)
        }
        if let text = value("MESSAGING_WEBHOOK_LOG_RETENTION_DAYS") {
            guard let days = Int(text), (1...3_650).contains(days) else {
                throw BadValue(key: "MESSAGING_WEBHOOK_LOG_RETENTION_DAYS", why: "must be 1 to 3650")
            }
            webhookLogRetention = .seconds(days * 86_400)
        }
        if let text = value("MESSAGING_RETENTION_BATCH") {
            guard let n = Int(text), (1...100_000).contains(n) else { throw BadValue(key: "MESSAGING_RETENTION_BATCH", why: "must be 1 to 100000") }
            retentionBatch = n
        }
    }

    /// Where a provider's webhooks of `kind` arrive at the edge.
    public func webhookURL(kind: String, provider: String) -> String? {
        webhookBaseURL.map { "\($0)/webhooks/\(kind)/\(provider)" }
    }

    /// The configured SMS providers, in failover order.
    public func smsProviders() -> [any SmsProvider] {
        providerOrder.compactMap { name -> (any SmsProvider)? in
            switch name {
            case "twilio":
                guard let t = twilio else { return nil }
                return TwilioSmsProvider(baseURL: t.baseURL, accountSID: t.accountSID, authToken: t.authToken, from: t.from,
                                         statusCallback: webhookURL(kind: "sms", provider: "twilio"))
            case "orange":
                guard let o = orange else { return nil }
                let notify = webhookURL(kind: "sms", provider: "orange").map { "\($0)?key=\(o.webhookKey)" }
                return OrangeSmsProvider(baseURL: o.baseURL, clientID: o.clientID, clientSecret: o.clientSecret, sender: o.sender,
                                         notifyURL: notify)
            default: return nil
            }
        }
    }

    /// The sender address recorded before a provider took a message: the first provider's.
    var defaultSender: String {
        switch providerOrder.first {
        case "twilio": twilio?.from ?? ""
        case "orange": orange?.sender ?? ""
        default: ""
        }
    }

    /// The delay before retry `n` (1-based): backoff, 2×, 4×.
    func retryDelay(_ n: Int) -> Duration { retryBackoff * (1 << max(0, n - 1)) }
}

import Foundation
@testable import MessagingService
import Testing

/// Messaging's settings: providers and their failover order, webhook URLs, retry delays, and
/// bad values refused by name.
@Suite struct MessagingConfigurationTests {
    static let twilio = ["MESSAGING_TWILIO_ACCOUNT_SID": "AC1", "MESSAGING_TWILIO_AUTH_TOKEN": "t", "MESSAGING_TWILIO_FROM": "+15005550006"]
    static let orange = ["MESSAGING_ORANGE_CLIENT_ID": "c", "MESSAGING_ORANGE_CLIENT_SECRET": "s", "MESSAGING_ORANGE_SENDER": "+33700000000",
                         "MESSAGING_ORANGE_WEBHOOK_KEY": "0123456789abcdef"]

    func key(_ env: [String: String]) -> String? {
        do { _ = try MessagingConfiguration(environment: env); return nil } catch { return error.key }
    }

    @Test("nothing configured: no provider, no callbacks; each configured provider joins the order, Twilio first")
    func providers() throws {
        let none = try MessagingConfiguration(environment: [:])
        #expect(none.providerOrder.isEmpty && none.smsProviders().isEmpty && none.webhookURL(kind: "sms", provider: "twilio") == nil)
        let both = try MessagingConfiguration(environment: Self.twilio.merging(Self.orange) { $1 }
            .merging(["MESSAGING_WEBHOOK_BASE_URL": "https://edge.example.org/"]) { $1 })
        #expect(both.providerOrder == ["twilio", "orange"])
        #expect(both.smsProviders().map(\.name) == ["twilio", "orange"])
        #expect(both.defaultSender == "+15005550006")
        #expect(both.webhookURL(kind: "voice", provider: "twilio") == "https://edge.example.org/webhooks/voice/twilio")
        let reversed = try MessagingConfiguration(environment: Self.twilio.merging(Self.orange) { $1 }
            .merging(["MESSAGING_SMS_PROVIDERS": "orange, twilio"]) { $1 })
        #expect(reversed.providerOrder == ["orange", "twilio"])
        #expect(reversed.defaultSender == "+33700000000")
    }

    @Test("push: FCM from a service account's key file, APNs from a .p8 and its ids; a bad file or id refused by name")
    func push() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("caremesh-push-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let account = try FcmServiceAccount.generate(projectID: "p", clientEmail: "m@p.iam.gserviceaccount.com", tokenURI: "https://oauth2.googleapis.com/token")
        let fcm = dir.appendingPathComponent("fcm.json"), p8 = dir.appendingPathComponent("AuthKey.p8"), junk = dir.appendingPathComponent("junk")
        try account.json().write(to: fcm)
        try Data(ApnsKey.generatePEM().utf8).write(to: p8)
        try Data("not a key".utf8).write(to: junk)
        let apns = ["MESSAGING_APNS_KEY_FILE": p8.path, "MESSAGING_APNS_KEY_ID": "ABC123DEFG", "MESSAGING_APNS_TEAM_ID": "DEF123GHIJ",
                    "MESSAGING_APNS_TOPIC": "org.example.app"]
        let both = try MessagingConfiguration(environment: apns.merging(["MESSAGING_FCM_CREDENTIALS_FILE": fcm.path]) { $1 })
        #expect(both.fcm?.account == account && both.fcm?.baseURL == "https://fcm.googleapis.com")
        #expect(both.apns?.key.topic == "org.example.app" && both.apns?.baseURL == "https://api.push.apple.com")
        #expect(try both.pushProviders().map(\.platform) == [.fcm, .apns])
        #expect(try MessagingConfiguration(environment: [:]).pushProviders().isEmpty)
        #expect(key(["MESSAGING_FCM_CREDENTIALS_FILE": dir.appendingPathComponent("missing").path]) == "MESSAGING_FCM_CREDENTIALS_FILE")
        #expect(key(["MESSAGING_FCM_CREDENTIALS_FILE": junk.path]) == "MESSAGING_FCM_CREDENTIALS_FILE")
        #expect(key(apns.merging(["MESSAGING_APNS_KEY_FILE": junk.path]) { $1 }) == "MESSAGING_APNS_KEY_FILE")
        #expect(key(apns.merging(["MESSAGING_APNS_KEY_ID": "short"]) { $1 }) == "MESSAGING_APNS_KEY_ID")
        #expect(key(apns.merging(["MESSAGING_APNS_TEAM_ID": ""]) { $1 }) == "MESSAGING_APNS_TEAM_ID")
        #expect(key(apns.merging(["MESSAGING_APNS_TOPIC": "app"]) { $1 }) == "MESSAGING_APNS_TOPIC")
    }

    @Test("retries wait the backoff, then twice as long each time")
    func retryDelays() throws {
        let c = try MessagingConfiguration(environment: ["MESSAGING_RETRY_BACKOFF_MS": "500"])
        #expect([1, 2, 3].map(c.retryDelay) == [.milliseconds(500), .seconds(1), .seconds(2)])
        #expect(try MessagingConfiguration(environment: [:]).retryDelay(3) == .seconds(8))
        #expect(try MessagingConfiguration(environment: [:]).sendRounds == 4)
        #expect(try MessagingConfiguration(environment: ["MESSAGING_SEND_ROUNDS": "1"]).sendRounds == 1)
    }

    @Test("bad values are refused, naming the key")
    func badValues() {
        #expect(key(["MESSAGING_TWILIO_ACCOUNT_SID": "AC1", "MESSAGING_TWILIO_FROM": "+15005550006"]) == "MESSAGING_TWILIO_AUTH_TOKEN")
        #expect(key(Self.twilio.merging(["MESSAGING_TWILIO_FROM": "0612345678"]) { $1 }) == "MESSAGING_TWILIO_FROM")
        #expect(key(Self.orange.merging(["MESSAGING_ORANGE_WEBHOOK_KEY": "short"]) { $1 }) == "MESSAGING_ORANGE_WEBHOOK_KEY")
        #expect(key(Self.twilio.merging(["MESSAGING_SMS_PROVIDERS": "twilio,orange"]) { $1 }) == "MESSAGING_SMS_PROVIDERS")
        #expect(key(["MESSAGING_SEND_TIMEOUT_MS": "5"]) == "MESSAGING_SEND_TIMEOUT_MS")
        #expect(key(["MESSAGING_RETRY_BACKOFF_MS": "x"]) == "MESSAGING_RETRY_BACKOFF_MS")
        #expect(key(["MESSAGING_SEND_ROUNDS": "0"]) == "MESSAGING_SEND_ROUNDS")
        #expect(key(["MESSAGING_SEND_ROUNDS": "17"]) == "MESSAGING_SEND_ROUNDS")
        #expect(key(["MESSAGING_OVERDUE_AFTER_HOURS": "0"]) == "MESSAGING_OVERDUE_AFTER_HOURS")
        #expect(key(["MESSAGING_FACILITY_NAME": String(repeating: "x", count: 61)]) == "MESSAGING_FACILITY_NAME")
        #expect(key(["MESSAGING_WEBHOOK_LOG_RETENTION_DAYS": "0"]) == "MESSAGING_WEBHOOK_LOG_RETENTION_DAYS")
        #expect(key(["MESSAGING_WEBHOOK_LOG_RETENTION_DAYS": "3651"]) == "MESSAGING_WEBHOOK_LOG_RETENTION_DAYS")
        #expect(key(["MESSAGING_RETENTION_BATCH": "0"]) == "MESSAGING_RETENTION_BATCH")
    }

    @Test("reminders: the facility's name and the overdue delay, with their defaults")
    func reminderSettings() throws {
        let defaults = try MessagingConfiguration(environment: [:])
        #expect(defaults.facilityName == "CareMesh" && defaults.overdueAfter == .seconds(86_400))
        let set = try MessagingConfiguration(environment: ["MESSAGING_FACILITY_NAME": "Clinique du Parc", "MESSAGING_OVERDUE_AFTER_HOURS": "48"])
        #expect(set.facilityName == "Clinique du Parc" && set.overdueAfter == .seconds(172_800))
    }

    @Test("webhook log retention: 90 days and batches of 10000 unless set")
    func retentionSettings() throws {
        let defaults = try MessagingConfiguration(environment: [:])
        #expect(defaults.webhookLogRetention == .seconds(90 * 86_400) && defaults.retentionBatch == 10_000)
        let set = try MessagingConfiguration(environment: ["MESSAGING_WEBHOOK_LOG_RETENTION_DAYS": "7", "MESSAGING_RETENTION_BATCH": "500"])
        #expect(set.webhookLogRetention == .seconds(7 * 86_400) && set.retentionBatch == 500)
    }
}

import CareMeshRouter
import CareMeshTesting
import Foundation
import MessagingService
import ProviderSandbox

/// The provider side of a messaging stack: a router that requires tokens, its HTTP edge (for
/// callbacks) and the provider sandbox, all on loopback, around `body`; with the environment
/// that points messaging at the sandbox (Twilio first, Orange as failover) and the edge.
func withProviderEdge(_ body: @Sendable (_ router: Router, _ sandbox: ProviderSandbox, _ edgeURL: String, _ environment: [String: String])
    async throws -> Void) async throws {
    let sandbox = ProviderSandbox(logger: TestStack.quietLogger("sandbox"))
    let router = try TestStack.startRouter(TestStack.routerConfiguration(authentication: .required))
    defer { router.stop() }
    var edgeConfiguration = HTTPEdge.Configuration()
    edgeConfiguration.port = 0
    // Notification streams beat every second, so a test sees a heartbeat soon.
    edgeConfiguration.streamHeartbeat = .seconds(1)
    let edge = HTTPEdge(configuration: edgeConfiguration, router: router, logger: TestStack.quietLogger("edge"))
    try await TestStack.withServices([sandbox, edge]) {
        let base = "http://127.0.0.1:\(await sandbox.port())"
        let edgeURL = "http://127.0.0.1:\(await edge.port())"
        let c = sandbox.configuration
        // The push providers' key files, as their consoles hand them out.
        let keys = FileManager.default.temporaryDirectory.appendingPathComponent("caremesh-push-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: keys, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: keys) }
        let fcmFile = keys.appendingPathComponent("service-account.json"), apnsFile = keys.appendingPathComponent("AuthKey.p8")
        try sandbox.fcmServiceAccount().json().write(to: fcmFile)
        try Data(c.apnsKey.privateKey.utf8).write(to: apnsFile)
        let env = TestStack.workerEnvironment(router).merging([
            "IDENTITY_SCRYPT_LN": "10", "CAREMESH_ROUTER": router.boundEndpoints.client,
            "MESSAGING_TWILIO_URL": base, "MESSAGING_TWILIO_ACCOUNT_SID": c.twilioAccountSID,
            "MESSAGING_TWILIO_AUTH_TOKEN": c.twilioAuthToken, "MESSAGING_TWILIO_FROM": "+15005550006",
            "MESSAGING_ORANGE_URL": base, "MESSAGING_ORANGE_CLIENT_ID": c.orangeClientID,
            "MESSAGING_ORANGE_CLIENT_SECRET": c.orangeClientSecret, "MESSAGING_ORANGE_SENDER": "+33700000000",
            "MESSAGING_ORANGE_WEBHOOK_KEY": "a-sandbox-webhook-key", "MESSAGING_RETRY_BACKOFF_MS": "50",
            "MESSAGING_WEBHOOK_BASE_URL": edgeURL,
            "MESSAGING_SENDGRID_URL": base, "MESSAGING_SENDGRID_API_KEY": c.sendGridAPIKey, "MESSAGING_EMAIL_FROM": "no-reply@caremesh.test",
            "MESSAGING_FCM_CREDENTIALS_FILE": fcmFile.path, "MESSAGING_FCM_URL": base,
            "MESSAGING_APNS_KEY_FILE": apnsFile.path, "MESSAGING_APNS_KEY_ID": c.apnsKey.keyID, "MESSAGING_APNS_TEAM_ID": c.apnsKey.teamID,
            "MESSAGING_APNS_TOPIC": c.apnsKey.topic, "MESSAGING_APNS_URL": base,
        ]) { $1 }
        try await body(router, sandbox, edgeURL, env)
    }
}

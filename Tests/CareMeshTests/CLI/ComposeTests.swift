import CareMeshTesting
import Foundation
import Testing

/// docker-compose.yml is valid (no Docker engine runs here; docker-compose 1.29 validates
/// offline, see PLATFORM.md) and has the whole topology, with secrets required, not defaulted.
@Suite struct ComposeTests {
    let file = TestStack.packageRoot.appendingPathComponent("docker-compose.yml").path
    let compose = URL(fileURLWithPath: "/usr/bin/docker-compose")
    let secrets = ["POSTGRES_PASSWORD": "p", "IDENTITY_DB_PASSWORD": "i", "DISPATCH_DB_PASSWORD": "d",
                   "ALERTS_DB_PASSWORD": "a", "MESSAGING_DB_PASSWORD": "m",
                   "IDENTITY_KEY_ENCRYPTION_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                   "DISPATCH_SERVICE_SECRET": "dispatch-secret-0123456789abcdef0123456789",
                   "ALERTS_SERVICE_SECRET": "alerts-secret-0123456789abcdef0123456789",
                   "MESSAGING_SERVICE_SECRET": "messaging-secret-0123456789abcdef0123456789",
                   "ROUTER_SERVICE_SECRET": "router-secret-0123456789abcdef0123456789",
                   "SANDBOX_TWILIO_AUTH_TOKEN": "twilio-token-0123456789", "SANDBOX_ORANGE_CLIENT_SECRET": "orange-secret-0123456789",
                   "SANDBOX_ORANGE_WEBHOOK_KEY": "orange-key-0123456789abcdef", "SANDBOX_SENDGRID_API_KEY": "sendgrid-key-0123456789"]

    @Test("docker-compose config accepts the file and lists every service; it refuses to run without secrets")
    func validates() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: compose.path), "apt-get install docker-compose (scripts/test.sh does)")
        let ok = try await TestStack.run(compose, ["-f", file, "config", "-q"], environment: secrets)
        #expect(ok.status == 0, "\(ok.stderr)")
        let services = try await TestStack.run(compose, ["-f", file, "config", "--services"], environment: secrets)
        #expect(Set(services.stdout.split(separator: "\n").map(String.init))
                == ["postgres", "provision", "router", "identity", "dispatch", "alerts", "messaging", "sandbox"])
        let full = try await TestStack.run(compose, ["-f", file, "config"], environment: secrets)
        #expect(full.stdout.components(separatedBy: "service_completed_successfully").count - 1 == 4)
        #expect(full.stdout.components(separatedBy: "healthcheck:").count - 1 == 6)
        #expect(full.stdout.contains("postgres://caremesh_identity:i@postgres:5432/caremesh"))
        // Each service's secret reaches it and identity, and no other service.
        for service in ["dispatch", "alerts", "messaging", "router"] {
            #expect(full.stdout.components(separatedBy: "\(service)-secret-0123456789").count - 1 == 2, "\(service)")
        }
        // The sandbox's credentials reach it and messaging, which sends to it and checks its signatures.
        #expect(full.stdout.components(separatedBy: "twilio-token-0123456789").count - 1 == 2)
        #expect(full.stdout.components(separatedBy: "orange-secret-0123456789").count - 1 == 2)
        #expect(full.stdout.components(separatedBy: "sendgrid-key-0123456789").count - 1 == 2)
        #expect(full.stdout.contains("http://router:8080"))
        // The bus's keys are files (compose secrets): the router's secret key and allowlist reach
        // only the router, each service's key only that service, the router's public key all four.
        for (secret, count) in ["router_key": 1, "bus_workers": 1, "router_pub": 4, "identity_key": 1, "dispatch_key": 1,
                                "alerts_key": 1, "messaging_key": 1] {
            #expect(full.stdout.components(separatedBy: "source: \(secret)\n").count - 1 == count, "\(secret)")
        }
        #expect(full.stdout.contains("CAREMESH_ROUTER_SECRET_KEY_FILE: /run/secrets/router_key"))
        #expect(full.stdout.contains("IDENTITY_BUS_SECRET_KEY_FILE: /run/secrets/identity_key"))
        let missing = secrets
        for key in ["IDENTITY_DB_PASSWORD", "ALERTS_SERVICE_SECRET"] {
            let refused = try await TestStack.run(compose, ["-f", file, "config", "-q"],
                                                  environment: missing.merging([key: ""]) { $1 })
            #expect(refused.status != 0)
            #expect(refused.stderr.contains(key))
        }
    }
}

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
                   "IDENTITY_KEY_ENCRYPTION_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]

    @Test("docker-compose config accepts the file and lists every service; it refuses to run without secrets")
    func validates() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: compose.path), "apt-get install docker-compose (scripts/test.sh does)")
        let ok = try await TestStack.run(compose, ["-f", file, "config", "-q"], environment: secrets)
        #expect(ok.status == 0, "\(ok.stderr)")
        let services = try await TestStack.run(compose, ["-f", file, "config", "--services"], environment: secrets)
        #expect(Set(services.stdout.split(separator: "\n").map(String.init))
                == ["postgres", "provision", "router", "identity", "dispatch", "alerts", "messaging"])
        let full = try await TestStack.run(compose, ["-f", file, "config"], environment: secrets)
        #expect(full.stdout.components(separatedBy: "service_completed_successfully").count - 1 == 4)
        #expect(full.stdout.components(separatedBy: "healthcheck:").count - 1 == 6)
        #expect(full.stdout.contains("postgres://caremesh_identity:i@postgres:5432/caremesh"))
        var missing = secrets
        missing["IDENTITY_DB_PASSWORD"] = nil
        let refused = try await TestStack.run(compose, ["-f", file, "config", "-q"],
                                              environment: missing.merging(["IDENTITY_DB_PASSWORD": ""]) { $1 })
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("IDENTITY_DB_PASSWORD"))
    }
}

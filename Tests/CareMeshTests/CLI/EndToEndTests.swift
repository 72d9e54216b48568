import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import CareMeshTesting
import Foundation
import Testing

/// What a deployed stack must answer, as a plain client of its router: every service SERVING,
/// a user can register and sign in, `Events.Pull` is refused without a token and to a plain
/// user, `caremesh identity grant-role` makes an admin, and every service's `Events.Pull`
/// answers that admin from its database. The `caremesh up` test runs it
/// against the local stack; with `CAREMESH_E2E_ROUTER` set (e.g. tcp://127.0.0.1:5555 for
/// docker-compose), it runs against that stack too.
enum StackChecks {
    /// `environment` lets the CLI reach identity's database (for `caremesh identity grant-role`).
    /// The router's key comes from `environment` (`CAREMESH_ROUTER_PUBLIC_KEY` or `…_FILE`), else
    /// from `$CAREMESH_HOME/bus/router.pub` as `caremesh up` makes it.
    static func verify(router endpoint: String, environment: [String: String] = [:]) async throws {
        var env = environment
        if !BusSettings.isSet(BusSettings.routerPublicKey, env),
           let home = env["CAREMESH_HOME"] {
            env["\(BusSettings.routerPublicKey)_FILE"] = home + "/bus/router.pub"
        }
        var config = try ClientConfiguration(environment: env)
        config.endpoint = endpoint
        config.defaultTimeout = .seconds(5)
        let client = RPCClient(configuration: config, logger: TestStack.quietLogger("e2e"))
        defer { client.close() }
        for service in Provisioner.services {
            let health = try await client.call(HealthMethods.check, service: service, request: .init())
            #expect(health.status == .serving, "\(service)")
        }
        var register = Caremesh_Identity_V1_RegisterRequest()
        register.email = "e2e-\(UUID().uuidString.prefix(8))@example.org"
        register.password = "correct horse battery staple"
        register.name = "End To End"
        register.phone = "+3361\(Int.random(in: 1_000_000...9_999_999))"
        let session = try await client.call(IdentityMethods.register, request: register).session
        let auth = CallOptions(metadata: ["authorization": "Bearer \(session.accessToken)"])
        var pull = Caremesh_Events_V1_PullEventsRequest()
        pull.limit = 1
        await #expect(throws: RPCError.self) { try await client.call(EventsMethods.pull, service: "identity", request: pull) }
        // The router learns identity's signing key within a few seconds of identity starting.
        let me = try await TestStack.eventually(timeout: .seconds(15)) {
            try await client.call(IdentityMethods.whoAmI, request: .init(), options: auth)
        }
        #expect(me.user.email == register.email)
        // Events are for services and admins: refused to this user until the CLI makes it an
        // admin (how the first admin is made), which its next sign-in carries.
        do {
            _ = try await client.call(EventsMethods.pull, service: "identity", request: pull, options: auth)
            Issue.record("a user read events")
        } catch { #expect(error.code == .permissionDenied) }
        let caremesh = TestStack.binaries.appendingPathComponent("caremesh")
        let grant = try await TestStack.run(caremesh, ["identity", "grant-role", register.email.uppercased(), "admin"], environment: environment)
        #expect(grant.status == 0 && grant.stdout.contains("is now admin"), "\(grant.stdout)\(grant.stderr)")
        let nobody = try await TestStack.run(caremesh, ["identity", "grant-role", "nobody@example.org", "admin"], environment: environment)
        #expect(nobody.status != 0 && nobody.stderr.contains("NOT_FOUND"), "\(nobody.stdout)\(nobody.stderr)")
        var login = Caremesh_Identity_V1_LoginRequest()
        login.email = register.email
        login.password = register.password
        let admin = try await client.call(IdentityMethods.login, request: login).session
        let adminAuth = CallOptions(metadata: ["authorization": "Bearer \(admin.accessToken)"])
        for service in Provisioner.services {
            // Answers only if the schema is migrated and reachable.
            let page = try await client.call(EventsMethods.pull, service: service, request: pull, options: adminAuth)
            #expect(page.events.count <= 1)
        }
    }
}

@Suite struct EndToEndTests {
    @Test("a stack given by CAREMESH_E2E_ROUTER answers health and events for every service",
          .enabled(if: ProcessInfo.processInfo.environment["CAREMESH_E2E_ROUTER"] != nil))
    func givenStack() async throws {
        try await StackChecks.verify(router: ProcessInfo.processInfo.environment["CAREMESH_E2E_ROUTER"]!,
                                     environment: ProcessInfo.processInfo.environment)
    }
}

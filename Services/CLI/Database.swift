import AlertsService
import ArgumentParser
import CareMeshRPC
import CareMeshStore
import DispatchService
import Foundation
import IdentityService
import Logging
import MessagingService

/// Each service's own migrations (its migrator adds the platform's before them).
enum ServiceMigrations {
    static func own(_ service: String) throws -> [Migration] {
        switch service {
        case IdentityService.name: IdentityService.migrations
        case DispatchService.name: DispatchService.migrations
        case AlertsService.name: AlertsService.migrations
        case MessagingService.name: MessagingService.migrations
        default: throw ValidationError("unknown service '\(service)': one of \(Provisioner.services.joined(separator: ", "))")
        }
    }
}

/// Where the local stack's database is, and how the CLI finds a service's database URL:
/// `<SERVICE>_DATABASE_URL`, else `DATABASE_URL`, else the stack's own cluster if it runs.
enum LocalDatabase {
    static func cluster(_ layout: StackLayout) -> EmbeddedPostgres {
        EmbeddedPostgres(directory: layout.home.appendingPathComponent("pg"), logger: cliLogger("caremesh.postgres"))
    }

    /// True when the environment names a database server for every service.
    static func isExternal(_ env: [String: String]) -> Bool {
        env["DATABASE_URL"].map { !$0.isEmpty } ?? false
            || Provisioner.services.allSatisfy { env["\($0.uppercased())_DATABASE_URL"].map { !$0.isEmpty } ?? false }
    }

    static func url(for service: String, layout: StackLayout) throws -> DatabaseURL {
        let env = ProcessInfo.processInfo.environment
        if let url = try? DatabaseURL.forService(service, environment: env) { return url }
        let pg = cluster(layout)
        guard let admin = try pg.runningAdminURL() else {
            throw ValidationError("no database: set \(service.uppercased())_DATABASE_URL or DATABASE_URL, or start the local stack (caremesh up)")
        }
        guard let url = try pg.serviceURLs(admin: admin)[service] else { throw ValidationError("unknown service '\(service)'") }
        return url
    }
}

func cliLogger(_ label: String) -> Logger { ServiceRunner.quietLogger(label) }

/// `caremesh migrate SERVICE status|up|down N`.
struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show, apply or revert a service's schema migrations.",
        discussion: """
            Uses <SERVICE>_DATABASE_URL or DATABASE_URL, else the local stack's PostgreSQL. Services apply \
            their migrations on start unless <SERVICE>_MIGRATE_ON_START=false.
              caremesh migrate identity status
              caremesh migrate identity up [TARGET_VERSION]
              caremesh migrate identity down N      (reverts the N most recent)
            """
    )

    @Argument(help: "identity, dispatch, alerts or messaging") var service: String
    @Argument(help: "status, up or down") var action: String
    @Argument(help: "up: the version to stop at; down: how many to revert") var number: Int?

    func run() async throws {
        let logger = cliLogger("caremesh.migrate")
        let migrator = try Migrator.forService(service, own: try ServiceMigrations.own(service), logger: logger)
        let url = try LocalDatabase.url(for: service, layout: StackLayout())
        do {
            switch action {
            case "status":
                let entries = try await migrator.status(url)
                print("\(service) on \(url)")
                for e in entries {
                    let state: String
                    if !e.known { state = "applied, UNKNOWN to this build" }
                    else if !e.intact { state = "applied, EDITED since" }
                    else if let at = e.appliedAt { state = "applied \(ISO8601DateFormatter().string(from: at)) in \(e.durationMs ?? 0) ms" }
                    else { state = "pending" }
                    print("  \(String(e.version).leftPadded(4)) \(e.name.padding(toLength: 24, withPad: " ", startingAt: 0)) \(state)")
                }
                // Edited or unknown migrations are marked above; the exit status says so too.
                guard (try? migrator.verify(entries)) != nil else { throw ExitCode.failure }
            case "up":
                let applied = try await migrator.up(url, to: number)
                print(applied.isEmpty ? "\(service): up to date" : "\(service): applied \(applied.map(String.init).joined(separator: ", "))")
            case "down":
                guard let n = number, n > 0 else { throw ValidationError("down needs how many to revert, e.g. `down 1`") }
                let reverted = try await migrator.down(url, count: n)
                print("\(service): reverted \(reverted.map(String.init).joined(separator: ", "))")
            default:
                throw ValidationError("action must be status, up or down")
            }
        } catch let e as StoreError {
            writeError("caremesh: \(e)")
            throw ExitCode.failure
        }
    }
}

/// `caremesh db provision`: what a superuser does once per database.
struct DB: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db", abstract: "Database administration.", subcommands: [Provision.self])

    struct Provision: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the extensions, and each service's role and schema (safe to run again).",
            discussion: """
                Connects as a superuser (--admin-url or $CAREMESH_ADMIN_DATABASE_URL). Each role's password \
                comes from $<SERVICE>_DB_PASSWORD (e.g. IDENTITY_DB_PASSWORD); a service whose password is \
                not set is skipped. Waits up to --wait-seconds for the server to accept connections.
                """
        )

        @Option(help: "A superuser URL of the database to provision.") var adminURL: String?
        @Option(help: "Seconds to wait for the server.") var waitSeconds: Int = 60

        func run() async throws {
            let env = ProcessInfo.processInfo.environment
            guard let text = adminURL ?? env["CAREMESH_ADMIN_DATABASE_URL"] else {
                throw ValidationError("give --admin-url or set CAREMESH_ADMIN_DATABASE_URL")
            }
            let admin = try DatabaseURL(parsing: text)
            var passwords: [String: String] = [:]
            for s in Provisioner.services { if let p = env["\(s.uppercased())_DB_PASSWORD"], !p.isEmpty { passwords[s] = p } }
            let logger = cliLogger("caremesh.db")
            let until = Date().addingTimeInterval(TimeInterval(waitSeconds))
            while true {
                do {
                    try await Store.checkConnectivity(admin, logger: logger)
                    break
                } catch {
                    if Date() > until { writeError("caremesh: \(error)"); throw ExitCode.failure }
                    try await Task.sleep(for: .seconds(1))
                }
            }
            try await Provisioner.provision(admin: admin, passwords: passwords, logger: logger)
            print("caremesh: provisioned \(admin) (extensions; roles and schemas for \(passwords.keys.sorted().joined(separator: ", ")))")
        }
    }
}

/// `caremesh identity grant-role EMAIL ROLE`: how the first admin is made.
struct IdentityAdmin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "identity", abstract: "Identity administration that needs the database itself.",
        subcommands: [GrantRole.self])

    struct GrantRole: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Give an account a role, straight in identity's database (e.g. the first admin).",
            discussion: """
                Admins give roles with the SetUserRole RPC; this is for when there is no admin yet. Uses \
                IDENTITY_DATABASE_URL or DATABASE_URL, else the local stack's PostgreSQL. Announced as \
                UserRoleChanged; the account's next token (sign-in or refresh) carries the role.
                  caremesh identity grant-role ann@example.org admin
                """
        )

        @Argument(help: "The account's email.") var email: String
        @Argument(help: "user, volunteer, professional, caregiver, coordinator, ea or admin") var role: String

        func run() async throws {
            let url = try LocalDatabase.url(for: IdentityService.name, layout: StackLayout())
            do {
                let user = try await IdentityService.grantRole(email: email, role: role, url: url, logger: cliLogger("caremesh.identity"))
                print("\(user.email) (\(user.id)) is now \(role.lowercased())")
            } catch let e as RPCError {
                writeError("caremesh: \(e.code.name): \(e.message)")
                throw ExitCode.failure
            }
        }
    }
}

import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging

/// The identity service: a worker of MDP service "identity" that owns schema `identity`:
/// accounts, sessions and signing keys, credentials and verification, suspicious activity,
/// the people CareMesh serves (PHI) and their audit trail.
public enum IdentityService {
    /// The MDP service name, and the name of its schema.
    public static let name = IdentityMethods.serviceName!

    /// The schema's own migrations (after the platform's).
    public static let migrations: [Migration] = IdentityMigrations.all

    /// Store, migrations, outbox, jobs and worker, configured from the environment
    /// (`IDENTITY_DATABASE_URL` or `DATABASE_URL`; `IdentityConfiguration` for identity's own
    /// keys; `WorkerConfiguration` for the bus).
    public static func make(environment: [String: String] = ProcessInfo.processInfo.environment,
                            logger: Logger = Logger(label: "caremesh.identity")) async throws -> ServiceHost {
        let configuration = try IdentityConfiguration(environment: environment)
        // Identity calls messaging (account emails) with tokens it signs itself: no service secret.
        let client = RPCClient(configuration: try ClientConfiguration(environment: environment, service: name), logger: logger)
        return try await ServiceHost.make(service: name, migrations: migrations, environment: environment, logger: logger) { store, outbox in
            let credentials = Credentials(store: store, outbox: outbox, logger: logger)
            return ServiceHost.Parts(
                handlers: handlers(configuration: configuration, store: store, outbox: outbox, credentials: credentials, client: client,
                                   logger: logger),
                jobs: [Credentials.expiryJob: { job, c in try await credentials.expire(job, c) }],
                background: [ClientLifetime(client)])
        }
    }

    /// Gives the account with `email` a role, straight in identity's database (`url`): how
    /// the first admin is made (`caremesh identity grant-role`), since only admins give roles.
    public static func grantRole(email: String, role name: String, url: DatabaseURL, logger: Logger) async throws
        -> Caremesh_Identity_V1_User
    {
        let role = Roles.role(name.lowercased())
        guard role != .unspecified else {
            throw RPCError.invalidArgument(field: "role", "must be one of \(Roles.names.values.sorted().joined(separator: ", "))")
        }
        return try await Store.withSingleConnection(url, logger: logger) { c in
            try await c.withTransaction(logger: logger) { c in try await Admin.setRole(c, email: email, role: role, logger: logger) }
        }
    }

    static func handlers(configuration: IdentityConfiguration, store: Store, outbox: Outbox, credentials: Credentials, client: RPCClient,
                         logger: Logger) -> RPCHandlers {
        let keyring = Keyring(configuration: configuration, store: store, logger: logger)
        let accounts = Accounts(store: store, outbox: outbox, keyring: keyring, configuration: configuration, logger: logger)
        let recovery = Recovery(accounts: accounts, client: client, logger: logger)
        var h = RPCHandlers()
        h.register(IdentityMethods.register) { r, _ in
            let registered = try await accounts.register(r)
            // The code confirming the email goes out after the answer; a failure only means asking again.
            if let id = UUID(uuidString: registered.user.id) {
                try? await recovery.issueAndMail(.emailVerification, user: id, email: registered.user.email)
            }
            return registered
        }
        h.register(IdentityMethods.requestPasswordReset) { r, _ in try await recovery.requestReset(r) }
        h.register(IdentityMethods.resetPassword) { r, _ in try await recovery.reset(r) }
        h.register(IdentityMethods.changePassword) { r, ctx in try await recovery.change(r, ctx) }
        h.register(IdentityMethods.requestEmailVerification) { _, ctx in try await recovery.requestVerification(ctx) }
        h.register(IdentityMethods.verifyEmail) { r, ctx in try await recovery.verify(r, ctx) }
        h.register(IdentityMethods.login) { r, _ in try await accounts.login(r) }
        h.register(IdentityMethods.refresh) { r, _ in try await accounts.refresh(r) }
        h.register(IdentityMethods.getSigningKeys) { _, _ in try await keyring.signingKeysResponse() }
        h.register(IdentityMethods.issueServiceToken) { r, _ in try await accounts.issueServiceToken(r) }
        h.register(IdentityMethods.logout) { _, ctx in try await accounts.logout(ctx) }
        h.register(IdentityMethods.logoutEverywhere) { _, ctx in try await accounts.logoutEverywhere(ctx) }
        h.register(IdentityMethods.whoAmI) { _, ctx in try await accounts.whoAmI(ctx) }
        h.register(IdentityMethods.updateProfile) { r, ctx in try await accounts.updateProfile(r, ctx) }
        h.register(IdentityMethods.submitVolunteerCredentials) { r, ctx in try await credentials.submitVolunteer(r, ctx) }
        h.register(IdentityMethods.submitProfessionalCredentials) { r, ctx in try await credentials.submitProfessional(r, ctx) }
        h.register(IdentityMethods.getVerification) { r, ctx in try await credentials.get(r, ctx) }
        h.register(IdentityMethods.verifyUser) { r, ctx in try await credentials.verify(r, ctx) }
        h.register(IdentityMethods.revokeVerification) { r, ctx in try await credentials.revoke(r, ctx) }
        h.register(IdentityMethods.addDocument) { r, ctx in try await credentials.addDocument(r, ctx) }
        let admin = Admin(store: store, outbox: outbox, credentials: credentials, logger: logger)
        h.register(IdentityMethods.listUsers) { r, ctx in try await admin.listUsers(r, ctx) }
        h.register(IdentityMethods.setUserRole) { r, ctx in try await admin.setRole(r, ctx) }
        h.register(IdentityMethods.listRoleReviews) { r, ctx in try await admin.listRoleReviews(r, ctx) }
        h.register(IdentityMethods.deactivateUser) { r, ctx in try await admin.deactivate(r, ctx) }
        h.register(IdentityMethods.listPendingVerifications) { r, ctx in try await admin.listPending(r, ctx) }
        h.register(IdentityMethods.recordSuspiciousActivity) { r, ctx in try await admin.recordSuspicious(r, ctx) }
        h.register(IdentityMethods.listSuspiciousActivities) { r, ctx in try await admin.listSuspicious(r, ctx) }
        h.register(IdentityMethods.listAuditEntries) { r, ctx in try await admin.listAudit(r, ctx) }
        let people = People(store: store, outbox: outbox, logger: logger)
        h.register(IdentityMethods.createPatient) { r, ctx in try await people.create(r, ctx) }
        h.register(IdentityMethods.updatePatient) { r, ctx in try await people.update(r, ctx) }
        h.register(IdentityMethods.getPatient) { r, ctx in try await people.get(r, ctx) }
        h.register(IdentityMethods.searchPatients) { r, ctx in try await people.search(r, ctx) }
        h.register(IdentityMethods.getPatientContact) { r, ctx in try await people.contact(r, ctx) }
        h.register(IdentityMethods.getContactPoints) { r, ctx in try await accounts.contactPoints(r, ctx) }
        h.register(IdentityMethods.linkPatientAccount) { r, ctx in try await people.link(r, ctx) }
        h.register(IdentityMethods.resolvePerson) { r, ctx in try await people.resolve(r, ctx) }
        return h
    }
}

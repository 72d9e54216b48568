import CareMeshContracts
import Foundation
import Logging
import Synchronization

/// A service's own sign-in: its name and secret (`<SERVICE>_SERVICE_SECRET`, which identity
/// knows too), exchanged for an access token by `Identity/IssueServiceToken`. Give it to a
/// client (`ClientConfiguration.credentials`) and every call to a method that needs a token
/// carries one; it is renewed a minute before it expires.
public final class ServiceCredentials: Sendable {
    public let service: String
    private let secret: String
    private let token = Mutex<(value: String, expiresAt: Int64)?>(nil)

    public init(service: String, secret: String) {
        self.service = service
        self.secret = secret
    }

    /// `<SERVICE>_SERVICE_SECRET` from the environment, if set.
    public convenience init?(service: String, environment: [String: String]) {
        guard let secret = environment[Self.variable(for: service)], !secret.isEmpty else { return nil }
        self.init(service: service, secret: secret)
    }

    /// The environment variable holding `service`'s secret.
    public static func variable(for service: String) -> String { "\(service.uppercased())_SERVICE_SECRET" }

    /// Renew this long before expiry (60 s).
    static let renewBeforeSeconds: Int64 = 60

    /// "Bearer <token>", fetched through `client` when there is none or it is about to expire.
    public func authorization(via client: RPCClient) async throws(RPCError) -> String {
        let now = Int64(Date().timeIntervalSince1970)
        if let t = token.withLock({ $0 }), t.expiresAt - Self.renewBeforeSeconds > now { return "Bearer \(t.value)" }
        var request = Caremesh_Identity_V1_IssueServiceTokenRequest()
        request.service = service
        request.secret = secret
        let response = try await client.call(IdentityMethods.issueServiceToken, request: request)
        token.withLock { $0 = (response.accessToken, response.expiresAt.seconds) }
        return "Bearer \(response.accessToken)"
    }
}

extension RPCClient {
    /// A service's client of the others: the bus from the environment (`ClientConfiguration`,
    /// the link with the service's own key), signed in as `service` with `<SERVICE>_SERVICE_SECRET` when it is set.
    public static func forService(_ service: String, environment: [String: String], logger: Logger) throws(BusConfigurationError) -> RPCClient {
        var configuration = try ClientConfiguration(environment: environment, service: service)
        configuration.credentials = ServiceCredentials(service: service, environment: environment)
        if configuration.credentials == nil {
            logger.warning("\(ServiceCredentials.variable(for: service)) is not set: this service calls the others without a token, which a router that checks tokens refuses")
        }
        return RPCClient(configuration: configuration, logger: logger)
    }
}

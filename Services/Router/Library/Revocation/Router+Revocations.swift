import CareMeshContracts
import CareMeshRPC
import Foundation
import Logging
import ZMQ

extension Router {
    /// The event type the router takes from identity.
    static let revocationType = Caremesh_Identity_V1_TokensRevoked.protoMessageName

    /// Follows identity's `TokensRevoked` events (`EventFollower`, so a revocation reaches the
    /// router within milliseconds) and hands them to the I/O thread. From the start of what identity
    /// keeps at each start (entries outlive no token: older ones are dropped); when identity's
    /// retention went past the cursor, it goes on from the horizon, where nothing it could
    /// still need was.
    func pullRevocations(_ client: RPCClient) async {
        guard client.configuration.credentials != nil else {
            logger.warning("ROUTER_SERVICE_SECRET is not set: the router cannot follow identity's token revocations, so a deactivated, signed-out or re-roled user's access token works until it expires")
            return
        }
        let follower = EventFollower(client: client, service: "identity", types: [Self.revocationType], start: .beginning,
                                     what: "identity's token revocations", logger: logger)
        await follower.run { pulled in
            let events = pulled.compactMap { try? Caremesh_Identity_V1_TokensRevoked(serializedBytes: $0.payload) }
            guard !events.isEmpty else { return }
            self.pulledRevocations.withLock { $0.append(contentsOf: events) }
            self.signalIOThread()
        }
    }
}

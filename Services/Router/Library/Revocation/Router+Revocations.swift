import CareMeshContracts
import CareMeshRPC
import Foundation
import Logging
import ZMQ

extension Router {
    /// The event type the router takes from identity.
    static let revocationType = Caremesh_Identity_V1_TokensRevoked.protoMessageName

    /// Follows identity's `TokensRevoked` events by long polls (`Events.Pull`, woken by the
    /// commit's NOTIFY, so a revocation reaches the router within milliseconds), signed in as
    /// the service "router", and hands them to the I/O thread. From the start of what identity
    /// keeps at each start (entries outlive no token: older ones are dropped); when identity's
    /// retention went past the cursor, it goes on from the horizon, where nothing it could
    /// still need was.
    func pullRevocations(_ client: RPCClient) async {
        guard client.configuration.credentials != nil else {
            logger.warning("ROUTER_SERVICE_SECRET is not set: the router cannot follow identity's token revocations, so a deactivated, signed-out or re-roled user's access token works until it expires")
            return
        }
        var after: Int64 = 0
        var failures = 0
        while !Task.isCancelled {
            var request = Caremesh_Events_V1_PullEventsRequest()
            request.after = after
            request.limit = 1_000
            request.waitMs = 5_000
            request.types = [Self.revocationType]
            do {
                let reply = try await client.call(EventsMethods.pull, service: "identity", request: request,
                                                  options: .init(timeout: .seconds(8)))
                let events = reply.events.filter { $0.type == Self.revocationType }
                    .compactMap { try? Caremesh_Identity_V1_TokensRevoked(serializedBytes: $0.payload) }
                after = max(after, reply.events.last?.seq ?? 0, reply.scannedThrough)
                if !events.isEmpty {
                    pulledRevocations.withLock { $0.append(contentsOf: events) }
                    signalIOThread()
                }
                if failures > 0 { logger.info("router follows identity's token revocations again") }
                failures = 0
            } catch {
                if error.code == .outOfRange, let horizon = error.infoMetadata["horizon"].flatMap(Int64.init) {
                    after = max(after, horizon)
                    continue
                }
                failures += 1
                if failures == 1 || failures % 60 == 0 {
                    logger.warning("router could not pull identity's token revocations", metadata: [
                        "code": "\(error.code.name)", "attempts": "\(failures)",
                    ])
                }
                try? await Task.sleep(for: .milliseconds(min(5_000, 250 << min(failures - 1, 5))))
            }
        }
    }
}

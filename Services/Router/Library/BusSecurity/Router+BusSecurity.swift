import Foundation
import Logging
import Synchronization

/// The router's side of the bus's security: what it refused at the handshake, and its log of
/// worker registrations and refusals.
extension Router {
    /// Connections refused at the CurveZMQ handshake, by endpoint.
    public var handshakesRefused: (workers: Int, clients: Int) {
        (zapDomains?.workers.refused ?? 0, zapDomains?.clients.refused ?? 0)
    }

    /// Logs each worker registration and refusal (refusals rate-limited: a peer may repeat).
    func logRegistrations(_ registrations: [RouterStateMachine.Registration]) {
        for r in registrations {
            var metadata: Logger.Metadata = [
                "service": "\(r.service)", "instance.id": "\(r.instanceID)", "version": "\(r.version)",
                "key.id": "\(r.keyID ?? "-")", "peer.address": "\(r.address ?? "-")",
            ]
            if let refusal = r.refusal {
                let n = refusalsLogged.wrappingAdd(1, ordering: .relaxed).newValue
                guard n <= 20 || n % 1000 == 0 else { continue }
                metadata["reason"] = "\(refusal)"
                logger.warning("router refused a worker", metadata: metadata)
            } else {
                logger.info("worker registered", metadata: metadata)
            }
        }
    }
}

import CareMeshContracts
import CareMeshRPC
import Foundation
import Logging

/// Follows some event types of a service's outbox by long polls (`Events.Pull`, woken by the
/// commit's NOTIFY, so an event reaches the router within milliseconds), signed in as the
/// service "router", and hands each batch's events on: identity's token revocations, and
/// messaging's notifications and announcements for the edge's streams (one long poll for both).
struct EventFollower: Sendable {
    enum Start: Sendable {
        /// From the start of what the service keeps.
        case beginning
        /// From the newest event at start (what came before is someone else's to replay).
        case newest
    }

    let client: RPCClient
    let service: String
    let types: Set<String>
    let start: Start
    /// What is followed, for the log ("identity's token revocations").
    let what: String
    let logger: Logger

    /// Runs until cancelled. `deliver` gets each batch's events of `types`, in order; `missed` is called
    /// when events may have gone by unseen: the service's retention went past the cursor (it
    /// goes on from the horizon), or pulls failed for a while (once they work again).
    func run(deliver: @Sendable ([Caremesh_Events_V1_Event]) -> Void, missed: @Sendable () -> Void = {}) async {
        var after: Int64? = start == .beginning ? 0 : nil
        var failures = 0
        while !Task.isCancelled {
            var request = Caremesh_Events_V1_PullEventsRequest()
            request.types = types.sorted()
            // The newest at start: a pull past every seq answers at once with the outbox's last.
            request.after = after ?? Int64.max
            request.limit = after == nil ? 1 : 1_000
            request.waitMs = after == nil ? 0 : 5_000
            do {
                let reply = try await client.call(EventsMethods.pull, service: service, request: request, options: .init(timeout: .seconds(8)))
                if let from = after {
                    let events = reply.events.filter { types.contains($0.type) }
                    if !events.isEmpty { deliver(events) }
                    after = max(from, reply.events.last?.seq ?? 0, reply.scannedThrough)
                } else {
                    after = reply.scannedThrough
                }
                if failures > 0 {
                    logger.info("the router follows \(what) again")
                    missed()
                }
                failures = 0
            } catch {
                if error.code == .outOfRange, let horizon = error.infoMetadata["horizon"].flatMap(Int64.init) {
                    after = max(after ?? 0, horizon)
                    missed()
                    continue
                }
                failures += 1
                if failures == 1 || failures % 60 == 0 {
                    logger.warning("the router could not pull \(what)", metadata: ["code": "\(error.code.name)", "attempts": "\(failures)"])
                }
                try? await Task.sleep(for: .milliseconds(min(5_000, 250 << min(failures - 1, 5))))
            }
        }
    }
}

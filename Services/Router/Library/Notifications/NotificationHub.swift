import CareMeshContracts
import Foundation
import Synchronization

/// The notification streams open on this edge, by person.
///
/// Messaging's `NotificationCreated` events (pulled by the edge, `HTTPEdge+NotificationStream`)
/// are handed to the streams of the person each is for, and to no one else. Each stream buffers
/// a bounded number of items: one that falls behind loses the oldest, which it sees as a gap in
/// the person's `seq` and fills from messaging. One timer beats for all streams.
final class NotificationHub: Sendable {
    enum Item: Sendable {
        case notification(Caremesh_Messaging_V1_Notification)
        /// An announcement was published: for everyone's streams.
        case announcement(Caremesh_Messaging_V1_AnnouncementPublished)
        /// Live events may have been missed (the pull failed for a while): ask messaging.
        case resync
        /// Time to show the connection is alive.
        case heartbeat
    }

    private struct State {
        var streams: [UUID: [Int: AsyncStream<Item>.Continuation]] = [:]
        var next = 0
    }

    private let state = Mutex(State())
    /// How many items a stream may have waiting before it loses the oldest.
    static let buffer = 64

    /// A new stream of `person`'s items; it leaves the hub when its consumer stops.
    func subscribe(_ person: UUID) -> AsyncStream<Item> {
        let (stream, continuation) = AsyncStream<Item>.makeStream(bufferingPolicy: .bufferingNewest(Self.buffer))
        let id = state.withLock { s in
            s.next += 1
            s.streams[person, default: [:]][s.next] = continuation
            return s.next
        }
        continuation.onTermination = { [weak self] _ in self?.remove(person, id) }
        return stream
    }

    private func remove(_ person: UUID, _ id: Int) {
        state.withLock { s in
            s.streams[person]?.removeValue(forKey: id)
            if s.streams[person]?.isEmpty == true { s.streams[person] = nil }
        }
    }

    /// Hands `notification` to its person's streams.
    func publish(_ notification: Caremesh_Messaging_V1_Notification) {
        guard let person = UUID(uuidString: notification.personID) else { return }
        let targets = state.withLock { $0.streams[person].map { Array($0.values) } ?? [] }
        for c in targets { c.yield(.notification(notification)) }
    }

    /// Hands `item` to every stream.
    func broadcast(_ item: Item) {
        let targets = state.withLock { $0.streams.values.flatMap(\.values) }
        for c in targets { c.yield(item) }
    }
}

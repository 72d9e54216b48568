import CareMeshContracts
import CareMeshStore
import Foundation

/// One push, as both providers get it: the notification's short text (never PHI) and its ids,
/// for one device. `id` is the send's (APNs' `apns-id`, so a retry is recognisable).
struct PushMessage: Sendable, Equatable {
    var id: UUID
    var notification: UUID
    var seq: Int64
    var kind: Caremesh_Messaging_V1_NotificationKind
    var critical: Bool
    var title: String
    var body: String
    var data: [String: String]
    /// Not worth showing after this (FCM's `ttl`, APNs' `apns-expiration`).
    var expires: Date

    /// The app's data: the notification's own keys, and which notification it is.
    var payload: [String: String] {
        data.merging(["notification_id": notification.text, "seq": "\(seq)", "kind": kind.storedName ?? ""]) { $1 }
    }
}

/// What a provider's answer means for a send.
enum PushOutcome: Sendable, Equatable {
    /// Taken, with the provider's id for it.
    case sent(String)
    /// The token is no longer valid (uninstalled, expired, another app's): the device is removed.
    case invalidToken(String)
    /// The provider's trouble or its rate limit: tried again later; `reauthenticate` when its
    /// credential was refused (a fresh token may do).
    case retry(String, reauthenticate: Bool)
    /// Refused for good (a request it will never take).
    case refused(String)
}

/// A push provider: FCM HTTP v1 or APNs.
protocol PushProvider: Sendable {
    var platform: Caremesh_Messaging_V1_PushPlatform { get }
    func send(_ message: PushMessage, to token: String, timeout: Duration) async -> PushOutcome
}

extension PushProvider {
    /// `attempt` with the cached credential, and once more with a fresh one (`refresh` true)
    /// when the provider refused the credential.
    func reauthenticatingOnce(_ attempt: (_ refresh: Bool) async -> PushOutcome) async -> PushOutcome {
        let outcome = await attempt(false)
        guard case .retry(_, reauthenticate: true) = outcome else { return outcome }
        return await attempt(true)
    }
}

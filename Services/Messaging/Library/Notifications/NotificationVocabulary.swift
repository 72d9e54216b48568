import CareMeshContracts

/// The notification vocabularies as stored (`notifications.kind`, `notification_deliveries`'
/// `channel` and `status`) and on the wire: one table each.
extension Caremesh_Messaging_V1_NotificationKind {
    static let storedNames: [Self: String] = [
        .sosOffered: "SOS_OFFERED", .sosAccepted: "SOS_ACCEPTED", .sosUpdated: "SOS_UPDATED", .chatMessage: "CHAT_MESSAGE",
    ]

    var storedName: String { Self.storedNames[self] ?? "" }

    init(storedName: String) { self = Self.storedNames.key(for: storedName) ?? .unspecified }

    /// Critical kinds go out on every channel the person allows, whatever the hour (as Novu's
    /// critical workflows bypass preferences): someone may need help now.
    var isCritical: Bool { self == .sosOffered }
}

extension Caremesh_Messaging_V1_DeliveryChannel {
    static let storedNames: [Self: String] = [.stream: "stream", .push: "push", .sms: "sms", .email: "email"]

    var storedName: String { Self.storedNames[self] ?? "" }

    init(storedName: String) { self = Self.storedNames.key(for: storedName) ?? .unspecified }
}

extension Caremesh_Messaging_V1_DeliveryStatus {
    static let storedNames: [Self: String] = [.queued: "queued", .sent: "sent", .delivered: "delivered", .failed: "failed", .read: "read"]

    var storedName: String { Self.storedNames[self] ?? "" }

    init(storedName: String) { self = Self.storedNames.key(for: storedName) ?? .unspecified }
}

import CareMeshContracts

extension Caremesh_Messaging_V1_NotificationKind {
    /// Critical kinds go out on every channel the person allows, whatever the hour (as Novu's
    /// critical workflows bypass preferences): someone may need help now, or someone may be
    /// trying to get into their account.
    var isCritical: Bool { [.sosOffered, .careAlertUpdated, .accountLocked].contains(self) }
}

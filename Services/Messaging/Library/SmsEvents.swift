import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import SwiftProtobuf

/// The events SMS changes publish.
enum SmsEvents {
    static func statusChanged(id: UUID, correlator: String, status: SmsStatus, previous: SmsStatus, patient: UUID?, callbackData: String?,
                              provider: String?) -> Caremesh_Messaging_V1_SmsStatusChanged {
        var e = Caremesh_Messaging_V1_SmsStatusChanged()
        e.messageID = id.text
        e.clientCorrelator = correlator
        e.status = SmsDesk.statuses.key(for: status) ?? .unspecified
        e.previousStatus = SmsDesk.statuses.key(for: previous) ?? .unspecified
        e.patientID = patient?.text ?? ""
        e.callbackData = callbackData ?? ""
        e.provider = provider ?? ""
        e.occurredAt = Google_Protobuf_Timestamp(date: Date())
        return e
    }
}

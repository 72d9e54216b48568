import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation

/// A person's own SMS consent, recorded from the app for the phone on their profile (identity's
/// contact points: nobody records consent for a number that is not theirs this way).
extension ConsentLedger {
    func recordMine(_ r: Caremesh_Messaging_V1_RecordMySmsConsentRequest, _ context: RPCContext, directory: ContactDirectory)
        async throws -> Caremesh_Messaging_V1_RecordMySmsConsentResponse
    {
        let me = try context.requireCaller().requireUserID()
        guard let contact = try await directory.contactPoints(of: [me])[me], contact.active else {
            throw RPCError(.failedPrecondition, "no active account to record consent for")
        }
        guard !contact.phone.isEmpty else {
            throw RPCError(.failedPrecondition, "your profile has no phone number: add one first",
                           details: [RPCError.fieldDetail("phone", "is not on your profile")])
        }
        let at = Date().formatted(.iso8601)
        let evidence = "app: account \(me.text), request \(context.requestID), trace \(context.traceID.isEmpty ? "-" : context.traceID), \(at)"
        return try await store.withTransaction { c in
            var response = Caremesh_Messaging_V1_RecordMySmsConsentResponse()
            var events = PendingEvents()
            response.entry = try await Self.append(phone: contact.phone, patient: nil, optedIn: r.optedIn, method: .app, evidence: evidence,
                                                   by: me.text, events: &events, on: c, logger: self.logger)
            try await self.outbox.append(events, on: c)
            return response
        }
    }
}

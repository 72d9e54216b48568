import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation

/// Offers answered for their responder by messaging (an SMS reply): the responder's own accept
/// or decline, run as them, so every rule of those (the one winner, a verified and free
/// responder, an offer that is theirs) holds the same.
extension SosDesk {
    static let answerRelays: Set<String> = ["service:messaging"]

    func answer(_ r: Caremesh_Dispatch_V1_AnswerOfferRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_AnswerOfferResponse {
        _ = try context.requireService(Self.answerRelays, "only messaging answers offers for their responders")
        var v = FieldViolations()
        let responder = v.uuid(r.responderID, "responder_id")
        try v.throwIfAny()
        var asResponder = context
        asResponder.caller = Caller.with {
            $0.subject = responder!.text
            $0.roles = ["volunteer"]
        }
        var response = Caremesh_Dispatch_V1_AnswerOfferResponse()
        if r.accept {
            response.sos = try await accept(.with { $0.sosID = r.sosID }, asResponder).sos
        } else {
            response.sos = try await decline(.with { $0.sosID = r.sosID }, asResponder).sos
        }
        return response
    }
}

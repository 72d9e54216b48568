import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import SwiftProtobuf

extension Webhooks {
    /// STOP and its kin opt the number out and queue the confirmation (exempt from consent);
    /// START opts back in and confirms; HELP answers. Other texts are logged only.
    func applyInbound(providerID: String, from: String, body: String, provider: String, events: inout PendingEvents,
                      on c: PostgresConnection) async throws -> Outcome {
        guard FieldViolations.isE164(from) else { return Outcome() }
        if let answer = SosSmsAnswer.parse(body) {
            // An answer to an SOS offer: applied through dispatch by `SosSmsAnswers`, after this commits.
            let fresh = try await SosSmsAnswers.record(answer, from: from, inbound: "\(provider):\(providerID)", on: c, logger: logger)
            return Outcome(wakeSender: fresh)
        }
        guard let (keyword, language) = SmsKeyword.detect(body) else { return Outcome() }
        let type: String
        switch keyword {
        case .optOut, .optIn:
            _ = try await ConsentLedger.append(phone: from, patient: nil, optedIn: keyword == .optIn, method: .smsReply,
                                               evidence: "\(provider) \(providerID)", by: MessagingService.actor, events: &events, on: c,
                                               logger: logger)
            type = keyword == .optOut ? "opt_out_confirmation" : "opt_in_confirmation"
        case .help:
            type = "help"
        }
        let id = try await SmsDesk.queueReply(to: from, keyword.reply(language: language), type: type, language: language,
                                              correlator: "reply:\(provider):\(providerID)", sender: configuration.defaultSender,
                                              on: c, logger: logger)
        return Outcome(related: id, wakeSender: id != nil)
    }
}

import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

/// Answers to SOS offers texted back (`YES 4821`), applied once each.
///
/// The webhook that brings one records it (`record`, in the webhook's transaction: nothing
/// acknowledged is lost); a round here claims the answers due, finds the code among those
/// texted to that very phone, has dispatch apply it as that volunteer (`AnswerOffer`: their own
/// accept or decline, so the one-winner rule holds), and records the outcome with the SMS back
/// in one transaction. Dispatch unreachable: tried again with backoff, at most `maxAttempts`.
final class SosSmsAnswers: Service, Sendable {
    let store: Store
    let client: RPCClient
    let sender: SmsSender
    let configuration: MessagingConfiguration
    let logger: Logger
    let signal = ChangeSignal()

    static let maxAttempts = 6
    /// Answers claimed per round.
    static let batch = 16

    init(store: Store, client: RPCClient, sender: SmsSender, configuration: MessagingConfiguration, logger: Logger) {
        self.store = store
        self.client = client
        self.sender = sender
        self.configuration = configuration
        self.logger = logger
    }

    /// Records an inbound answer (the webhook's transaction); false for a repeat.
    static func record(_ answer: SosSmsAnswer.Parsed, from phone: String, inbound: String, on c: PostgresConnection, logger: Logger)
        async throws -> Bool
    {
        try await c.query("""
            INSERT INTO sos_sms_answers (inbound_ref, phone_number, code, accept, language)
            VALUES (\(inbound), \(phone), \(answer.code), \(answer.accept), \(answer.language))
            ON CONFLICT (inbound_ref) DO NOTHING RETURNING id
            """, logger: logger).hasRows()
    }

    func run() async throws {
        await runRounds(signal: signal, pollInterval: configuration.pollInterval, logger: logger, what: "SOS answer") {
            try await self.answerDue()
        }
    }

    struct Due: Sendable {
        var id: UUID
        var phone: String
        var code: String
        var accept: Bool
        var attempts: Int
        /// The offer the code names, if it is this phone's and live.
        var person: UUID?
        var sos: UUID?
        /// The phone was texted a code at some time.
        var known: Bool
    }

    /// One round; true when there may be more due.
    func answerDue() async throws -> Bool {
        let due = try await store.withTransaction { c in
            try await c.query("""
                WITH claimed AS (
                    UPDATE sos_sms_answers a SET attempts = a.attempts + 1,
                        next_attempt_at = now() + make_interval(secs => least(60, 2 ^ a.attempts))
                    FROM (SELECT id FROM sos_sms_answers WHERE outcome IS NULL AND next_attempt_at <= now() ORDER BY next_attempt_at
                          LIMIT \(Self.batch) FOR UPDATE SKIP LOCKED) d
                    WHERE a.id = d.id
                    RETURNING a.id, a.phone_number, a.code, a.accept, a.attempts)
                SELECT c.id, c.phone_number, c.code, c.accept, c.attempts, r.person_id, r.sos_id,
                       EXISTS (SELECT 1 FROM sos_reply_codes k WHERE k.phone_number = c.phone_number)
                FROM claimed c
                LEFT JOIN sos_reply_codes r ON r.phone_number = c.phone_number AND r.code = c.code AND r.expires_at > now()
                """, logger: self.logger).collect().map { row in
                let (id, phone, code, accept, attempts, person, sos, known) =
                    try row.decode((UUID, String, String, Bool, Int32, UUID?, UUID?, Bool).self)
                return Due(id: id, phone: phone, code: code, accept: accept, attempts: Int(attempts), person: person, sos: sos, known: known)
            }
        }
        guard !due.isEmpty else { return false }
        var replied = false
        for answer in due {
            guard let (outcome, why) = await self.outcome(of: answer) else { continue }
            replied = try await finish(answer, outcome, why: why) || replied
        }
        if replied { sender.wake() }
        return due.count == Self.batch
    }

    /// What came of `answer` and dispatch's reason, or nil to try again later.
    func outcome(of answer: Due) async -> (SosSmsAnswer.Outcome, String?)? {
        guard let person = answer.person, let sos = answer.sos else { return (answer.known ? .unknownCode : .ignored, nil) }
        let request = Caremesh_Dispatch_V1_AnswerOfferRequest.with {
            $0.sosID = sos.text
            $0.responderID = person.text
            $0.accept = answer.accept
        }
        do {
            _ = try await client.call(DispatchMethods.answerOffer, request: request)
            return (answer.accept ? .accepted : .declined, nil)
        } catch {
            if let outcome = SosSmsAnswer.outcome(accept: answer.accept, error: error) { return (outcome, error.message) }
            guard answer.attempts >= Self.maxAttempts else {
                logger.warning("SOS answer not applied yet; retrying", metadata: ["answer.id": "\(answer.id.text)", "error.code": "\(error.code)"])
                return nil
            }
            return (.refused, "CareMesh could not be reached")
        }
    }

    /// The outcome and the SMS back, in one transaction. True when an SMS was queued.
    func finish(_ answer: Due, _ outcome: SosSmsAnswer.Outcome, why: String?) async throws -> Bool {
        try await store.withTransaction { c in
            var reply: UUID?
            if let text = SosSmsAnswer.reply(outcome, why: why) {
                reply = try await SmsDesk.queueReply(to: answer.phone, text, type: "sos_reply", language: "en",
                                                     correlator: "answer:\(answer.id.text)", sender: self.configuration.defaultSender,
                                                     on: c, logger: self.logger)
            }
            try await c.query("""
                UPDATE sos_sms_answers SET outcome = \(outcome.rawValue), person_id = \(answer.person), sos_id = \(answer.sos),
                    reply_sms_id = coalesce(\(reply), reply_sms_id), answered_at = now()
                WHERE id = \(answer.id)
                """, logger: self.logger)
            return reply != nil
        }
    }
}

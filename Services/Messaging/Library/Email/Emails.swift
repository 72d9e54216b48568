import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

/// Emails for identity (account recovery and security).
///
/// `send` (identity only) renders the kind's text with the caller's values and keeps it, once
/// per correlator, then wakes the sender. `run` claims due emails with a lease, sends each
/// through SendGrid, and records the outcome: sent (with the provider's id), or retried with
/// backoff on the provider's trouble, or failed for good (a refusal, `maxAttempts`, or expiry).
/// A sent or failed email's body is blanked: it may hold a code. Without a provider configured
/// emails wait, queued.
final class Emails: Service, Sendable {
    let store: Store
    let configuration: MessagingConfiguration
    let mail: SendGridMail?
    let logger: Logger
    let signal = ChangeSignal()

    static let requesters: Set<String> = ["service:identity"]
    static let maxAttempts = 5
    static let blanked = "(sent; blanked)"

    init(store: Store, configuration: MessagingConfiguration, logger: Logger) {
        self.store = store
        self.configuration = configuration
        self.logger = logger
        mail = configuration.sendGrid.map { SendGridMail(baseURL: $0.baseURL, apiKey: $0.apiKey, from: $0.from) }
    }

    func send(_ r: Caremesh_Messaging_V1_SendEmailRequest, _ context: RPCContext) async throws -> Caremesh_Messaging_V1_SendEmailResponse {
        let caller = try context.requireService(Self.requesters, "only identity sends account emails")
        var v = FieldViolations()
        let to = r.to.trimmingCharacters(in: .whitespaces)
        v.check(to.count >= 3 && to.count <= 320 && to.contains("@") && !to.hasPrefix("@") && !to.contains(where: \.isWhitespace),
                "to", "must be an email address")
        v.check(!r.clientCorrelator.isEmpty && r.clientCorrelator.count <= 100, "client_correlator", "is required (at most 100 characters)")
        let expires = r.expiresInS == 0 ? 900 : Int(r.expiresInS)
        v.check((60...86_400).contains(expires), "expires_in_s", "must be 60 to 86400")
        var rendered: EmailTemplates.Rendered?
        switch EmailTemplates.render(r.kind, r.variables) {
        case nil: v.check(false, "kind", "must be PASSWORD_RESET, EMAIL_VERIFICATION or ACCOUNT_LOCKED")
        case .failure(let missing)?: v.check(false, "variables", "missing: \(missing.names.joined(separator: ", "))")
        case .success(let email)?: rendered = email
        }
        try v.throwIfAny()
        let email = rendered!
        let rows = try await store.query("""
            WITH made AS (
                INSERT INTO emails (kind, to_address, subject, body_text, client_correlator, requested_by, expires_at)
                VALUES (\(email.kind), \(to), \(email.subject), \(email.text), \(r.clientCorrelator), \(caller.subject),
                        now() + make_interval(secs => \(Double(expires))))
                ON CONFLICT (client_correlator) DO NOTHING RETURNING id)
            SELECT id, true FROM made UNION ALL SELECT id, false FROM emails WHERE client_correlator = \(r.clientCorrelator)
            """)
        guard let row = rows.first else { throw RPCError(.aborted, "the email raced another with its correlator; try again") }
        let (id, created) = try row.decode((UUID, Bool).self)
        if created { signal.fire() }
        return .with {
            $0.emailID = id.text
            $0.created = created
        }
    }

    func run() async throws {
        guard mail != nil else {
            logger.warning("no email provider configured (MESSAGING_SENDGRID_*): emails wait, queued")
            try? await gracefulShutdown()
            return
        }
        await runRounds(signal: signal, pollInterval: configuration.pollInterval, logger: logger, what: "email") {
            try await self.sendDue()
        }
    }

    struct Due: Sendable {
        var id: UUID
        var to: String
        var subject: String
        var text: String
        var attempts: Int
        var expired: Bool
    }

    /// One round; true when there may be more due.
    func sendDue() async throws -> Bool {
        guard let mail else { return false }
        let due = try await store.withConnection { c in
            try await c.query("""
                UPDATE emails e SET lease_until = now() + make_interval(secs => \(self.configuration.lease.seconds)), attempts = e.attempts + 1
                FROM (SELECT id FROM emails WHERE status = 'queued' AND next_attempt_at <= now()
                          AND (lease_until IS NULL OR lease_until < now())
                      ORDER BY next_attempt_at LIMIT 32 FOR UPDATE SKIP LOCKED) d
                WHERE e.id = d.id
                RETURNING e.id, e.to_address, e.subject, e.body_text, e.attempts, e.expires_at < now()
                """, logger: self.logger).collect().map { row in
                let (id, to, subject, text, attempts, expired) = try row.decode((UUID, String, String, String, Int32, Bool).self)
                return Due(id: id, to: to, subject: subject, text: text, attempts: Int(attempts), expired: expired)
            }
        }
        let timeout = configuration.sendTimeout
        let outcomes = await withTaskGroup(of: (Int, Result<String, ProviderError>?).self) { group in
            for (i, email) in due.enumerated() where !email.expired {
                group.addTask { (i, await Self.sendOne(mail, email, timeout: timeout)) }
            }
            var out = [Result<String, ProviderError>?](repeating: nil, count: due.count)
            for await (i, result) in group { out[i] = result }
            return out
        }
        try await store.withTransaction { c in
            for (email, outcome) in zip(due, outcomes) {
                switch outcome {
                case .success(let providerID)?:
                    try await c.query("""
                        UPDATE emails SET status = 'sent', provider = 'sendgrid', provider_message_id = \(providerID), sent_at = now(),
                            lease_until = NULL, body_text = \(Self.blanked), error_message = NULL
                        WHERE id = \(email.id)
                        """, logger: self.logger)
                case .failure(let e)? where e.retryable && email.attempts < Self.maxAttempts:
                    let delay = self.configuration.retryDelay(email.attempts).seconds
                    try await c.query("""
                        UPDATE emails SET lease_until = NULL, error_message = \(e.description),
                            next_attempt_at = now() + make_interval(secs => \(delay))
                        WHERE id = \(email.id)
                        """, logger: self.logger)
                default:
                    let why = outcome.flatMap { if case .failure(let e) = $0 { e.description } else { nil } } ?? "expired before it could be sent"
                    try await c.query("""
                        UPDATE emails SET status = 'failed', lease_until = NULL, body_text = \(Self.blanked), error_message = \(why)
                        WHERE id = \(email.id)
                        """, logger: self.logger)
                    self.logger.warning("email not sent", metadata: ["email.id": "\(email.id.text)", "why": "\(why)"])
                }
            }
        }
        return due.count == 32
    }

    /// One email sent, its outcome as a value (untyped `catch`, as `VoiceCalls.placeOne`).
    static func sendOne(_ mail: SendGridMail, _ email: Due, timeout: Duration) async -> Result<String, ProviderError> {
        do {
            return .success(try await mail.send(id: email.id, to: email.to, subject: email.subject, text: email.text, timeout: timeout))
        } catch {
            return .failure(error)
        }
    }
}

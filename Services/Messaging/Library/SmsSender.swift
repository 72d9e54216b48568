import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

/// What became of one attempt to hand a message to the providers.
enum SendOutcome: Sendable, Equatable {
    /// A provider took it.
    case accepted(ProviderAcceptance)
    /// Every provider failed with a retryable error: try again later (or give up, see `next`).
    case retryLater(ProviderError)
    /// A provider refused it for good (an invalid number, a refused text).
    case refused(ProviderError)
    /// Its consent was withdrawn while it waited.
    case noConsent
    /// No provider is configured.
    case noProvider
}

/// Hands recorded messages to the providers, in `sendRounds` concurrent loops of rounds. Each
/// round claims due messages (scheduled or pending, their time come, not leased) with
/// `FOR UPDATE SKIP LOCKED` and leases them, so the loops and any number of messaging instances
/// share the work and a crashed one's messages are taken again when the lease runs out; then
/// sends them concurrently, outside any transaction, and records every outcome in one
/// statement, with an `SmsStatusChanged` event for each status that moved.
///
/// Per message and round, the providers are tried in order: a retryable failure (5xx, 429, a
/// timeout) moves on to the next (failover); a permanent one fails the message. When all failed
/// retryably it is retried after `backoff · 2^(n-1)`, at most `maxRetries` times.
///
/// Delivery to a provider is at least once: if the process dies between the provider's
/// acceptance and the record of it, the message goes out again after its lease, unless it was
/// recorded meanwhile. Orange drops the repeat by its client correlator. Twilio has no such key,
/// but its status callbacks name our message (`?m=` in the callback URL), so a callback that
/// arrives within the lease records the message and it is not sent again.
public final class SmsSender: Service, Sendable {
    let store: Store
    let configuration: MessagingConfiguration
    let providers: [any SmsProvider]
    let outbox: Outbox
    let logger: Logger
    let signal = ChangeSignal()

    init(store: Store, outbox: Outbox, configuration: MessagingConfiguration, providers: [any SmsProvider], logger: Logger) {
        self.store = store
        self.outbox = outbox
        self.configuration = configuration
        self.providers = providers
        self.logger = logger
    }

    /// A message became due: look now instead of at the next poll.
    func wake() { signal.fire() }

    public func run() async throws {
        // `sendRounds` loops of rounds; a full batch: more may be due at once.
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<configuration.sendRounds {
                group.addTask {
                    await runRounds(signal: self.signal, pollInterval: self.configuration.pollInterval, logger: self.logger, what: "SMS sender") {
                        try await self.runOnce() >= self.configuration.batchSize
                    }
                }
            }
        }
    }

    struct Claimed: Sendable {
        var sms: OutboundSms
        var type: String
        var retryCount: Int
        var consented: Bool?
    }

    /// One round: claim, send, record. Returns how many messages it claimed.
    @discardableResult
    func runOnce() async throws -> Int {
        let claimed = try await claim()
        guard !claimed.isEmpty else { return 0 }
        let outcomes = await withTaskGroup(of: (UUID, SendOutcome).self) { group in
            for m in claimed {
                group.addTask { (m.sms.id, await self.attempt(m)) }
            }
            var out: [UUID: SendOutcome] = [:]
            for await (id, outcome) in group { out[id] = outcome }
            return out
        }
        try await record(claimed, outcomes)
        return claimed.count
    }

    func claim() async throws -> [Claimed] {
        let lease = configuration.lease.seconds
        return try await store.withConnection { c in
            var out: [Claimed] = []
            let rows = try await c.run(Prepared<Claim>(lease, Int64(self.configuration.batchSize)), logger: self.logger)
            for row in rows {
                let (id, to, body, correlator, type, retries, consented) = try row.decode((UUID, String, String, String, String, Int32, Bool?).self)
                out.append(Claimed(sms: OutboundSms(id: id, to: to, body: body, clientCorrelator: correlator), type: type,
                                   retryCount: Int(retries), consented: consented))
            }
            return out
        }
    }

    /// SQL: a message whose time to go to a provider has come (leased by a sender or not);
    /// the claim and `Health/Backlog` share it.
    static let dueSQL = "status IN ('scheduled', 'pending') AND next_attempt_at <= now()"

    /// Claims due messages: `$1` the lease in seconds, `$2` at most this many. Prepared, as
    /// the record below: the sender runs them many times a second.
    enum Claim: PreparedSQL {
        static let sql = """
            UPDATE sms_messages m SET lease_until = now() + make_interval(secs => $1), status = 'pending'
            FROM (SELECT id FROM sms_messages
                  WHERE \(SmsSender.dueSQL) AND (lease_until IS NULL OR lease_until < now())
                  ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) due
            WHERE m.id = due.id
            RETURNING m.id, m.phone_number, m.message_content, m.client_correlator, m.message_type, m.retry_count,
                (SELECT consent_given FROM sms_consent c WHERE c.phone_number = m.phone_number ORDER BY seq DESC LIMIT 1)
            """
        static let types: [PostgresDataType] = [.float8, .int8]
    }

    /// Tries the providers in order for one message.
    func attempt(_ m: Claimed) async -> SendOutcome {
        guard SmsConsent.maySend(SmsDesk.purpose(ofType: m.type), optedIn: m.consented) else { return .noConsent }
        guard !providers.isEmpty else { return .noProvider }
        var last: ProviderError?
        for provider in providers {
            do {
                return .accepted(try await provider.send(m.sms, timeout: configuration.sendTimeout))
            } catch {
                if !error.retryable { return .refused(error) }
                logger.notice("SMS provider failed; trying the next", metadata: [
                    "sms.id": "\(m.sms.id)", "provider": "\(provider.name)", "error.code": "\(error.code)"])
                last = error
            }
        }
        return .retryLater(last!)
    }

    /// The row changes for each outcome, written in one statement. A status already moved on by
    /// a webhook (the provider's callback can beat this record) is kept.
    func record(_ claimed: [Claimed], _ outcomes: [UUID: SendOutcome]) async throws {
        // Arrays of text cannot hold NULL here: "" stands for none.
        var ids: [UUID] = [], kinds: [String] = [], providers: [String] = [], providerIDs: [String] = []
        var senders: [String] = [], errors: [String] = [], delays: [Double] = []
        for m in claimed {
            guard let outcome = outcomes[m.sms.id] else { continue }
            ids.append(m.sms.id)
            var provider: String?, providerID: String?, sender: String?, error: String?, delay = 0.0
            let kind: String
            switch outcome {
            case .accepted(let a):
                kind = "sent"
                (provider, providerID, sender) = (a.provider, a.providerMessageID, a.from)
            case .retryLater(let e) where m.retryCount < configuration.maxRetries:
                kind = "retry"
                error = e.description
                delay = configuration.retryDelay(m.retryCount + 1).seconds
            case .retryLater(let e), .refused(let e):
                kind = "failed"
                error = e.description
            case .noConsent:
                kind = "cancelled"
                error = "consent withdrawn before sending"
            case .noProvider:
                kind = "retry"
                error = "no SMS provider is configured"
                delay = configuration.retryDelay(configuration.maxRetries).seconds
            }
            kinds.append(kind); providers.append(provider ?? ""); providerIDs.append(providerID ?? "")
            senders.append(sender ?? ""); errors.append(error ?? ""); delays.append(delay)
            if kind != "sent" {
                logger.notice("SMS not sent", metadata: ["sms.id": "\(m.sms.id)", "outcome": "\(kind)"])
            }
        }
        let record = try Prepared<Record>(ids, kinds, providers, providerIDs, senders, errors, delays, Int32(configuration.maxRetries))
        try await store.withTransaction { c in
            var events = PendingEvents()
            for row in try await c.run(record, logger: self.logger) {
                let (id, before, after, correlator, patient, callbackData, provider) =
                    try row.decode((UUID, String, String, String, UUID?, String?, String?).self)
                guard before != after, let from = SmsStatus(rawValue: before), let to = SmsStatus(rawValue: after) else { continue }
                try events.add(SmsEvents.statusChanged(id: id, correlator: correlator, status: to, previous: from, patient: patient,
                                                       callbackData: callbackData, provider: provider), key: id.text)
            }
            try await self.outbox.append(events, on: c)
        }
    }

    /// Records a round's outcomes: `$1`… `$7` one element per message (id, kind, provider,
    /// provider id, sender, error, retry delay; "" for none), `$8` the most retries. `before`
    /// reads each row's status under its lock, so the events say what changed.
    enum Record: PreparedSQL {
        static let sql = """
            WITH o AS (SELECT id, kind, nullif(provider, '') AS provider, nullif(provider_id, '') AS provider_id,
                              nullif(sender, '') AS sender, nullif(error, '') AS error, delay
                       FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                                   $6::text[], $7::float8[]) AS u(id, kind, provider, provider_id, sender, error, delay)),
            before AS (SELECT m.id, m.status FROM sms_messages m JOIN o ON o.id = m.id FOR UPDATE OF m)
            UPDATE sms_messages m SET
                lease_until = NULL,
                status = CASE WHEN m.status <> 'pending' THEN m.status
                              WHEN o.kind = 'retry' THEN 'pending' ELSE o.kind END,
                provider = coalesce(m.provider, o.provider),
                provider_message_id = coalesce(m.provider_message_id, o.provider_id),
                sender_address = coalesce(o.sender, m.sender_address),
                sent_at = CASE WHEN o.kind = 'sent' THEN coalesce(m.sent_at, now()) ELSE m.sent_at END,
                failed_at = CASE WHEN o.kind = 'failed' AND m.status = 'pending' THEN now() ELSE m.failed_at END,
                cancelled_at = CASE WHEN o.kind = 'cancelled' AND m.status = 'pending' THEN now() ELSE m.cancelled_at END,
                retry_count = CASE WHEN o.kind = 'retry' AND m.retry_count < $8
                                   THEN m.retry_count + 1 ELSE m.retry_count END,
                next_attempt_at = now() + make_interval(secs => o.delay),
                error_message = CASE WHEN o.kind = 'sent' THEN NULL ELSE o.error END
            FROM o JOIN before ON before.id = o.id
            WHERE m.id = o.id
            RETURNING m.id, before.status, m.status, m.client_correlator, m.patient_id, m.callback_data, m.provider
            """
        static let types: [PostgresDataType] = [.uuidArray, .textArray, .textArray, .textArray, .textArray, .textArray, .float8Array, .int4]
    }
}

/// Runs `round` until graceful shutdown, the loop of the messaging workers that claim leased rows:
/// again at once when `round` says more is waiting, else once `signal` fires (new work here) or
/// `pollInterval` passes (work from another instance, or come due). A failed round is logged by
/// its error's kind only and tried again.
func runRounds(signal: ChangeSignal, pollInterval: Duration, logger: Logger, what: String,
               _ round: @escaping @Sendable () async throws -> Bool) async {
    await cancelWhenGracefulShutdown {
        while !Task.isCancelled {
            let seen = signal.generation
            var more = false
            do { more = try await round() } catch {
                if !Task.isCancelled {
                    logger.warning("\(what) round failed; retrying", metadata: ["error.kind": "\(RPCError.loggableKind(of: error))"])
                }
            }
            if !more { await signal.wait(after: seen, timeout: pollInterval) }
        }
    }
}

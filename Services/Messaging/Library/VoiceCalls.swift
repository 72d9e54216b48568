import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import SwiftProtobuf

/// A voice call's status as `voice_calls.status` keeps it: `requested` until a provider took
/// it, then the provider's, forward only (a late `ringing` never follows `in_progress`);
/// `accepted` when the person pressed 1 at the call's accept prompt.
enum VoiceCallStatus: String, Sendable, CaseIterable {
    case requested, queued, ringing
    case inProgress = "in_progress"
    case accepted, completed, busy
    case noAnswer = "no_answer"
    case failed, canceled, machine

    var rank: Int {
        switch self {
        case .requested: 0
        case .queued: 1
        case .ringing: 2
        case .inProgress: 3
        case .accepted: 4
        case .completed, .busy, .noAnswer, .failed, .canceled, .machine: 5
        }
    }

    var isFinal: Bool { rank == 5 }

    /// A person is on the line (a hang-up ends it as `completed`, not `canceled`).
    var isConnected: Bool { self == .inProgress || self == .accepted }

    func canMove(to next: VoiceCallStatus) -> Bool { !isFinal && next.rank > rank }

    static let protos: [VoiceCallStatus: Caremesh_Messaging_V1_CallStatus] = [
        .queued: .queued, .ringing: .ringing, .inProgress: .inProgress, .accepted: .accepted, .completed: .completed, .busy: .busy,
        .noAnswer: .noAnswer, .failed: .failed, .canceled: .canceled, .machine: .machine,
    ]

    var proto: Caremesh_Messaging_V1_CallStatus { Self.protos[self] ?? .unspecified }

    init?(_ proto: Caremesh_Messaging_V1_CallStatus) {
        guard let s = Self.protos.key(for: proto) else { return nil }
        self = s
    }
}

/// Twilio's Calls API (`TwilioAPI`): `Calls.json` with `To`, `From`, TwiML that says the
/// spoken message and plays the recording (either may be absent, not both) and, with an accept
/// prompt, listens for the key that accepts, the ring `Timeout`, answering-machine detection,
/// and status callbacks for every event; `Calls/{CallSid}.json` with `Status` hangs up.
public struct TwilioVoiceProvider: Sendable {
    let api: TwilioAPI
    public let from: String
    /// The router's `/webhooks/voice/twilio`, or nil.
    public let statusCallback: String?

    /// What the call does once answered: `<Say>` the message, then `<Play>` the recording.
    /// With an accept prompt and somewhere to send the key (`gatherAction`), both inside a
    /// `<Gather>` of one digit that posts it there, the prompt said once more if nothing was
    /// pressed, then goodbye: Twilio posts to the action only when a key was pressed.
    static func twiml(_ script: CallScript, gatherAction: String?) -> String {
        let say = { (text: String) in "<Say language=\"\(xml(script.language))\">\(xml(text))</Say>" }
        var message = script.spoken.isEmpty ? "" : say(script.spoken)
        if let url = script.recording { message += "<Play>\(xml(url))</Play>" }
        guard !script.acceptPrompt.isEmpty, let gatherAction else { return "<Response>\(message)</Response>" }
        let gather = "<Gather input=\"dtmf\" numDigits=\"1\" timeout=\"\(gatherTimeoutS)\" action=\"\(xml(gatherAction))\" method=\"POST\">"
        return "<Response>\(gather)\(message)\(say(script.acceptPrompt))</Gather>\(gather)\(say(script.acceptPrompt))</Gather>"
            + "\(say(noKeyGoodbye))<Hangup/></Response>"
    }

    /// How long each `<Gather>` waits for the key once its words are said.
    static let gatherTimeoutS = 8
    static let noKeyGoodbye = "No key was pressed. Goodbye."

    /// The TwiML a gathered key is answered with (`Webhooks`): thanks for the accept key,
    /// else goodbye. Said before the requester learns of it, so it promises no more than that
    /// the answer was taken.
    static func keyReply(accepted: Bool) -> Data {
        let text = accepted ? "Thank you. Your answer is recorded." : "That key does not accept. Goodbye."
        return Data("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>\(text)</Say><Hangup/></Response>".utf8)
    }

    static func xml(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    /// What a call says and plays, and what it says to ask for the key that accepts (empty:
    /// it does not ask).
    struct CallScript: Sendable, Equatable {
        var spoken: String
        var language: String
        var recording: String?
        var acceptPrompt = ""
    }

    func place(id: UUID, to: String, script: CallScript, ringTimeout: Int, timeout: Duration) async throws(ProviderError) -> String {
        // Status callbacks and the gathered key go to the same webhook (`WebhookReader` tells
        // them apart by `Digits`), which names our call.
        let callback = statusCallback.map { "\($0)?c=\(id.text)" }
        var form: [(name: String, value: String)] = [
            ("To", to), ("From", from), ("Twiml", Self.twiml(script, gatherAction: callback)), ("Timeout", "\(ringTimeout)"),
            ("MachineDetection", "Enable"),
        ]
        if let callback {
            form.append(("StatusCallback", callback))
            for event in ["initiated", "ringing", "answered", "completed"] { form.append(("StatusCallbackEvent", event)) }
        }
        return try await api.post("Calls.json", form, timeout: timeout)
    }

    /// Ends a call: `completed` once answered, `canceled` while it still rings.
    func hangUp(_ callSID: String, answered: Bool, timeout: Duration) async throws(ProviderError) {
        _ = try await api.post("Calls/\(callSID).json", [("Status", answered ? "completed" : "canceled")], timeout: timeout)
    }
}

/// Calls placed for other services. Alerts' `CareAlertRaised` and `CareAlertEscalated` ask for
/// calls (the consumer records them in the event's transaction); `ended_call_ids` ask for
/// hang-ups. `run()` places requested calls (claimed with a lease, as `SmsSender` does; retried
/// with backoff at most 3 times) and hangs up; every status becomes a `CallStatusChanged` event
/// for the requester, keyed by its own call id.
final class VoiceCalls: Service, Sendable {
    let store: Store
    let outbox: Outbox
    let provider: TwilioVoiceProvider?
    let configuration: MessagingConfiguration
    let logger: Logger
    let signal = ChangeSignal()

    /// The key that accepts at a call's accept prompt.
    static let acceptKey = "1"

    init(store: Store, outbox: Outbox, configuration: MessagingConfiguration, logger: Logger) {
        self.store = store
        self.outbox = outbox
        self.configuration = configuration
        self.logger = logger
        provider = configuration.twilio.map {
            TwilioVoiceProvider(api: TwilioAPI(baseURL: $0.baseURL, accountSID: $0.accountSID, authToken: $0.authToken), from: $0.from,
                                statusCallback: configuration.webhookURL(kind: "voice", provider: "twilio"))
        }
    }

    static func statusChanged(_ id: UUID, reference: String, status: VoiceCallStatus, providerCallID: String?, duration: Int? = nil)
        -> Caremesh_Messaging_V1_CallStatusChanged
    {
        var e = Caremesh_Messaging_V1_CallStatusChanged()
        e.callID = id.text
        e.status = status.proto
        e.reference = reference
        e.provider = "twilio"
        e.providerCallID = providerCallID ?? ""
        e.occurredAt = Google_Protobuf_Timestamp(date: Date())
        if let duration { e.durationS = UInt32(max(0, duration)) }
        return e
    }

    // MARK: - Alerts' requests

    /// Applies one of alerts' events in the consumer's transaction.
    func apply(_ event: Event, _ c: PostgresConnection) async throws {
        let payload = Data(event.payload)
        var events = PendingEvents()
        switch event.type {
        case Caremesh_Alerts_V1_CareAlertRaised.protoMessageName:
            try await request(try Caremesh_Alerts_V1_CareAlertRaised(serializedBytes: payload).calls, events: &events, on: c)
        case Caremesh_Alerts_V1_CareAlertEscalated.protoMessageName:
            let e = try Caremesh_Alerts_V1_CareAlertEscalated(serializedBytes: payload)
            try await end(e.endedCallIds, events: &events, on: c)
            try await request(e.calls, events: &events, on: c)
        case Caremesh_Alerts_V1_CareAlertStatusChanged.protoMessageName:
            try await end(try Caremesh_Alerts_V1_CareAlertStatusChanged(serializedBytes: payload).endedCallIds, events: &events, on: c)
        default:
            return
        }
        // The placer is woken once this transaction commits (the consumer's `committed`).
        try await outbox.append(events, on: c)
    }

    /// Records requested calls; one that cannot be placed (a bad number or recording URL, or
    /// nothing to say) fails at once.
    func request(_ calls: [Caremesh_Alerts_V1_CallRequest], events: inout PendingEvents, on c: PostgresConnection) async throws {
        for call in calls {
            guard let id = UUID(uuidString: call.callID) else { continue }
            let reference = String(call.reference.prefix(200))
            let url = call.voiceMessageURL.isEmpty ? nil : call.voiceMessageURL
            let spoken = String(call.spokenMessage.prefix(500))
            let prompt = String(call.acceptPrompt.prefix(300))
            let language = call.language.wholeMatch(of: /[a-z]{2,3}(-[A-Za-z0-9]{2,8})?/) != nil ? call.language : "en-US"
            let recordingOK = url.map { ($0.hasPrefix("https://") || $0.hasPrefix("http://")) && $0.count <= 2_000 } ?? true
            guard FieldViolations.isE164(call.to), recordingOK, url != nil || !spoken.isEmpty, !reference.isEmpty else {
                logger.warning("call request refused: bad number or recording URL, or nothing to say", metadata: ["call.id": "\(id)"])
                try events.add(Self.statusChanged(id, reference: reference, status: .failed, providerCallID: nil), key: id.text)
                continue
            }
            try await c.query("""
                INSERT INTO voice_calls (id, reference, requested_by, phone_number, voice_message_url, spoken_message, language,
                                         accept_prompt, ring_timeout_s)
                VALUES (\(id), \(reference), 'alerts', \(call.to), \(url), \(spoken), \(language), \(prompt),
                        \(Int32(min(600, max(5, call.ringTimeoutS)))))
                ON CONFLICT (id) DO NOTHING
                """, logger: logger)
        }
    }

    /// Calls to hang up: one not yet placed is canceled here; the others at the provider.
    func end(_ ids: [String], events: inout PendingEvents, on c: PostgresConnection) async throws {
        let ids = ids.compactMap(UUID.init(uuidString:))
        guard !ids.isEmpty else { return }
        let canceled = try await c.query("""
            UPDATE voice_calls SET status = 'canceled', hangup_requested = true, lease_until = NULL
            WHERE id = ANY(\(ids)) AND status = 'requested' RETURNING id, reference
            """, logger: logger)
        for try await (id, reference) in canceled.decode((UUID, String).self) {
            try events.add(Self.statusChanged(id, reference: reference, status: .canceled, providerCallID: nil), key: id.text)
        }
        try await c.query("UPDATE voice_calls SET hangup_requested = true WHERE id = ANY(\(ids)) AND NOT hangup_requested", logger: logger)
    }

    // MARK: - Placing and hanging up

    func run() async throws {
        guard provider != nil else {
            try? await gracefulShutdown()
            return
        }
        await runRounds(signal: signal, pollInterval: configuration.pollInterval, logger: logger, what: "call") {
            try await self.placeDue()
            try await self.hangUpRequested()
            return false
        }
    }

    /// SQL: a call whose time to be placed has come (leased or not); the claim and
    /// `Health/Backlog` share it.
    static let dueSQL = "status = 'requested' AND next_attempt_at <= now()"

    /// Claims due calls (at most 32), leased for `$1` seconds. Prepared, as the hang-ups' read:
    /// the loop runs them at every wake-up, and planning them cost PostgreSQL more than running
    /// them.
    enum Claim: PreparedSQL {
        static let sql = """
            UPDATE voice_calls v SET lease_until = now() + make_interval(secs => $1)
            FROM (SELECT id FROM voice_calls
                  WHERE \(VoiceCalls.dueSQL) AND (lease_until IS NULL OR lease_until < now())
                  ORDER BY next_attempt_at LIMIT 32 FOR UPDATE SKIP LOCKED) due
            WHERE v.id = due.id
            RETURNING v.id, v.phone_number, v.voice_message_url, v.spoken_message, v.language, v.ring_timeout_s, v.retry_count,
                      v.accept_prompt
            """
        static let types: [PostgresDataType] = [.float8]
    }

    /// Calls to hang up (at most 32).
    enum HangUpsDue: PreparedSQL {
        static let sql = """
            SELECT id, provider_call_id, status FROM voice_calls
            WHERE hangup_requested AND NOT hung_up AND status IN ('queued', 'ringing', 'in_progress', 'accepted') AND provider_call_id IS NOT NULL
            LIMIT 32
            """
        static let types: [PostgresDataType] = []
    }

    func placeDue() async throws {
        guard let provider else { return }
        let lease = configuration.lease.seconds
        let claimed = try await store.withConnection { c in
            try await c.run(Prepared<Claim>(lease), logger: self.logger).map {
                let (id, to, url, spoken, language, ring, retries, prompt) =
                    try $0.decode((UUID, String, String?, String, String, Int32, Int32, String).self)
                return (id, to, TwilioVoiceProvider.CallScript(spoken: spoken, language: language, recording: url, acceptPrompt: prompt),
                        ring, retries)
            }
        }
        guard !claimed.isEmpty else { return }
        let timeout = configuration.sendTimeout
        // Keyed by position in `claimed`. (A UUID returned from a child task whose body used
        // `do throws(ProviderError)` came back unequal to itself in release builds with Swift
        // 6.3, so no success was ever written: see `placeOne`.)
        let outcomes = await withTaskGroup(of: (Int, Result<String, ProviderError>).self) { group in
            for (i, (id, to, script, ring, _)) in claimed.enumerated() {
                group.addTask { (i, await Self.placeOne(provider, id: id, to: to, script: script, ringTimeout: Int(ring), timeout: timeout)) }
            }
            var out: [UUID: Result<String, ProviderError>] = [:]
            for await (i, result) in group { out[claimed[i].0] = result }
            return out
        }
        try await store.withTransaction { c in
            var events = PendingEvents()
            for (id, _, _, _, retries) in claimed {
                guard let outcome = outcomes[id] else { continue }
                switch outcome {
                case .success(let sid):
                    let rows = try await c.query("""
                        UPDATE voice_calls SET lease_until = NULL, provider = 'twilio', provider_call_id = coalesce(provider_call_id, \(sid)),
                            placed_at = coalesce(placed_at, clock_timestamp()),
                            status = CASE WHEN status = 'requested' THEN 'queued' ELSE status END
                        WHERE id = \(id) RETURNING reference, status
                        """, logger: self.logger).collect().map { try $0.decode((String, String).self) }
                    if let (reference, status) = rows.first, status == "queued" {
                        try events.add(Self.statusChanged(id, reference: reference, status: .queued, providerCallID: sid), key: id.text)
                    }
                case .failure(let e) where e.retryable && Int(retries) < self.configuration.maxRetries:
                    let delay = self.configuration.retryDelay(Int(retries) + 1).seconds
                    try await c.query("""
                        UPDATE voice_calls SET lease_until = NULL, retry_count = retry_count + 1, error_message = \(e.description),
                            next_attempt_at = now() + make_interval(secs => \(delay))
                        WHERE id = \(id) AND status = 'requested'
                        """, logger: self.logger)
                case .failure(let e):
                    let rows = try await c.query("""
                        UPDATE voice_calls SET lease_until = NULL, status = 'failed', error_message = \(e.description)
                        WHERE id = \(id) AND status = 'requested' RETURNING reference
                        """, logger: self.logger).collect().map { try $0.decode(String.self) }
                    if let reference = rows.first {
                        try events.add(Self.statusChanged(id, reference: reference, status: .failed, providerCallID: nil), key: id.text)
                    }
                }
            }
            try await self.outbox.append(events, on: c)
        }
    }

    /// One call placed, its outcome as a value (untyped `catch`: see `placeDue`).
    static func placeOne(_ provider: TwilioVoiceProvider, id: UUID, to: String, script: TwilioVoiceProvider.CallScript,
                         ringTimeout: Int, timeout: Duration) async -> Result<String, ProviderError> {
        do {
            return .success(try await provider.place(id: id, to: to, script: script, ringTimeout: ringTimeout, timeout: timeout))
        } catch {
            return .failure(error)
        }
    }

    func hangUpRequested() async throws {
        guard let provider else { return }
        let due = try await store.withConnection { c in
            try await c.run(Prepared<HangUpsDue>(), logger: self.logger).map { try $0.decode((UUID, String, String).self) }
        }
        for (id, sid, status) in due {
            do {
                let connected = VoiceCallStatus(rawValue: status)?.isConnected == true
                try await provider.hangUp(sid, answered: connected, timeout: configuration.sendTimeout)
            } catch {
                // Retried next round unless the provider refused for good (the call already ended).
                if error.retryable { continue }
            }
            _ = try await store.withConnection { c in
                try await c.query("UPDATE voice_calls SET hung_up = true WHERE id = \(id)", logger: self.logger)
            }
        }
    }

    // MARK: - Provider callbacks

    /// A call status from the provider, forward only, announced to the requester.
    func applyStatus(id: UUID?, providerCallID: String, status: VoiceCallStatus?, raw: String, duration: Int?,
                     events: inout PendingEvents, on c: PostgresConnection) async throws -> Webhooks.Outcome {
        var found: (UUID, String, String)?
        for try await row in try await c.query("""
            SELECT id, status, reference FROM voice_calls
            WHERE (\(id)::uuid IS NOT NULL AND id = \(id)) OR (\(id)::uuid IS NULL AND provider = 'twilio' AND provider_call_id = \(providerCallID))
            FOR UPDATE
            """, logger: logger).decode((UUID, String, String).self) { found = row }
        guard let (callID, current, reference) = found else { return Webhooks.Outcome(error: "no such call") }
        guard let status, let from = VoiceCallStatus(rawValue: current) else {
            return Webhooks.Outcome(error: "call status \(raw) is not one CareMesh knows")
        }
        guard from.canMove(to: status) else { return Webhooks.Outcome() }
        try await c.query("""
            UPDATE voice_calls SET status = \(status.rawValue), provider = coalesce(provider, 'twilio'),
                provider_call_id = coalesce(provider_call_id, \(providerCallID)), duration_s = coalesce(\(duration.map(Int32.init)), duration_s),
                lease_until = NULL
            WHERE id = \(callID)
            """, logger: logger)
        try events.add(Self.statusChanged(callID, reference: reference, status: status, providerCallID: providerCallID, duration: duration),
                       key: callID.text)
        signal.fire()
        return Webhooks.Outcome()
    }
}

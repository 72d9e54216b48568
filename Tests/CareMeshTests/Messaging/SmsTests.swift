import CareMeshContracts
import CareMeshRPC
import CareMeshRouter
import CareMeshStore
import CareMeshTesting
import Foundation
import DispatchService
import IdentityService
import MessagingService
import PostgresNIO
import ProviderSandbox
import SwiftProtobuf
import Testing

/// SMS through a router that requires tokens, on real PostgreSQL, with the provider sandbox
/// speaking Twilio's and Orange's APIs over HTTP on loopback.
@Suite(.serialized) struct SmsTests {
    let logger = TestDatabase.logger

    struct Stack: Sendable {
        let router: Router
        let client: RPCClient
        let db: TestDatabase
        let sandbox: ProviderSandbox
        let admin: TestAccount
        /// The router's HTTP edge, e.g. http://127.0.0.1:40123.
        let edgeURL: String

        func count(_ query: PostgresQuery) async throws -> Int64 { try await db.count(query) }

        func send(_ r: Caremesh_Messaging_V1_SendSmsRequest, as account: TestAccount? = nil) async throws
            -> Caremesh_Messaging_V1_SendSmsResponse
        {
            try await client.call(MessagingMethods.sendSms, request: r, options: (account ?? admin).auth)
        }

        func consent(_ phone: String, _ optedIn: Bool, method: Caremesh_Messaging_V1_ConsentMethod = .written) async throws {
            var r = Caremesh_Messaging_V1_RecordSmsConsentRequest()
            r.phone = phone
            r.optedIn = optedIn
            r.method = method
            r.evidence = "form 12"
            _ = try await client.call(MessagingMethods.recordSmsConsent, request: r, options: admin.auth)
        }

        func get(_ id: String) async throws -> Caremesh_Messaging_V1_SmsMessage {
            var r = Caremesh_Messaging_V1_GetSmsRequest()
            r.id = id
            return try await client.call(MessagingMethods.getSms, request: r, options: admin.auth).message
        }

        /// Waits until the message reaches `status`.
        @discardableResult
        func until(_ id: String, is status: Caremesh_Messaging_V1_SmsStatus, timeout: Duration = .seconds(15)) async throws
            -> Caremesh_Messaging_V1_SmsMessage
        {
            try await TestStack.eventually(timeout: timeout) {
                let m = try await get(id)
                guard m.status == status else { throw RPCError(.failedPrecondition, "message is \(m.status), waiting for \(status)") }
                return m
            }
        }
    }

    /// A fresh database, the sandbox, a router that requires tokens with its HTTP edge, identity
    /// and messaging with Twilio then Orange (both the sandbox) in failover order, callbacks to
    /// the edge; dispatch too when asked.
    func withStack(_ extra: [String: String] = [:], dispatch: Bool = false, _ body: @Sendable (Stack) async throws -> Void) async throws {
        try await withProviderEdge { router, sandbox, edgeURL, providers in
            let db = try await TestDatabase.fresh("sms")
            let env = db.environment.merging(providers) { $1 }.merging(extra) { $1 }
            var hosts = [try await IdentityService.make(environment: env, logger: logger),
                         try await MessagingService.make(environment: env, logger: logger)]
            if dispatch { hosts.append(try await DispatchService.make(environment: env, logger: logger)) }
            let client = TestStack.client(router, timeout: .seconds(10))
            defer { client.close() }
            try await TestStack.withHosts(hosts) {
                for service in ["identity", "messaging"] + (dispatch ? ["dispatch"] : []) { try await TestStack.waitUntilServing(client, service) }
                _ = try await TestStack.eventually(timeout: .seconds(10)) {
                    if router.signingKeyIDs.isEmpty { throw RPCError(.unavailable, "no keys yet") }
                }
                let admin = try await TestAccount.make(client, db, role: "admin")
                try await body(Stack(router: router, client: client, db: db, sandbox: sandbox, admin: admin, edgeURL: edgeURL))
            }
        }
    }

    static func phone() -> String { "+3361\(Int.random(in: 1_000_000...9_999_999))" }

    static func text(_ to: String, _ body: String, correlator: String = "") -> Caremesh_Messaging_V1_SendSmsRequest {
        var r = Caremesh_Messaging_V1_SendSmsRequest()
        r.to = to
        r.text = body
        r.clientCorrelator = correlator
        return r
    }

    static func reminder(_ to: String, language: String = "", variables: [String: String]) -> Caremesh_Messaging_V1_SendSmsRequest {
        var r = Caremesh_Messaging_V1_SendSmsRequest()
        r.to = to
        r.templateType = .sevenDayReminder
        r.language = language
        r.variables = variables
        return r
    }

    static let reminderValues = ["patient_name": "Ana", "due_date": "2026-12-01", "appointment_time": "09:30", "facility_name": "Clinic 4"]

    @Test func noConsentIsRefusedAndNothingIsWritten() async throws {
        try await withStack { s in
            let to = Self.phone()
            var error: RPCError?
            do { _ = try await s.send(Self.text(to, "hello")) } catch let e as RPCError { error = e }
            #expect(error?.code == .failedPrecondition)
            #expect(error?.details.contains { $0.badRequest.fieldViolations.contains { $0.field == "to" } } == true)
            // Opted in, then out: refused again.
            try await s.consent(to, true)
            try await s.consent(to, false, method: .verbal)
            #expect(await statusCode { _ = try await s.send(Self.text(to, "hello")) } == .failedPrecondition)
            #expect(try await s.count("SELECT count(*) FROM messaging.sms_messages") == 0)
            #expect(s.sandbox.received.isEmpty)
            // The ledger kept both entries, newest first; consent is off.
            var g = Caremesh_Messaging_V1_GetSmsConsentRequest()
            g.phone = to
            let consent = try await s.client.call(MessagingMethods.getSmsConsent, request: g, options: s.admin.auth)
            #expect(!consent.consentGiven)
            #expect(consent.history.map(\.optedIn) == [false, true])
            #expect(consent.current.method == .verbal)
            // Each entry announced, ids only.
            #expect(try await s.count("SELECT count(*) FROM messaging.outbox WHERE type = 'caremesh.messaging.v1.SmsConsentChanged'") == 2)
            // The ledger cannot be rewritten.
            await #expect(throws: (any Error).self) { _ = try await s.db.sql("UPDATE messaging.sms_consent SET consent_given = true") }
        }
    }

    /// The send reads consent under the number's lock with a fresh snapshot: an opt-out
    /// committed while the send waited for that lock refuses it.
    @Test func anOptOutCommittedWhileASendWaitsRefusesIt() async throws {
        try await withStack { s in
            let to = Self.phone()
            try await s.consent(to, true)
            try await Self.optOutWhileASendWaits(s, to)
        }
    }

    static func optOutWhileASendWaits(_ s: Stack, _ to: String) async throws {
        let logger = TestDatabase.logger
        try await Store.withSingleConnection(s.db.url("messaging"), logger: logger) { c in
            // A consent change in progress: the number's lock held exclusively, the opt-out written.
            try await c.query("BEGIN", logger: logger)
            try await c.query("SELECT pg_advisory_xact_lock(\(advisoryLockKey("messaging.consent:" + to)))", logger: logger)
            try await c.query("""
                INSERT INTO sms_consent (phone_number, consent_given, consent_method, evidence, created_by)
                VALUES (\(to), false, 'verbal', 'test', 'test')
                """, logger: logger)
            let send = Task { await statusCode { _ = try await s.send(Self.text(to, "hello")) } }
            // Until the send waits for the lock.
            _ = try await TestStack.eventually(timeout: .seconds(10)) {
                let waiting = try await s.count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                if waiting == 0 { throw RPCError(.unavailable, "the send is not waiting yet") }
            }
            try await c.query("COMMIT", logger: logger)
            #expect(await send.value == .failedPrecondition)
        }
        #expect(try await s.count("SELECT count(*) FROM messaging.sms_messages WHERE phone_number = \(to)") == 0)
    }

    @Test func aTemplateIsRenderedSentAndRecorded() async throws {
        try await withStack { s in
            let to = Self.phone()
            try await s.consent(to, true)
            // A missing variable names itself, and nothing is written.
            var partial = Self.reminderValues
            partial["due_date"] = nil
            #expect(await fieldViolations { _ = try await s.send(Self.reminder(to, variables: partial)) } == ["variables"])
            #expect(try await s.count("SELECT count(*) FROM messaging.sms_messages") == 0)

            let sent = try await s.send(Self.reminder(to, language: "fr", variables: Self.reminderValues))
            #expect(sent.created)
            #expect(sent.message.status == .pending)
            #expect(sent.message.language == "fr")
            #expect(sent.message.body.hasPrefix("Rappel : Ana a rendez-vous à Clinic 4 le 2026-12-01 à 09:30."))
            let done = try await s.until(sent.message.id, is: .delivered)
            #expect(done.provider == "twilio")
            #expect(done.providerMessageID.hasPrefix("SM"))
            #expect(done.senderAddress == "+15005550006")
            #expect(s.sandbox.received.map(\.body) == [sent.message.body])
            #expect(s.sandbox.received.map(\.to) == [to])
            // A language without its own template falls back to English.
            let german = try await s.send(Self.reminder(to, language: "de", variables: Self.reminderValues))
            #expect(german.message.language == "en")
            #expect(german.message.body.hasPrefix("Reminder: Ana has an appointment at Clinic 4 on 2026-12-01 at 09:30."))
        }
    }

    @Test func aClientCorrelatorMakesTheSendIdempotent() async throws {
        try await withStack { s in
            let to = Self.phone()
            try await s.consent(to, true)
            let first = try await s.send(Self.text(to, "Your results are ready.", correlator: "appt-42-result"))
            let again = try await s.send(Self.text(to, "Your results are ready.", correlator: "appt-42-result"))
            #expect(first.created && !again.created)
            #expect(first.message.id == again.message.id)
            // The same key for another message is refused.
            #expect(await statusCode { _ = try await s.send(Self.text(to, "Something else", correlator: "appt-42-result")) } == .alreadyExists)
            try await s.until(first.message.id, is: .delivered)
            #expect(try await s.count("SELECT count(*) FROM messaging.sms_messages") == 1)
            #expect(s.sandbox.received.count == 1)
        }
    }

    /// A sender that died between Twilio's acceptance and its record of it (Twilio's Messages
    /// API has no idempotency key): the message's status callback names it (`?m=` in the
    /// callback URL), so the callback records it and it does not go out again when the dead
    /// sender's lease runs out. Without a callback it does go out again: at least once, never lost.
    @Test func aSendWhoseAcceptanceWasNotRecordedIsReconciledByItsCallback() async throws {
        try await withStack { s in
            let c = s.sandbox.configuration
            let base = "http://127.0.0.1:\(await s.sandbox.port())"
            for callback in [true, false] {
                let to = Self.phone()
                try await s.consent(to, true)
                let body = "lost record \(callback)"
                // Claimed by a sender (leased for 3 s), handed to Twilio, then that sender died.
                let id = try await s.db.sql("""
                    INSERT INTO messaging.sms_messages (phone_number, message_content, message_type, encoding, segments,
                        client_correlator, sender_address, status, next_attempt_at, lease_until, created_by)
                    VALUES (\(to), \(body), 'custom', 'GSM-7', 1, \("lost-\(callback)"), 'CareMesh', 'pending',
                        now(), now() + interval '3 seconds', 'test')
                    RETURNING id::text
                    """).first!.decode(String.self)
                let twilio = TwilioSmsProvider(baseURL: base, accountSID: c.twilioAccountSID, authToken: c.twilioAuthToken,
                                               from: "+15005550006", statusCallback: callback ? "\(s.edgeURL)/webhooks/sms/twilio" : nil)
                let accepted = try await twilio.send(OutboundSms(id: UUID(uuidString: id)!, to: to, body: body, clientCorrelator: ""),
                                                     timeout: .seconds(5))
                if callback {
                    let m = try await s.until(id, is: .delivered)
                    #expect(m.providerMessageID == accepted.providerMessageID && m.provider == "twilio")
                }
                // The lease runs out; a later send's delivery means the sender has claimed since.
                try await Task.sleep(for: .seconds(3.5))
                let later = try await s.send(Self.text(to, "later \(callback)"))
                try await s.until(later.message.id, is: .delivered)
                let received = s.sandbox.received.filter { $0.to == to }.map(\.body)
                #expect(received == (callback ? [body, "later \(callback)"] : [body, body, "later \(callback)"]) ||
                        received == (callback ? [body, "later \(callback)"] : [body, "later \(callback)", body]))
                if !callback { try await s.until(id, is: .delivered) }
            }
        }
    }

    @Test func segmentsAreCountedByEncoding() async throws {
        try await withStack { s in
            let to = Self.phone()
            try await s.consent(to, true)
            func sent(_ body: String) async throws -> Caremesh_Messaging_V1_SmsMessage { try await s.send(Self.text(to, body)).message }
            let plain = try await sent(String(repeating: "a", count: 160))
            #expect((plain.encoding, plain.segments) == (.gsm7, 1))
            let long = try await sent(String(repeating: "a", count: 161))
            #expect((long.encoding, long.segments) == (.gsm7, 2))
            // "€" is in GSM-7's extension table: two septets each, 80 of them fill one message.
            let euros = try await sent(String(repeating: "€", count: 80))
            #expect((euros.encoding, euros.segments) == (.gsm7, 1))
            let moreEuros = try await sent(String(repeating: "€", count: 81))
            #expect((moreEuros.encoding, moreEuros.segments) == (.gsm7, 2))
            let unicode = try await sent("Rendez-vous confirmé ✅ " + String(repeating: "x", count: 50))
            #expect((unicode.encoding, unicode.segments) == (.ucs2, 2))
        }
    }

    @Test func retryableErrorsFailOverAndRetryThenFail() async throws {
        try await withStack { s in
            let to = Self.phone()
            try await s.consent(to, true)
            // Twilio answers 503 once: Orange (second in order) takes the message at once.
            s.sandbox.apply(.init(api: "twilio", sendErrors: [503]))
            let failedOver = try await s.send(Self.text(to, "first"))
            let m = try await s.until(failedOver.message.id, is: .delivered)
            #expect(m.provider == "orange")
            #expect(m.retryCount == 0)
            #expect(m.senderAddress == "+33700000000")
            #expect(s.sandbox.received.last?.clientCorrelator == failedOver.message.clientCorrelator)

            // Both fail twice, then Twilio recovers: two retries, sent by Twilio.
            s.sandbox.apply(.init(api: "twilio", sendErrors: [500, 502]))
            s.sandbox.apply(.init(api: "orange", sendErrors: [503, 429]))
            let retried = try await s.send(Self.text(to, "second"))
            let r = try await s.until(retried.message.id, is: .delivered)
            #expect(r.provider == "twilio")
            #expect(r.retryCount == 2)

            // Failing for good: the first try and three retries at each provider, then failed.
            s.sandbox.reset()
            s.sandbox.apply(.init(sendErrors: Array(repeating: 503, count: 10)))
            let doomed = try await s.send(Self.text(to, "third"))
            let f = try await s.until(doomed.message.id, is: .failed)
            #expect(f.retryCount == 3)
            #expect(f.errorMessage.contains("503"))
            #expect(s.sandbox.attempts("twilio") == 4)
            #expect(s.sandbox.attempts("orange") == 4)
            #expect(f.hasFailedAt)
        }
    }

    @Test func aPermanentRefusalFailsAtOnce() async throws {
        try await withStack { s in
            let to = Self.phone()
            try await s.consent(to, true)
            s.sandbox.apply(.init(api: "twilio", sendErrors: [400]))
            let m = try await s.send(Self.text(to, "hello"))
            let f = try await s.until(m.message.id, is: .failed)
            #expect(f.retryCount == 0)
            // Not failed over: another provider would refuse it too.
            #expect(s.sandbox.attempts("orange") == 0)
        }
    }

    @Test func scheduledMessagesWaitAndCanBeCancelled() async throws {
        try await withStack { s in
            let to = Self.phone()
            try await s.consent(to, true)
            var later = Self.text(to, "in a moment")
            later.scheduledAt = Google_Protobuf_Timestamp(date: Date().addingTimeInterval(1.5))
            let m = try await s.send(later)
            #expect(m.message.status == .scheduled)
            var never = Self.text(to, "never")
            never.scheduledAt = Google_Protobuf_Timestamp(date: Date().addingTimeInterval(3_600))
            let n = try await s.send(never)
            var cancel = Caremesh_Messaging_V1_CancelSmsRequest()
            cancel.id = n.message.id
            let cancelled = try await s.client.call(MessagingMethods.cancelSms, request: cancel, options: s.admin.auth)
            #expect(cancelled.message.status == .cancelled)
            #expect(s.sandbox.received.isEmpty)
            let sent = try await s.until(m.message.id, is: .delivered)
            #expect(sent.sentAt.date >= m.message.scheduledAt.date)
            // A message that went out cannot be cancelled.
            cancel.id = m.message.id
            #expect(await statusCode { _ = try await s.client.call(MessagingMethods.cancelSms, request: cancel, options: s.admin.auth) }
                        == .failedPrecondition)
            #expect(s.sandbox.received.map(\.body) == ["in a moment"])
        }
    }

    @Test func consentWithdrawnWhileScheduledCancelsTheMessage() async throws {
        try await withStack { s in
            let to = Self.phone()
            try await s.consent(to, true)
            var later = Self.text(to, "soon")
            later.scheduledAt = Google_Protobuf_Timestamp(date: Date().addingTimeInterval(1))
            let m = try await s.send(later)
            try await s.consent(to, false)
            let c = try await s.until(m.message.id, is: .cancelled)
            #expect(c.errorMessage.contains("consent"))
            #expect(s.sandbox.received.isEmpty)
        }
    }

    @Test func badInputAndAuthorization() async throws {
        try await withStack { s in
            let to = Self.phone()
            try await s.consent(to, true)
            #expect(await fieldViolations { _ = try await s.send(Self.text("0612345678", "x")) } == ["to"])
            #expect(await fieldViolations { _ = try await s.send(Self.text(to, "")) } == ["text"])
            #expect(await fieldViolations { _ = try await s.send(Self.text(to, "x", correlator: "has space")) } == ["client_correlator"])
            var both = Self.reminder(to, variables: Self.reminderValues)
            both.text = "also text"
            #expect(await fieldViolations { _ = try await s.send(both) } == ["text"])
            var badLanguage = Self.reminder(to, language: "french", variables: Self.reminderValues)
            badLanguage.language = "french"
            #expect(await fieldViolations { _ = try await s.send(badLanguage) } == ["language"])
            let user = try await TestAccount.make(s.client, s.db, role: "user")
            #expect(await statusCode { _ = try await s.send(Self.text(to, "x"), as: user) } == .permissionDenied)
            var consent = Caremesh_Messaging_V1_RecordSmsConsentRequest()
            consent.phone = to
            consent.optedIn = false
            consent.method = .admin
            #expect(await statusCode { _ = try await s.client.call(MessagingMethods.recordSmsConsent, request: consent, options: user.auth) }
                        == .permissionDenied)
            #expect(try await s.count("SELECT count(*) FROM messaging.sms_messages") == 0)
        }
    }

    @Test func templatesAreSeededAndAdminsReplaceThem() async throws {
        try await withStack { s in
            let all = try await s.client.call(MessagingMethods.listSmsTemplates, request: .init(), options: s.admin.auth).templates
            #expect(all.count == DefaultSmsTemplates.all.count)
            let english = all.first { $0.templateType == .sevenDayReminder && $0.language == "en" }
            #expect(english?.characterCount == 122)
            #expect(english?.name == "7_day_reminder_en")
            var put = Caremesh_Messaging_V1_PutSmsTemplateRequest()
            put.templateType = .overdueReminder
            put.language = "de"
            put.text = "Überfällig: {patient_name}, bitte kommen Sie zu {facility_name}."
            put.isActive = true
            let saved = try await s.client.call(MessagingMethods.putSmsTemplate, request: put, options: s.admin.auth).template
            #expect(saved.characterCount == UInt32(put.text.count))
            #expect(saved.encoding == .gsm7)  // Ü and ä are in GSM-7's basic table
            let coordinator = try await TestAccount.make(s.client, s.db, role: "coordinator")
            #expect(await statusCode { _ = try await s.client.call(MessagingMethods.putSmsTemplate, request: put, options: coordinator.auth) }
                        == .permissionDenied)
        }
    }
}

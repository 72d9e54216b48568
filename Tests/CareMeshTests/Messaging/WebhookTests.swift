import AsyncHTTPClient
import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import CareMeshTesting
import Foundation
import MessagingService
import NIOCore
import PostgresNIO
import ProviderSandbox
import SwiftProtobuf
import Testing

/// Provider callbacks and inbound texts through the router's HTTP edge, and the edge's JSON
/// RPC: signed by the sandbox as Twilio signs, applied once, never backwards, logged.
extension SmsTests {
    /// A POST to the edge; the status and body.
    static func post(_ url: String, _ body: String, headers: [(String, String)] = []) async throws -> (Int, String) {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), String(buffer: bytes))
    }

    static func get(_ url: String) async throws -> (Int, String) {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(10))
        return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 20)))
    }

    /// The message's SMS events, as (status, previous status), in order.
    func statusEvents(_ s: Stack, _ id: String) async throws -> [(Caremesh_Messaging_V1_SmsStatus, Caremesh_Messaging_V1_SmsStatus)] {
        try await s.db.sql("""
            SELECT payload FROM messaging.outbox WHERE key = \(id) AND type = \(Caremesh_Messaging_V1_SmsStatusChanged.protoMessageName) ORDER BY seq
            """).map {
            let e = try Caremesh_Messaging_V1_SmsStatusChanged(serializedBytes: Data(try $0.decode(ByteBuffer.self).readableBytesView))
            return (e.status, e.previousStatus)
        }
    }

    @Test func callbacksMoveAMessageToDeliveredOnceAndNeverBack() async throws {
        try await withStack { s in
            let to = Self.phone()
            try await s.consent(to, true)
            let sent = try await s.send(Self.text(to, "Your appointment is confirmed."))
            let delivered = try await s.until(sent.message.id, is: .delivered)
            #expect(delivered.deliveryStatus == "delivered")
            #expect(delivered.hasDeliveredAt && delivered.deliveredAt.date >= delivered.sentAt.date)
            #expect(try await statusEvents(s, sent.message.id).map(\.0) == [.sent, .delivered])

            // Twilio's callback again (a retry), and a late failure: logged, not applied.
            let url = "\(s.edgeURL)/webhooks/sms/twilio?m=\(sent.message.id)"
            let form: [(name: String, value: String)] = [("MessageSid", delivered.providerMessageID), ("AccountSid", s.sandbox.configuration.twilioAccountSID),
                                                         ("From", "+15005550006"), ("To", to)]
            await s.sandbox.postTwilio(url: url, form + [("MessageStatus", "delivered")])
            await s.sandbox.postTwilio(url: url, form + [("MessageStatus", "undelivered"), ("ErrorCode", "30003")])
            // Answered once logged; applied right after, in order of arrival.
            let logs = try await TestStack.eventually(timeout: .seconds(10)) {
                let logs = try await s.db.sql("""
                    SELECT duplicate, processed, webhook_type, request_ip FROM messaging.sms_webhook_logs
                    WHERE request_url LIKE \("%m=\(sent.message.id)") ORDER BY received_seq
                    """).map { try $0.decode((Bool, Bool, String, String?).self) }
                guard logs.count == 4, logs.allSatisfy(\.1) else { throw RPCError(.notFound, "not all applied yet") }
                return logs
            }
            let after = try await s.get(sent.message.id)
            #expect(after.status == .delivered)
            #expect(try await statusEvents(s, sent.message.id).count == 2)
            // sent, delivered, the repeated delivered (a duplicate), the late failure (news, but backwards: ignored).
            #expect(logs.map(\.0) == [false, false, true, false])
            #expect(logs.allSatisfy { $0.2 == "delivery_status" && $0.3 == "127.0.0.1" })
            #expect(try await s.count("""
                SELECT count(*) FROM messaging.sms_webhook_logs WHERE related_sms_message_id = \(UUID(uuidString: sent.message.id)!)
                """) == 4)
            // Admins list the log without its PHI.
            var list = Caremesh_Messaging_V1_ListWebhookLogsRequest()
            list.relatedSmsMessageID = sent.message.id
            let listed = try await s.client.call(MessagingMethods.listWebhookLogs, request: list, options: s.admin.auth).logs
            #expect(listed.count == 4)
            #expect(listed.allSatisfy { $0.responseStatus == 200 && $0.provider == "twilio" })
        }
    }

    @Test func aCallbackNamingOnlyTheProvidersIDIsApplied() async throws {
        try await withStack { s in
            // A status callback configured at the provider (no `m=` of ours in its URL) names
            // the message by its provider id alone. The sandbox's own final callback waits.
            let to = Self.phone()
            try await s.consent(to, true)
            s.sandbox.apply(.init(api: "twilio", to: to, outcome: .delivered, delayMs: 60_000))
            let sent = try await s.send(Self.text(to, "hello"))
            let m = try await s.until(sent.message.id, is: .sent)
            let url = "\(s.edgeURL)/webhooks/sms/twilio"
            await s.sandbox.postTwilio(url: url, [("MessageSid", m.providerMessageID), ("MessageStatus", "delivered"),
                                                  ("AccountSid", s.sandbox.configuration.twilioAccountSID)])
            let delivered = try await s.until(sent.message.id, is: .delivered)
            #expect(delivered.deliveryStatus == "delivered")
            #expect(try await statusEvents(s, sent.message.id).map(\.0) == [.sent, .delivered])
            #expect(try await s.count("""
                SELECT count(*) FROM messaging.sms_webhook_logs WHERE related_sms_message_id = \(UUID(uuidString: sent.message.id)!)
                  AND request_url NOT LIKE '%m=%' AND processed AND NOT duplicate
                """) == 1)
        }
    }

    @Test func orangeReceiptsAndUndeliveredOutcomes() async throws {
        try await withStack { s in
            let to = Self.phone(), other = Self.phone()
            try await s.consent(to, true)
            try await s.consent(other, true)
            // Twilio is down: Orange takes it, and its receipt names the message by callbackData.
            s.sandbox.apply(.init(api: "twilio", sendErrors: [503]))
            let viaOrange = try await s.send(Self.text(to, "via Orange"))
            let d = try await s.until(viaOrange.message.id, is: .delivered)
            #expect(d.provider == "orange")
            #expect(d.deliveryStatus == "DeliveredToTerminal")
            // An undelivered outcome fails the message with the provider's error code.
            s.sandbox.apply(.init(api: "twilio", to: other, outcome: .undelivered))
            let lost = try await s.send(Self.text(other, "lost"))
            let f = try await s.until(lost.message.id, is: .failed)
            #expect(f.errorMessage == "twilio error 30003")
            #expect(try await statusEvents(s, lost.message.id).map(\.0) == [.sent, .failed])
        }
    }

    @Test func badSignaturesAreRefusedAndLogged() async throws {
        try await withStack { s in
            let to = Self.phone()
            try await s.consent(to, true)
            let sent = try await s.send(Self.text(to, "hello"))
            let m = try await s.until(sent.message.id, is: .delivered)
            let url = "\(s.edgeURL)/webhooks/sms/twilio?m=\(sent.message.id)"
            let form = "MessageSid=\(m.providerMessageID)&MessageStatus=failed"
            let forged = TwilioSignature.compute(authToken: "not the token", url: url,
                                                 params: [("MessageSid", m.providerMessageID), ("MessageStatus", "failed")])
            let (status, _) = try await Self.post(url, form, headers: [("Content-Type", "application/x-www-form-urlencoded"),
                                                                       ("X-Twilio-Signature", forged)])
            #expect(status == 403)
            let (unsigned, _) = try await Self.post(url, form, headers: [("Content-Type", "application/x-www-form-urlencoded")])
            #expect(unsigned == 403)
            // Orange's receipts need the key in the URL.
            let receipt = #"{"deliveryInfoNotification":{"callbackData":"\#(sent.message.id)","deliveryInfo":{"address":"tel:\#(to)","deliveryStatus":"DeliveryImpossible"}}}"#
            let (orange, _) = try await Self.post("\(s.edgeURL)/webhooks/sms/orange?key=wrong", receipt, headers: [("Content-Type", "application/json")])
            #expect(orange == 403)
            let (unknown, _) = try await Self.post("\(s.edgeURL)/webhooks/sms/acme", "x")
            #expect(unknown == 404)
            #expect(try await s.get(sent.message.id).status == .delivered)
            let refused = try await s.db.sql("""
                SELECT response_status, processing_error, processed FROM messaging.sms_webhook_logs WHERE response_status <> 200 ORDER BY created_at
                """).map { try $0.decode((Int32, String?, Bool).self) }
            #expect(refused.map(\.0) == [403, 403, 403, 404])
            #expect(refused.allSatisfy { !$0.2 && $0.1 != nil })
        }
    }

    @Test func webhookLogsAreHiddenFromASessionWithoutAnActor() async throws {
        try await withStack { s in
            let to = Self.phone()
            try await s.consent(to, true)
            let sent = try await s.send(Self.text(to, "hello"))
            try await s.until(sent.message.id, is: .delivered)
            #expect(try await s.count("SELECT count(*) FROM messaging.sms_webhook_logs") == 2)
            // The service's own role, without an acting user set: row-level security shows nothing.
            let seen = try await Store.withSingleConnection(s.db.url("messaging"), logger: TestDatabase.logger) { c in
                try await c.query("SELECT count(*) FROM sms_webhook_logs", logger: TestDatabase.logger).first(Int64.self)
            }
            #expect(seen == 0)
        }
    }

    /// Seed 004's retention policy, with batches of one row so the job runs again at once
    /// while a batch was full.
    @Test func webhookLogsPastTheRetentionAreDeletedButNotOneStillWaiting() async throws {
        try await withStack(["MESSAGING_RETENTION_BATCH": "1"]) { s in
            let kind = "webhook-log-retention"
            func runs() async throws -> Int64 { try await s.count("SELECT count(*) FROM messaging.jobs WHERE kind = \(kind) AND state = 'done'") }
            // Armed at start, it ran once with nothing to delete.
            _ = try await TestStack.eventually(timeout: .seconds(10)) {
                if try await runs() < 1 { throw RPCError(.unavailable, "not run yet") }
            }
            let to = Self.phone()
            try await s.consent(to, true)
            let sent = try await s.send(Self.text(to, "hello"))
            let m = try await s.until(sent.message.id, is: .delivered)
            let url = "\(s.edgeURL)/webhooks/sms/twilio"
            let (refused, _) = try await Self.post(url, "MessageSid=SMforged0001&MessageStatus=failed",
                                                   headers: [("Content-Type", "application/x-www-form-urlencoded"), ("X-Twilio-Signature", "forged")])
            #expect(refused == 403)
            // One still waiting, its next try an hour away (as the processor leaves a failed one).
            _ = try await s.db.sql("""
                INSERT INTO messaging.sms_webhook_logs (kind, provider, webhook_type, request_url, request_headers, request_body, raw_body,
                                                        attempts, retry_at)
                VALUES ('sms', 'twilio', 'delivery_status', \(url), '{}', '{}', '\\x', 1, now() + interval '1 hour')
                """)
            // All of it 91 days old: the two callbacks, the refused request, the waiting one,
            // and the two idempotency records.
            #expect(try await s.count("SELECT count(*) FROM messaging.sms_webhook_logs") == 4)
            #expect(try await s.count("SELECT count(*) FROM messaging.webhook_applied") == 2)
            _ = try await s.db.sql("UPDATE messaging.sms_webhook_logs SET created_at = now() - interval '91 days'")
            _ = try await s.db.sql("UPDATE messaging.webhook_applied SET applied_at = now() - interval '91 days'")
            // Then a fresh callback (its record is fresh too).
            await s.sandbox.postTwilio(url: url, [("MessageSid", "SMfresh0001"), ("MessageStatus", "delivered"),
                                                  ("AccountSid", s.sandbox.configuration.twilioAccountSID), ("From", "+15005550006"), ("To", to)])
            _ = try await TestStack.eventually(timeout: .seconds(10)) {
                if try await s.count("SELECT count(*) FROM messaging.webhook_applied WHERE applied_at > now() - interval '1 day'") != 1 {
                    throw RPCError(.unavailable, "not applied yet")
                }
            }
            // The next daily run, now: 3 old log rows and 2 records go one per run (3 runs with
            // a full batch), then a run that finds nothing and arms the next in a day.
            _ = try await s.db.sql("UPDATE messaging.jobs SET run_at = now() WHERE kind = \(kind) AND state = 'scheduled'")
            _ = try await TestStack.eventually(timeout: .seconds(20)) {
                if try await runs() < 5 { throw RPCError(.unavailable, "still running") }
            }
            let left = try await s.db.sql("""
                SELECT processed, attempts, created_at < now() - interval '90 days' FROM messaging.sms_webhook_logs ORDER BY received_seq
                """).map { try $0.decode((Bool, Int32, Bool).self) }
            #expect(left.count == 2)
            #expect(left.first.map { !$0.0 && $0.1 == 1 && $0.2 } == true)
            #expect(left.last.map { $0.0 && !$0.2 } == true)
            #expect(try await s.count("SELECT count(*) FROM messaging.webhook_applied WHERE applied_at < now() - interval '90 days'") == 0)
            #expect(try await s.count("SELECT count(*) FROM messaging.webhook_applied") == 1)
            #expect(try await runs() == 5)
            #expect(try await s.count("""
                SELECT count(*) FROM messaging.jobs WHERE kind = \(kind) AND state = 'scheduled' AND run_at > now() + interval '23 hours'
                """) == 1)
            // The message itself is kept.
            #expect(try await s.get(m.id).status == .delivered)
        }
    }

    /// Also: a webhook is applied on arrival, in the transaction that logs it, while nothing
    /// logged earlier waits; while one does, later ones wait behind it (in order of arrival).
    @Test func aWebhookIsAnsweredOnceLoggedAndOneThatCannotBeAppliedHoldsNoOtherBack() async throws {
        try await withStack { s in
            let to = Self.phone()
            try await s.consent(to, true)
            let sent = try await s.send(Self.text(to, "hello"))
            let m = try await s.until(sent.message.id, is: .delivered)
            // A fault in the database for one callback only (a trigger the test adds as the
            // superuser): applying it fails every time.
            _ = try await s.db.sql("""
                CREATE FUNCTION messaging.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.idempotency_key LIKE '%SMpoison%' THEN RAISE EXCEPTION 'poisoned'; END IF;
                    RETURN NEW;
                END $$
                """)
            _ = try await s.db.sql("""
                CREATE TRIGGER refuse_poison BEFORE INSERT ON messaging.webhook_applied FOR EACH ROW EXECUTE FUNCTION messaging.refuse_poison()
                """)
            // How each was applied: on arrival its log row is not yet written when its key is
            // claimed (same transaction); through the processor it was logged before.
            _ = try await s.db.sql("CREATE TABLE messaging.applied_path (seq serial, key text, queued boolean)")
            _ = try await s.db.sql("""
                CREATE FUNCTION messaging.record_path() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
                BEGIN
                    INSERT INTO messaging.applied_path (key, queued)
                    VALUES (NEW.idempotency_key, EXISTS (SELECT 1 FROM messaging.sms_webhook_logs WHERE id = NEW.log_id));
                    RETURN NEW;
                END $$
                """)
            _ = try await s.db.sql("""
                CREATE TRIGGER record_path AFTER INSERT ON messaging.webhook_applied FOR EACH ROW EXECUTE FUNCTION messaging.record_path()
                """)
            func paths() async throws -> [(String, Bool)] {
                try await s.db.sql("SELECT key, queued FROM messaging.applied_path ORDER BY seq").map { try $0.decode((String, Bool).self) }
            }
            func processed(_ sid: String) async throws -> [Bool] {
                try await s.db.sql("""
                    SELECT processed FROM messaging.sms_webhook_logs WHERE request_body->>'MessageSid' = \(sid) ORDER BY received_seq
                    """).map { try $0.decode(Bool.self) }
            }
            let url = "\(s.edgeURL)/webhooks/sms/twilio"
            func callback(_ sid: String, _ status: String) -> [(name: String, value: String)] {
                [("MessageSid", sid), ("MessageStatus", status), ("AccountSid", s.sandbox.configuration.twilioAccountSID),
                 ("From", "+15005550006"), ("To", to)]
            }
            // Nothing waits: applied on arrival, so processed by the time it is answered.
            await s.sandbox.postTwilio(url: url, callback("SMearly0001", "delivered"))
            #expect(try await processed("SMearly0001") == [true])
            #expect(try await paths().map(\.1) == [false])
            // The poisoned one first, then a good one (a late status for the delivered message,
            // named by the provider's id) and a repeat of it: all answered 200 at once.
            await s.sandbox.postTwilio(url: url, callback("SMpoison0001", "delivered"))
            await s.sandbox.postTwilio(url: url, callback(m.providerMessageID, "undelivered"))
            await s.sandbox.postTwilio(url: url, callback(m.providerMessageID, "undelivered"))
            #expect(try await s.count("SELECT count(*) FROM messaging.sms_webhook_logs WHERE response_status = 200 AND request_url = \(url)") == 4)
            // The good ones are applied (the first as stale news: the message stays delivered;
            // the second as a duplicate)…
            let good = try await TestStack.eventually(timeout: .seconds(15)) {
                let rows = try await s.db.sql("""
                    SELECT duplicate, related_sms_message_id FROM messaging.sms_webhook_logs
                    WHERE processed AND request_url = \(url) AND request_body->>'MessageSid' = \(m.providerMessageID) ORDER BY received_seq
                    """).map { try $0.decode((Bool, UUID?).self) }
                guard rows.count == 2 else { throw RPCError(.notFound, "\(rows.count) applied") }
                return rows
            }
            #expect(good.map(\.0) == [false, true])
            #expect(good.first?.1 == UUID(uuidString: sent.message.id))
            // …and the poisoned one is tried 5 times, then left unprocessed with its error.
            let poisoned = try await TestStack.eventually(timeout: .seconds(30)) {
                let rows = try await s.db.sql("""
                    SELECT attempts, processing_error, processed FROM messaging.sms_webhook_logs
                    WHERE request_body->>'MessageSid' = 'SMpoison0001'
                    """).map { try $0.decode((Int32, String?, Bool).self) }
                guard let row = rows.first, row.0 == 5 else { throw RPCError(.notFound, "not given up yet") }
                return row
            }
            #expect(!poisoned.2 && poisoned.1?.hasPrefix("not applied") == true)
            #expect(try await s.get(sent.message.id).status == .delivered)
            #expect(try await s.count("SELECT count(*) FROM messaging.webhook_applied WHERE idempotency_key LIKE '%SMpoison%'") == 0)
            // The good ones waited behind the poisoned one (the processor applied them; the
            // repeat claimed no key). Once it is given up, arrivals are applied on arrival again.
            await s.sandbox.postTwilio(url: url, callback("SMlate0001", "delivered"))
            #expect(try await processed("SMlate0001") == [true])
            let applied = try await paths()
            #expect(applied.map(\.0) == ["status:SMearly0001:delivered", "status:\(m.providerMessageID):undelivered", "status:SMlate0001:delivered"])
            #expect(applied.map(\.1) == [false, true, false])
        }
    }

    @Test func stopIsConfirmedThenBlocksAndStartReopens() async throws {
        try await withStack { s in
            let to = Self.phone()
            try await s.consent(to, true)
            let url = "\(s.edgeURL)/webhooks/sms/twilio"
            func inbound(_ body: String) async {
                await s.sandbox.postTwilio(url: url, [("MessageSid", "SM" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()),
                                                      ("AccountSid", s.sandbox.configuration.twilioAccountSID), ("From", to),
                                                      ("To", "+15005550006"), ("Body", body), ("NumMedia", "0")])
            }
            await inbound("Arrêt")
            // The confirmation (in French: the keyword was French) goes out although the number is now blocked.
            let confirmation = try await TestStack.eventually(timeout: .seconds(10)) {
                guard let m = s.sandbox.received.first(where: { $0.to == to }) else { throw RPCError(.notFound, "no confirmation yet") }
                return m
            }
            #expect(confirmation.body == SmsKeyword.optOut.reply(language: "fr"))
            #expect(await statusCode { _ = try await s.send(Self.text(to, "a reminder")) } == .failedPrecondition)
            var g = Caremesh_Messaging_V1_GetSmsConsentRequest()
            g.phone = to
            let consent = try await s.client.call(MessagingMethods.getSmsConsent, request: g, options: s.admin.auth)
            #expect(!consent.consentGiven)
            #expect(consent.current.method == .smsReply)
            // A chatty reply is logged only; START opts back in and is confirmed.
            await inbound("thanks!")
            await inbound("start")
            _ = try await TestStack.eventually(timeout: .seconds(10)) {
                guard s.sandbox.received.filter({ $0.to == to }).count == 2 else { throw RPCError(.notFound, "no START confirmation yet") }
            }
            #expect(s.sandbox.received.last { $0.to == to }?.body == SmsKeyword.optIn.reply(language: "en"))
            _ = try await s.send(Self.text(to, "a reminder"))
            #expect(try await s.count("SELECT count(*) FROM messaging.sms_webhook_logs WHERE webhook_type = 'inbound_message'") == 3)
            // The staff's opt-in, STOP and START, each announced.
            #expect(try await s.count("SELECT count(*) FROM messaging.outbox WHERE type = 'caremesh.messaging.v1.SmsConsentChanged'") == 3)
        }
    }

    @Test func theEdgeSpeaksJSONWithHTTPStatuses() async throws {
        try await withStack { s in
            let token = s.admin.auth.metadata["authorization"]!
            let json = [("Content-Type", "application/json"), ("Authorization", token)]
            let (ok, body) = try await Self.post("\(s.edgeURL)/v1/messaging/GetSmsConsent", #"{"phone":"+33612345678"}"#, headers: json)
            #expect(ok == 200)
            #expect(body.contains("\"consentGiven\":false") || body == "{}")
            let (bad, error) = try await Self.post("\(s.edgeURL)/v1/messaging/GetSmsConsent", #"{"phone":"0612"}"#, headers: json)
            #expect(bad == 400)
            #expect(error.contains(#""code":"INVALID_ARGUMENT""#) && error.contains("phone"))
            let (garbage, _) = try await Self.post("\(s.edgeURL)/v1/messaging/GetSmsConsent", "{not json", headers: json)
            #expect(garbage == 400)
            let (anonymous, _) = try await Self.post("\(s.edgeURL)/v1/messaging/GetSmsConsent", "{}")
            #expect(anonymous == 401)
            let (missing, _) = try await Self.post("\(s.edgeURL)/v1/messaging/NoSuchMethod", "{}", headers: json)
            #expect(missing == 501)
            let (notFound, nf) = try await Self.post("\(s.edgeURL)/v1/messaging/GetSms", #"{"id":"\#(UUID())"}"#, headers: json)
            #expect(notFound == 404 && nf.contains("NOT_FOUND"))
            #expect(try await Self.get("\(s.edgeURL)/healthz").0 == 200)
            let (metricsStatus, metrics) = try await Self.get("\(s.edgeURL)/metrics")
            #expect(metricsStatus == 200)
            #expect(metrics.contains("caremesh_http_requests_total{route=\"rpc\",status=\"400\"} 2"))
            #expect(metrics.contains("caremesh_router_requests_total"))
        }
    }
}

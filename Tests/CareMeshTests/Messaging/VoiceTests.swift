import AlertsService
import CareMeshContracts
import CareMeshRPC
import CareMeshRouter
import CareMeshStore
import CareMeshTesting
import Foundation
import IdentityService
@testable import MessagingService
import NIOCore
import ProviderSandbox
import Testing

/// Care-alert calls end to end: alerts asks (`CareAlertRaised`), messaging places the call at the
/// sandbox (Twilio's Calls API), the sandbox's signed status callbacks come back through the
/// router's HTTP edge, and messaging's `CallStatusChanged` moves the alert.
extension AlertsTests {
    /// The alerts stack with the sandbox and the edge, messaging calling through Twilio's API.
    func withVoiceStack(_ body: @Sendable (Stack, ProviderSandbox) async throws -> Void) async throws {
        try await withProviderEdge { router, sandbox, _, providers in
            let db = try await TestDatabase.fresh("voice")
            let env = db.environment.merging(providers) { $1 }.merging(["ALERTS_RING_TIMEOUT_S": "30"]) { $1 }
            let identity = try await IdentityService.make(environment: env, logger: logger)
            let messaging = try await MessagingService.make(environment: env, logger: logger)
            let alerts = try await AlertsService.make(environment: env, logger: logger)
            let client = TestStack.client(router, timeout: .seconds(10))
            defer { client.close() }
            try await TestStack.withHosts([identity, messaging, alerts]) {
                for service in ["identity", "messaging", "alerts"] { try await TestStack.waitUntilServing(client, service) }
                _ = try await TestStack.eventually(timeout: .seconds(10)) {
                    if router.signingKeyIDs.isEmpty { throw RPCError(.unavailable, "no keys yet") }
                }
                try await body(Stack(router: router, client: client, db: db, environment: env, messaging: messaging), sandbox)
            }
        }
    }

    /// A care alert raised by a caregiver for a client whose zone's coordinator has a backup,
    /// each phone scripted at the sandbox. Returns an admin, the two coordinators and the alert.
    func raiseWithTwoPhones(_ s: Stack, _ sandbox: ProviderSandbox, primary first: ProviderSandbox.VoiceOutcome,
                            backup second: ProviderSandbox.VoiceOutcome, backupDelayMs: Int? = nil) async throws
        -> (Account, Caremesh_Alerts_V1_Coordinator, Caremesh_Alerts_V1_Coordinator, Caremesh_Alerts_V1_RaiseCareAlertResponse)
    {
        let admin = try await account(s, "admin")
        let caregiver = try await account(s, "caregiver")
        let zone = UUID()
        let (_, backup) = try await coordinator(s, admin: admin, zone: nil)
        let (_, primary) = try await coordinator(s, admin: admin, zone: zone, backup: backup.id)
        sandbox.apply(.init(api: "twilio", to: primary.phoneNumber, voice: first))
        sandbox.apply(.init(api: "twilio", to: backup.phoneNumber, voice: second, delayMs: backupDelayMs))
        let raised = try await raise(s, caregiver, client: try await client(s, staff: caregiver, zone: zone))
        #expect(raised.alert.coordinatorID == primary.id)
        return (admin, primary, backup, raised)
    }

    @Test("voice: the coordinator's call is placed, no answer escalates to the backup, whose answer stops the alert")
    func voiceEndToEnd() async throws {
        try await withVoiceStack { s, sandbox in
            let (admin, primary, backup, raised) = try await raiseWithTwoPhones(s, sandbox, primary: .noAnswer, backup: .answered)
            let answered = try await s.until(raised.alert.id, is: .answered, as: admin, timeout: .seconds(20))
            #expect(answered.alert.escalationLevel == .backup)
            // Both calls went out, in order, playing the alert's message.
            #expect(sandbox.calls.map(\.to) == [primary.phoneNumber, backup.phoneNumber])
            #expect(sandbox.calls.allSatisfy { $0.twiml.contains("<Play>https://voice.example.org/messages/") && $0.timeout == 30 })
            // Each asks for the key that accepts, posted back to the voice webhook for that call.
            #expect(sandbox.calls.allSatisfy { ProviderSandbox.gatherAction($0.twiml)?.contains("/webhooks/voice/twilio?c=") == true })
            // The answered call ends (completed) after the alert was answered (the key pressed).
            let calls = try await TestStack.eventually(timeout: .seconds(10)) {
                let rows = try await s.sql("SELECT phone_number, status FROM messaging.voice_calls ORDER BY created_at")
                    .map { try $0.decode((String, String).self) }
                guard rows.map(\.1) == ["no_answer", "completed"] else { throw RPCError(.unavailable, "calls are \(rows.map(\.1))") }
                return rows
            }
            #expect(calls.map(\.0) == [primary.phoneNumber, backup.phoneNumber])
            // Messaging announced each status, keyed by alerts' own call ids.
            let statuses = try await s.sql("""
                SELECT payload FROM messaging.outbox WHERE type = \(Caremesh_Messaging_V1_CallStatusChanged.protoMessageName) ORDER BY seq
                """).map { try Caremesh_Messaging_V1_CallStatusChanged(serializedBytes: Data(try $0.decode(ByteBuffer.self).readableBytesView)) }
            #expect(Set(statuses.map(\.callID)) == Set(answered.calls.map(\.id)))
            #expect(statuses.allSatisfy { $0.reference == "care_alert:\(raised.alert.id)" && $0.provider == "twilio" })
            #expect(statuses.filter { $0.status == .noAnswer }.count == 1)
            #expect(statuses.map(\.status).suffix(3) == [.inProgress, .accepted, .completed])
            #expect(answered.calls.map(\.status) == [.noAnswer, .accepted])
            #expect(statuses.last?.status == .completed && statuses.last?.durationS == 12)
        }
    }

    @Test("voice: an alert raised without a recording rings the coordinator with a spoken message that never names the client")
    func voiceWithoutRecording() async throws {
        try await withVoiceStack { s, sandbox in
            let admin = try await account(s, "admin")
            let caregiver = try await account(s, "caregiver")
            let zone = UUID()
            let (_, primary) = try await coordinator(s, admin: admin, zone: zone)
            sandbox.apply(.init(api: "twilio", to: primary.phoneNumber, voice: .answered))
            let client = try await client(s, staff: caregiver, zone: zone)
            var r = Caremesh_Alerts_V1_RaiseCareAlertRequest()
            r.clientID = client
            r.alertType = .medicationIssue
            let raised = try await s.client.call(AlertsMethods.raiseCareAlert, request: r, options: caregiver.auth)
            #expect(raised.alert.voiceMessageURL.isEmpty)
            // Answered, so the call went out and was taken: before, every call of such an alert
            // failed and the alert ended NO_ANSWER.
            _ = try await s.until(raised.alert.id, is: .answered, as: admin, timeout: .seconds(20))
            let call = try #require(sandbox.calls.first)
            #expect(call.to == primary.phoneNumber)
            let action = try #require(ProviderSandbox.gatherAction(call.twiml))
            let gather = "<Gather input=\"dtmf\" numDigits=\"1\" timeout=\"8\" action=\"\(action)\" method=\"POST\">"
            let say = { (text: String) in "<Say language=\"en-US\">\(text)</Say>" }
            #expect(call.twiml == "<Response>\(gather)"
                + say("This is CareMesh with a care alert: medication issue. You are the coordinator on duty for this client's zone.")
                + say(CareAlertCallScript.acceptPrompt) + "</Gather>\(gather)\(say(CareAlertCallScript.acceptPrompt))</Gather>"
                + say("No key was pressed. Goodbye.") + "<Hangup/></Response>")
            let name = try await s.sql("SELECT full_name FROM identity.patients WHERE id = \(UUID(uuidString: client)!)")[0].decode(String.self)
            #expect(!call.twiml.contains(name))
            // When the provider took it is kept (what `bench alerts` measures raise → ring to).
            #expect(try await s.count("SELECT count(*) FROM messaging.voice_calls WHERE placed_at IS NOT NULL") == 1)
        }
    }

    @Test("the spoken part of a call: escaped for TwiML, said before the recording")
    func callScriptTwiML() {
        let script = TwilioVoiceProvider.CallScript(spoken: "Tom & Jerry <said> \"hi\"", language: "fr-FR", recording: "https://x.example/a.mp3?a=1&b=2")
        #expect(TwilioVoiceProvider.twiml(script, gatherAction: "https://e.example/v?c=1&d=2")
            == "<Response><Say language=\"fr-FR\">Tom &amp; Jerry &lt;said&gt; &quot;hi&quot;</Say>"
            + "<Play>https://x.example/a.mp3?a=1&amp;b=2</Play></Response>")
        // With an accept prompt, message and prompt are inside a <Gather> posting to the action.
        var asking = script
        asking.acceptPrompt = "Press 1."
        let twiml = TwilioVoiceProvider.twiml(asking, gatherAction: "https://e.example/v?c=1&d=2")
        #expect(twiml.hasPrefix("<Response><Gather input=\"dtmf\" numDigits=\"1\" timeout=\"8\" action=\"https://e.example/v?c=1&amp;d=2\""))
        #expect(ProviderSandbox.gatherAction(twiml) == "https://e.example/v?c=1&d=2")
        #expect(twiml.components(separatedBy: "<Say language=\"fr-FR\">Press 1.</Say></Gather>").count == 3)
        // Nowhere to post the key: the call does not ask for one.
        #expect(!TwilioVoiceProvider.twiml(asking, gatherAction: nil).contains("Gather"))
        #expect(CareAlertCallScript.message(type: .safetyConcern, level: .backup)
            == "This is CareMesh with a care alert: safety concern. You are called as the backup: the coordinator on duty has not answered.")
    }

    @Test("voice: a pickup without the key is not an answer: the alert escalates, and the backup's key answers it")
    func voicePickupWithoutKey() async throws {
        try await withVoiceStack { s, sandbox in
            let (admin, _, backup, raised) = try await raiseWithTwoPhones(s, sandbox, primary: .pickedUp, backup: .answered)
            let answered = try await s.until(raised.alert.id, is: .answered, as: admin, timeout: .seconds(20))
            #expect(answered.alert.escalationLevel == .backup && answered.alert.answeredBy == backup.id)
            // The primary picked up and hung up without pressing: completed, not an answer.
            #expect(answered.calls.map(\.status) == [.completed, .accepted])
        }
    }

    @Test("voice: an answering machine is not an answer, and an acknowledged alert's live call is hung up")
    func voiceMachineAndHangUp() async throws {
        try await withVoiceStack { s, sandbox in
            // The backup's phone rings for a long while.
            let (admin, _, _, raised) = try await raiseWithTwoPhones(s, sandbox, primary: .machine, backup: .noAnswer, backupDelayMs: 60_000)
            // The machine does not stop it: on to the backup, whose phone rings.
            _ = try await TestStack.eventually(timeout: .seconds(20)) {
                let a = try await s.alert(raised.alert.id, as: admin).alert
                guard a.escalationLevel == .backup, a.status == .ringing else { throw RPCError(.unavailable, "alert is \(a.status) at \(a.escalationLevel)") }
            }
            _ = try await TestStack.eventually(timeout: .seconds(10)) {
                guard try await s.count("SELECT count(*) FROM messaging.voice_calls WHERE status = 'ringing'") == 1 else {
                    throw RPCError(.unavailable, "the backup's phone is not ringing yet")
                }
            }
            // An admin acknowledges in the app: the ringing call is hung up.
            var ack = Caremesh_Alerts_V1_AcknowledgeCareAlertRequest()
            ack.id = raised.alert.id
            _ = try await s.client.call(AlertsMethods.acknowledgeCareAlert, request: ack, options: admin.auth)
            _ = try await TestStack.eventually(timeout: .seconds(10)) {
                guard sandbox.hangups.count == 1 else { throw RPCError(.unavailable, "no hang-up yet") }
            }
            #expect(sandbox.hangups == [sandbox.calls.last!.id])
            #expect(try await s.count("SELECT count(*) FROM messaging.voice_calls WHERE status = 'machine'") == 1)
        }
    }
}

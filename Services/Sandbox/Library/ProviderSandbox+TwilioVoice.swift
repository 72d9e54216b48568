import AsyncHTTPClient
import CareMeshRPC
import Foundation
import Hummingbird
import MessagingService
import NIOCore

/// Twilio's Calls API, as the sandbox plays it: a call placed (`Calls.json`, its TwiML kept),
/// its status callbacks with answering-machine detection, the key pressed at a `<Gather>`, and
/// hang-ups (`Calls/{CallSid}.json`).
extension ProviderSandbox {
    func twilioCall(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let (field, to) = try await twilioRequest(request, context)
        guard let twiml = field("Twiml") ?? field("Url") else { return twilioError(.badRequest, code: 21205, "Url or Twiml is required.") }
        if let status = nextError(api: "twilio", to: to) {
            return twilioError(HTTPResponse.Status(code: status), code: 20500, "Scripted failure")
        }
        let call = ReceivedCall(id: Self.newID("CA"), to: to, from: field("From") ?? "", twiml: twiml, timeout: Int(field("Timeout") ?? "") ?? 60)
        state.withLock { $0.calls.append(call) }
        if let callback = field("StatusCallback") {
            let outcome = scripted(\.voiceOutcomes, api: "twilio", to: to) ?? .answered
            let delay = plan(api: "twilio", to: to).1
            Task { await self.callCallbacks(call, outcome: outcome, extraDelayMs: delay, url: callback) }
        }
        return Self.json(.created, ["sid": .string(call.id), "account_sid": .string(configuration.twilioAccountSID), "to": .string(to), "from": .string(call.from),
                                    "status": "queued"])
    }

    /// ringing, then the outcome, as Twilio's status callbacks (with answering-machine detection).
    func callCallbacks(_ call: ReceivedCall, outcome: VoiceOutcome, extraDelayMs: Int, url: String) async {
        let base: [(name: String, value: String)] = [("CallSid", call.id), ("AccountSid", configuration.twilioAccountSID),
                                                     ("From", call.from), ("To", call.to), ("Direction", "outbound-api")]
        try? await Task.sleep(for: configuration.callbackDelay)
        await postTwilio(url: url, base + [("CallStatus", "ringing")])
        try? await Task.sleep(for: configuration.callbackDelay + .milliseconds(extraDelayMs))
        switch outcome {
        case .answered, .pickedUp, .machine:
            let by = outcome == .machine ? "machine_start" : "human"
            await postTwilio(url: url, base + [("CallStatus", "in-progress"), ("AnsweredBy", by)])
            try? await Task.sleep(for: configuration.callbackDelay)
            if outcome == .answered, let action = Self.gatherAction(call.twiml) {
                await postTwilio(url: action, base + [("CallStatus", "in-progress"), ("Digits", "1"), ("FinishedOnKey", ""),
                                                      ("msg", "Gather End")])
                try? await Task.sleep(for: configuration.callbackDelay)
            }
            await postTwilio(url: url, base + [("CallStatus", "completed"), ("AnsweredBy", by), ("CallDuration", "12")])
        case .busy, .noAnswer, .failed:
            await postTwilio(url: url, base + [("CallStatus", outcome.rawValue), ("CallDuration", "0")])
        }
    }

    /// The `action` of the TwiML's first `<Gather>` (where Twilio posts the pressed key),
    /// its XML escapes undone.
    public static func gatherAction(_ twiml: String) -> String? {
        guard let gather = twiml.firstRange(of: "<Gather "), let end = twiml[gather.upperBound...].firstIndex(of: ">"),
              let match = twiml[gather.upperBound..<end].firstMatch(of: /action="([^"]*)"/) else { return nil }
        return String(match.1).replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&lt;", with: "<")
            .replacingOccurrences(of: "&gt;", with: ">").replacingOccurrences(of: "&amp;", with: "&")
    }

    func twilioHangUp(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        try requireTwilioAccount(request, context)
        let id = (context.parameters.get("call") ?? "").replacingOccurrences(of: ".json", with: "")
        var body = request
        let form = FormEncoding.decode(String(buffer: try await body.collectBody(upTo: 1 << 16))) ?? []
        guard let status = form.last(where: { $0.name == "Status" })?.value, ["completed", "canceled"].contains(status) else {
            return twilioError(.badRequest, code: 21218, "Invalid Status")
        }
        guard state.withLock({ $0.calls.contains { $0.id == id } }) else { return twilioError(.notFound, code: 20404, "Not found") }
        state.withLock { $0.hangups.append(id) }
        return Self.json(.ok, ["sid": .string(id), "status": .string(status)])
    }
}

import AsyncHTTPClient
import CareMeshRPC
import Foundation
import Hummingbird
import MessagingService
import NIOCore

/// Orange's SMS API, as the sandbox plays it: OAuth 2.0 client credentials
/// (`/oauth/v3/token`), `outboundSMSMessageRequest` sends (a repeated client correlator drops
/// the repeat, as Orange does), and delivery receipts to the `notifyURL`.
extension ProviderSandbox {
    func orangeError(_ status: HTTPResponse.Status, id: String, _ text: String) -> Response {
        Self.json(status, ["requestError": ["serviceException": ["messageId": .string(id), "text": .string(text)]]])
    }

    func orangeToken(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        guard let (user, password) = Self.basicCredentials(request), user == configuration.orangeClientID,
              password == configuration.orangeClientSecret else {
            return Self.json(.unauthorized, ["error": "invalid_client", "error_description": "The requested service needs credentials"])
        }
        var body = request
        let form = FormEncoding.decode(String(buffer: try await body.collectBody(upTo: 1 << 20))) ?? []
        guard form.contains(where: { $0.name == "grant_type" && $0.value == "client_credentials" }) else {
            return Self.json(.badRequest, ["error": "unsupported_grant_type"])
        }
        let token = Self.newID("")
        state.withLock { _ = $0.tokens.insert(token) }
        return Self.json(.ok, ["token_type": "Bearer", "access_token": .string(token), "expires_in": "3600"])
    }

    func orangeSend(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        guard let auth = request.headers[.authorization], auth.hasPrefix("Bearer "),
              state.withLock({ $0.tokens.contains(String(auth.dropFirst(7))) }) else {
            return Self.json(.unauthorized, ["requestError": ["policyException": ["messageId": "POL0001", "text": "Invalid credentials"]]])
        }
        var body = request
        let data = Data(buffer: try await body.collectBody(upTo: 1 << 20))
        guard let send = try? JSONDecoder().decode(OrangeSms.SendRequest.self, from: data) else {
            return orangeError(.badRequest, id: "SVC0002", "Invalid input value for message part outboundSMSMessageRequest")
        }
        let m = send.outboundSMSMessageRequest
        let to = OrangeSms.e164(m.address)
        guard FieldViolations.isE164(to) else {
            return orangeError(.badRequest, id: "SVC0004", "No valid addresses provided in message part address")
        }
        let sender = context.parameters.get("sender") ?? ""
        if let status = nextError(api: "orange", to: to) {
            return orangeError(HTTPResponse.Status(code: status), id: "SVC1000", "Scripted failure")
        }
        let resource = { (id: String) in "\(self.baseURL)/smsmessaging/v1/outbound/\(sender)/requests/\(id)" }
        // Orange drops a repeat of a client correlator it has seen: same resource, no second SMS.
        if let correlator = m.clientCorrelator, let earlier = state.withLock({ $0.byCorrelator[correlator] }) {
            return Self.json(.created, ["outboundSMSMessageRequest": ["address": .string(m.address), "senderAddress": .string(m.senderAddress),
                                                                       "resourceURL": .string(resource(earlier.id))]])
        }
        let message = Received(api: "orange", id: Self.newID(""), to: to, from: OrangeSms.e164(m.senderAddress),
                               body: m.outboundSMSTextMessage.message, clientCorrelator: m.clientCorrelator)
        state.withLock { s in
            s.received.append(message)
            if let c = m.clientCorrelator { s.byCorrelator[c] = message }
        }
        if let receipt = m.receiptRequest {
            let (outcome, delay) = plan(api: "orange", to: to)
            Task {
                try? await Task.sleep(for: self.configuration.callbackDelay + .milliseconds(delay))
                let status = outcome == .delivered ? "DeliveredToTerminal" : "DeliveryImpossible"
                let receiptBody = OrangeSms.DeliveryReceipt(address: to, status: status, callbackData: receipt.callbackData)
                var post = HTTPClientRequest(url: receipt.notifyURL)
                post.method = .POST
                post.headers.add(name: "Content-Type", value: "application/json")
                post.body = .bytes(ByteBuffer(bytes: (try? JSONEncoder().encode(receiptBody)) ?? Data()))
                await self.post(post)
            }
        }
        return Self.json(.created, ["outboundSMSMessageRequest": ["address": .string(m.address), "senderAddress": .string(m.senderAddress),
                                                                   "clientCorrelator": .string(m.clientCorrelator ?? ""),
                                                                   "resourceURL": .string(resource(message.id))]])
    }
}

import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import SwiftProtobuf

/// Provider webhooks, handed whole by the router's HTTP edge, arrive here.
///
/// The log is the inbox. `handle` reads the request (authentication, kind, idempotency key;
/// pure), writes its log row (headers, body, source address, the answer) and answers once that
/// row is committed: an acknowledged webhook is never lost. Rows from concurrent requests are
/// written together (`GroupCommit`: one flush at a time, in order of arrival), by
/// `Webhooks.log`, which usually applies them in the same transaction.
final class WebhookInbox: Sendable {
    let webhooks: Webhooks
    let rows: GroupCommit<Webhooks.LogRow, Bool>

    init(_ webhooks: Webhooks) {
        self.webhooks = webhooks
        rows = GroupCommit(maxBatch: 256) { rows in try await webhooks.log(rows) }
    }

    func handle(_ r: Caremesh_Messaging_V1_WebhookRequest, _ context: RPCContext) async throws -> Caremesh_Messaging_V1_WebhookResponse {
        var answer = Webhooks.Answer(status: 200)
        var read: WebhookReader.Read?
        do {
            read = try webhooks.reader.read(r)
            if r.provider == "twilio" {
                answer.body = read?.reply ?? Webhooks.twiml
                answer.contentType = "text/xml"
            }
        } catch {
            switch error {
            case .unknownRoute: answer = .init(status: 404, error: "no webhook route for this kind and provider")
            case .unauthenticated: answer = .init(status: 403, error: "signature missing or invalid")
            case .unreadable(let why): answer = .init(status: 400, error: why)
            }
            webhooks.logger.notice("webhook refused", metadata: ["webhook.provider": "\(r.provider)", "webhook.kind": "\(r.kind)",
                                                                 "http.status": "\(answer.status)"])
        }
        // Not logged, not answered: the provider tries again.
        guard try await rows.submit(Webhooks.LogRow(r, read: read, answer)) else {
            throw RPCError(.internal, "the webhook could not be logged")
        }
        var response = Caremesh_Messaging_V1_WebhookResponse()
        response.status = UInt32(answer.status)
        response.contentType = answer.contentType
        response.body = answer.body
        return response
    }
}

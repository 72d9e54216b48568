import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// SendGrid's v3 mail send, as SendGrid checks it: `Authorization: Bearer <API key>` (401 with an
/// `errors` array otherwise), a JSON body with a recipient, a sender, a subject and content
/// (400 naming the field otherwise); 202 Accepted with `X-Message-Id`. Scripted HTTP errors per
/// recipient (`api: "sendgrid"`, `to`: the address) come first.
extension ProviderSandbox {
    struct SendGridBody: Decodable {
        struct Address: Decodable { var email: String }
        struct Personalization: Decodable { var to: [Address]? }
        struct Content: Decodable { var type: String; var value: String }
        var personalizations: [Personalization]?
        var from: Address?
        var subject: String?
        var content: [Content]?
    }

    static func sendGridError(_ status: HTTPResponse.Status, _ message: String, field: String?) -> Response {
        var item: [(String, ProviderJSON)] = [("message", .string(message))]
        if let field { item.append(("field", .string(field))) }
        return json(status, ["errors": .array([.object(item)])])
    }

    func sendGridSend(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        guard request.headers[.authorization] == "Bearer \(configuration.sendGridAPIKey)" else {
            return Self.sendGridError(.unauthorized, "The provided authorization grant is invalid, expired, or revoked", field: nil)
        }
        var body = request
        let data = Data(buffer: try await body.collectBody(upTo: 1 << 20))
        guard let mail = try? JSONDecoder().decode(SendGridBody.self, from: data) else {
            return Self.sendGridError(.badRequest, "Bad Request", field: nil)
        }
        guard let to = mail.personalizations?.first?.to?.first?.email, to.contains("@") else {
            return Self.sendGridError(.badRequest, "The to array is required for all personalization objects", field: "personalizations.0.to")
        }
        guard let from = mail.from?.email, from.contains("@") else {
            return Self.sendGridError(.badRequest, "The from object must be provided for every email send", field: "from")
        }
        guard let subject = mail.subject, !subject.isEmpty else {
            return Self.sendGridError(.badRequest, "The subject is required", field: "subject")
        }
        guard let text = mail.content?.first(where: { $0.type == "text/plain" })?.value, !text.isEmpty else {
            return Self.sendGridError(.badRequest, "Unless a valid template_id is provided, the content parameter is required", field: "content")
        }
        if let status = nextError(api: "sendgrid", to: to) {
            return Self.sendGridError(HTTPResponse.Status(code: status), "Scripted failure", field: nil)
        }
        let email = ReceivedEmail(id: Self.newID(""), to: to, from: from, subject: subject, text: text)
        recordEmail(email)
        var response = Response(status: .accepted)
        response.headers[HTTPField.Name("X-Message-Id")!] = email.id
        return response
    }
}

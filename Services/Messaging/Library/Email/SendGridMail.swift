import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// SendGrid's v3 mail send (`POST /v3/mail/send`, `Authorization: Bearer <API key>`, a JSON
/// body of personalizations, from, subject and content): it answers 202 Accepted with the
/// message's id in `X-Message-Id`, or an `errors` array.
struct SendGridMail: Sendable {
    let baseURL: String
    let apiKey: String
    let from: String

    init(baseURL: String, apiKey: String, from: String) {
        self.baseURL = ProviderHTTP.base(baseURL)
        self.apiKey = apiKey
        self.from = from
    }

    struct Body: Encodable {
        struct Address: Encodable { var email: String }
        struct Personalization: Encodable { var to: [Address] }
        struct Content: Encodable { var type: String; var value: String }
        var personalizations: [Personalization]
        var from: Address
        var subject: String
        var content: [Content]
        /// Ours, echoed in SendGrid's event webhook.
        var custom_args: [String: String]
    }

    struct Failure: Decodable {
        struct Item: Decodable { var message: String?; var field: String? }
        var errors: [Item]?
    }

    /// The provider's message id.
    func send(id: UUID, to: String, subject: String, text: String, timeout: Duration) async throws(ProviderError) -> String {
        let body = Body(personalizations: [.init(to: [.init(email: to)])], from: .init(email: from), subject: subject,
                        content: [.init(type: "text/plain", value: text)], custom_args: ["email_id": id.uuidString.lowercased()])
        var request = HTTPClientRequest(url: "\(baseURL)/v3/mail/send")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(apiKey)")
        request.headers.add(name: "Content-Type", value: "application/json")
        guard let json = try? JSONEncoder().encode(body) else {
            throw ProviderError(provider: "sendgrid", retryable: false, code: "encoding", message: "the email could not be encoded")
        }
        request.body = .bytes(ByteBuffer(bytes: json))
        let (status, headers, data) = try await ProviderHTTP.exchange(request, provider: "sendgrid", timeout: timeout)
        if status == .accepted || status == .ok {
            return headers.first(name: "X-Message-Id") ?? ""
        }
        let failure = try? JSONDecoder().decode(Failure.self, from: data)
        throw ProviderError(provider: "sendgrid", retryable: ProviderHTTP.isRetryable(status), code: "\(status.code)",
                            message: failure?.errors?.first?.message ?? status.reasonPhrase, httpStatus: Int(status.code))
    }
}

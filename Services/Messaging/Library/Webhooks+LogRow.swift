import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import SwiftProtobuf

extension Webhooks {
    /// One webhook's log row as it arrived, with the answer it gets and, once applied, its
    /// outcome.
    struct LogRow: Sendable {
        /// Time-ordered: the log only grows, and its key's index stays hot at its right edge.
        var id = UUID.timeOrdered()
        var kind, provider, type, url, headers, body: String
        var raw: ByteBuffer
        var ip: String
        var key: String
        var error: String
        var status: Int32
        var response: String
        /// What the request says, if it is authentic and readable (else it is only logged).
        var read: WebhookReader.Read?
        var processed = false
        var duplicate = false
        var related: UUID?

        /// `s` without NULs (PostgreSQL's text cannot hold one).
        static func text(_ s: String) -> String { s.utf8.contains(0) ? s.replacingOccurrences(of: "\0", with: "\u{FFFD}") : s }

        init(_ r: Caremesh_Messaging_V1_WebhookRequest, read: WebhookReader.Read?, _ o: Answer) {
            var headers: [String: String] = [:]
            for h in r.headers { headers[h.name.lowercased()] = h.value }
            func name(_ s: String) -> String { s.isEmpty ? "unknown" : String(s.prefix(20)).lowercased().filter(\.isLetter) }
            kind = name(r.kind)
            provider = name(r.provider)
            type = read?.type ?? "unknown"
            url = Self.text(r.url)
            self.headers = JSONText.object(headers)
            body = read?.form?.json ?? Webhooks.bodyAsJSON(r.body)
            raw = ByteBuffer(bytes: r.body)
            ip = Self.text(String(r.sourceAddress.prefix(64)))
            key = read?.idempotencyKey ?? ""
            error = o.error ?? ""
            status = Int32(o.status)
            response = String(decoding: o.body, as: UTF8.self)
            self.read = read
        }

        /// Records what applying it came to.
        mutating func applied(_ o: Outcome) {
            processed = true
            duplicate = o.duplicate
            error = o.error ?? ""
            related = o.related
        }
    }
}

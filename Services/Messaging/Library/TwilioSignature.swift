import Crypto
import Foundation

/// Twilio's request signature (`X-Twilio-Signature`), as its helper libraries compute it:
/// base64 of HMAC-SHA1, keyed by the account's auth token, over the full webhook URL followed
/// by every POST parameter's name and value, sorted by name. A JSON body is covered instead by
/// the URL's `bodySHA256` query parameter (hex SHA-256 of the body), the URL signed alone.
/// The sandbox provider signs its callbacks this way, and the webhook endpoint checks them.
public enum TwilioSignature {
    public static func compute(authToken: String, url: String, params: [(name: String, value: String)] = []) -> String {
        var data = url
        for p in params.sorted(by: { ($0.name, $0.value) < ($1.name, $1.value) }) { data += p.name + p.value }
        let mac = HMAC<Insecure.SHA1>.authenticationCode(for: Data(data.utf8), using: SymmetricKey(data: Data(authToken.utf8)))
        return Data(mac).base64EncodedString()
    }

    /// Whether `signature` is Twilio's for a form-encoded request (compared in constant time).
    public static func isValid(_ signature: String, authToken: String, url: String, params: [(name: String, value: String)]) -> Bool {
        constantTimeEqual(signature, compute(authToken: authToken, url: url, params: params))
    }

    /// Whether `signature` is Twilio's for a JSON request: the URL's `bodySHA256` must be the
    /// body's digest, and the URL carrying it must be what was signed.
    public static func isValid(_ signature: String, authToken: String, url: String, jsonBody: Data) -> Bool {
        guard let query = URLComponents(string: url)?.queryItems,
              let claimed = query.first(where: { $0.name == "bodySHA256" })?.value else { return false }
        let digest = SHA256.hash(data: jsonBody).map { String(format: "%02x", $0) }.joined()
        return constantTimeEqual(claimed.lowercased(), digest) && isValid(signature, authToken: authToken, url: url, params: [])
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

import Foundation

/// Orange's SMS API wire format (the OneAPI shape of seed 004's "Orange Network" provider):
/// an OAuth 2.0 client-credentials token, `POST /smsmessaging/v1/outbound/{sender}/requests`
/// with an `outboundSMSMessageRequest`, and delivery receipts posted back as a
/// `deliveryInfoNotification`. Used by the real provider and by the sandbox that speaks it.
public enum OrangeSms {
    /// `POST /oauth/v3/token` (form `grant_type=client_credentials`, Basic authorization) answers this.
    public struct Token: Sendable, Equatable, Decodable {
        public var tokenType: String
        public var accessToken: String
        /// Seconds; Orange sends it as a string ("3600"), some gateways as a number.
        public var expiresIn: Int

        enum CodingKeys: String, CodingKey { case tokenType = "token_type", accessToken = "access_token", expiresIn = "expires_in" }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            tokenType = try c.decode(String.self, forKey: .tokenType)
            accessToken = try c.decode(String.self, forKey: .accessToken)
            if let n = try? c.decode(Int.self, forKey: .expiresIn) {
                expiresIn = n
            } else if let s = Int(try c.decode(String.self, forKey: .expiresIn)) {
                expiresIn = s
            } else {
                throw DecodingError.dataCorruptedError(forKey: .expiresIn, in: c, debugDescription: "expires_in is not a number")
            }
        }
    }

    /// The send request's body.
    public struct SendRequest: Sendable, Equatable, Codable {
        public struct Message: Sendable, Equatable, Codable { public var message: String }
        public struct Receipt: Sendable, Equatable, Codable {
            public var notifyURL: String
            public var callbackData: String?
        }
        public struct Body: Sendable, Equatable, Codable {
            public var address: String
            public var senderAddress: String
            public var senderName: String?
            public var outboundSMSTextMessage: Message
            /// Our idempotency key: Orange refuses a second request with the same one.
            public var clientCorrelator: String?
            public var receiptRequest: Receipt?
        }
        public var outboundSMSMessageRequest: Body

        public init(to: String, from sender: String, senderName: String? = nil, text: String, clientCorrelator: String,
                    notifyURL: String? = nil, callbackData: String? = nil) {
            outboundSMSMessageRequest = Body(
                address: OrangeSms.tel(to), senderAddress: OrangeSms.tel(sender), senderName: senderName,
                outboundSMSTextMessage: Message(message: text), clientCorrelator: clientCorrelator,
                receiptRequest: notifyURL.map { Receipt(notifyURL: $0, callbackData: callbackData) })
        }
    }

    /// The path of the send request for `sender` (E.164), its `tel:+…` URL-encoded.
    public static func sendPath(sender: String) -> String {
        "/smsmessaging/v1/outbound/" + tel(sender).addingPercentEncoding(withAllowedCharacters: .alphanumerics)! + "/requests"
    }

    /// "tel:+33612345678" from an E.164 number (unchanged if already a tel: URI).
    public static func tel(_ e164: String) -> String { e164.hasPrefix("tel:") ? e164 : "tel:" + e164 }

    /// The E.164 number of a `tel:` URI.
    public static func e164(_ tel: String) -> String { tel.hasPrefix("tel:") ? String(tel.dropFirst(4)) : tel }

    /// The delivery receipt Orange posts to `notifyURL`.
    public struct DeliveryReceipt: Sendable, Equatable, Codable {
        public struct Info: Sendable, Equatable, Codable {
            public var address: String
            public var deliveryStatus: String
        }
        public struct Notification: Sendable, Equatable, Codable {
            public var callbackData: String?
            public var deliveryInfo: Info
        }
        public var deliveryInfoNotification: Notification

        public init(address: String, status: String, callbackData: String?) {
            deliveryInfoNotification = Notification(callbackData: callbackData, deliveryInfo: Info(address: OrangeSms.tel(address), deliveryStatus: status))
        }

        /// Our status for it (nil for a status Orange may add later: logged, not applied).
        public var status: SmsStatus? { SmsStatus(orange: deliveryInfoNotification.deliveryInfo.deliveryStatus) }
    }
}

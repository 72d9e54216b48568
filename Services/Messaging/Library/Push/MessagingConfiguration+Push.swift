import Foundation

extension MessagingConfiguration {
    /// FCM from a service account's key file, APNs from an auth key file and its ids; each key
    /// is loaded here, so a bad one stops the service at start with the setting named.
    mutating func parsePush(_ value: (String) -> String?) throws(BadValue) {
        if let path = value("MESSAGING_FCM_CREDENTIALS_FILE") {
            let key = "MESSAGING_FCM_CREDENTIALS_FILE"
            guard let data = FileManager.default.contents(atPath: path) else { throw BadValue(key: key, why: "names no readable file") }
            guard let account = try? JSONDecoder().decode(FcmServiceAccount.self, from: data), account.type == "service_account",
                  !account.projectID.isEmpty, !account.clientEmail.isEmpty, URL(string: account.tokenURI)?.scheme != nil
            else { throw BadValue(key: key, why: "is not a service account's key file (project_id, private_key, client_email, token_uri)") }
            guard (try? account.signingKey()) != nil else { throw BadValue(key: key, why: "holds a private_key that is not a 2048-bit or larger RSA key") }
            fcm = Fcm(account: account)
            if let url = value("MESSAGING_FCM_URL") { fcm!.baseURL = url }
        }
        if let path = value("MESSAGING_APNS_KEY_FILE") {
            guard let pem = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw BadValue(key: "MESSAGING_APNS_KEY_FILE", why: "names no readable file")
            }
            func id(_ key: String) throws(BadValue) -> String {
                guard let v = value(key), v.count == 10, v.allSatisfy({ $0.isASCII && ($0.isUppercase || $0.isNumber) }) else {
                    throw BadValue(key: key, why: "must be Apple's 10-character id")
                }
                return v
            }
            guard let topic = value("MESSAGING_APNS_TOPIC"), topic.contains(".") else {
                throw BadValue(key: "MESSAGING_APNS_TOPIC", why: "must be the app's bundle id")
            }
            let key = ApnsKey(keyID: try id("MESSAGING_APNS_KEY_ID"), teamID: try id("MESSAGING_APNS_TEAM_ID"), topic: topic, privateKey: pem)
            guard (try? key.signingKey()) != nil else { throw BadValue(key: "MESSAGING_APNS_KEY_FILE", why: "is not a P-256 key (.p8)") }
            apns = Apns(key: key)
            if let url = value("MESSAGING_APNS_URL") { apns!.baseURL = url }
        }
    }

    /// The configured push providers.
    func pushProviders() throws -> [any PushProvider] {
        var out: [any PushProvider] = []
        if let fcm { out.append(try FcmClient(account: fcm.account, baseURL: fcm.baseURL)) }
        if let apns { out.append(try ApnsClient(key: apns.key, baseURL: apns.baseURL)) }
        return out
    }
}

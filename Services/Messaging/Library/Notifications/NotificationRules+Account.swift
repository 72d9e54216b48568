import CareMeshContracts
import Foundation

extension NotificationRules {
    /// The account's holder: locked (while it still is), verified, withdrawn, a certification expired.
    static func account(type: String, payload: Data, now: Date) throws -> [Draft] {
        let person: String, kind: Caremesh_Messaging_V1_NotificationKind, title: String, body: String, data: [String: String]
        switch type {
        case Caremesh_Identity_V1_AccountLocked.protoMessageName:
            let e = try Caremesh_Identity_V1_AccountLocked(serializedBytes: payload)
            let until = e.lockedUntil.date
            guard until > now else { return [] }
            (person, kind, title) = (e.userID, .accountLocked, "Your account is locked")
            body = "After several failed sign-ins your CareMesh account is locked for \(max(1, Int(until.timeIntervalSince(now) / 60 + 0.5))) "
                + "minutes. If this was not you, reset your password."
            data = ["locked_until": "\(Int(until.timeIntervalSince1970))"]
        case Caremesh_Identity_V1_VolunteerVerified.protoMessageName:
            let e = try Caremesh_Identity_V1_VolunteerVerified(serializedBytes: payload)
            (person, kind, title, data) = (e.userID, .credentialUpdated, "You are verified", ["change": "verified"])
            body = "Your account is verified: you can now be offered SOS near you."
        case Caremesh_Identity_V1_VerificationRevoked.protoMessageName:
            let e = try Caremesh_Identity_V1_VerificationRevoked(serializedBytes: payload)
            (person, kind, title, data) = (e.userID, .credentialUpdated, "Your verification was withdrawn", ["change": "revoked"])
            body = "Your verification was withdrawn: you are no longer offered SOS. Your coordinator can tell you more."
        case Caremesh_Identity_V1_CredentialExpired.protoMessageName:
            let e = try Caremesh_Identity_V1_CredentialExpired(serializedBytes: payload)
            (person, kind, title, data) = (e.userID, .credentialUpdated, "A certification expired", ["change": "expired", "expired_on": e.expiredOn])
            body = "Your \(e.credential.prefix(60)) certification expired on \(e.expiredOn). Renew it in CareMesh to keep being offered SOS."
        default:
            return []
        }
        guard let id = UUID(uuidString: person) else { return [] }
        return [Draft(person: id, kind: kind, title: title, body: body, data: data)]
    }
}

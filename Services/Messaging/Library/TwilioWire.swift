import CareMeshContracts
import Foundation

/// `application/x-www-form-urlencoded`, as Twilio sends webhooks and takes API requests: pairs
/// in order, a repeated name kept, space as "+", everything but unreserved characters
/// percent-encoded.
public enum FormEncoding {
    static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    public static func encode(_ pairs: [(name: String, value: String)]) -> String {
        pairs.map { escape($0.name) + "=" + escape($0.value) }.joined(separator: "&")
    }

    static func escape(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: unreserved.union([" "]))!.replacingOccurrences(of: " ", with: "+")
    }

    /// The pairs of a body; nil when a percent escape is malformed.
    public static func decode(_ body: String) -> [(name: String, value: String)]? {
        var out: [(name: String, value: String)] = []
        for part in body.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = unescape(kv[0]), let value = kv.count > 1 ? unescape(kv[1]) : "" else { return nil }
            out.append((name, value))
        }
        return out
    }

    static func unescape(_ s: Substring) -> String? {
        s.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }
}

/// Twilio's voice call statuses, read as CareMesh's `CallStatus`.
public enum TwilioCallStatus {
    /// `CallStatus` and, with answering-machine detection on, `AnsweredBy`. Only a confirmed
    /// person is an answer: a machine, a fax, or an answer Twilio could not classify
    /// ("unknown") is MACHINE, so a care alert keeps escalating (the coordinator can still
    /// acknowledge it in the app). nil for a status Twilio may add later.
    public static func status(_ callStatus: String, answeredBy: String?) -> Caremesh_Messaging_V1_CallStatus? {
        let person = answeredBy.map { $0 == "human" } ?? true
        switch callStatus {
        case "queued", "initiated": return .queued
        case "ringing": return .ringing
        case "in-progress", "answered": return person ? .inProgress : .machine
        case "completed": return person ? .completed : .machine
        case "busy": return .busy
        case "no-answer": return .noAnswer
        case "failed": return .failed
        case "canceled": return .canceled
        default: return nil
        }
    }
}

import CareMeshContracts
import CareMeshRPC
import Foundation

/// A volunteer's answer to an SOS offer by SMS (`YES 4821`, `NO 4821`, or the same in French,
/// Spanish or Portuguese): how it is read, what dispatch's answer to it means, and what the
/// volunteer is texted back. Pure, tested without I/O.
enum SosSmsAnswer {
    struct Parsed: Sendable, Equatable {
        var accept: Bool
        var code: String
        var language: String
    }

    /// Yes and no, by language (upper case, accents folded as `SmsKeyword.normalized` does).
    static let words: [String: (accept: Bool, language: String)] = [
        "YES": (true, "en"), "Y": (true, "en"), "NO": (false, "en"), "N": (false, "en"),
        "OUI": (true, "fr"), "NON": (false, "fr"),
        "SI": (true, "es"),
        "SIM": (true, "pt"), "NAO": (false, "pt"),
    ]

    /// The answer `body` is: a yes or no word and a four-digit code, nothing else; nil for
    /// any other message (a keyword alone is `SmsKeyword`'s).
    static func parse(_ body: String) -> Parsed? {
        let parts = SmsKeyword.normalized(body).split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" })
        guard parts.count == 2, let word = words[String(parts[0])], parts[1].count == 4, parts[1].allSatisfy(\.isASCII),
              parts[1].allSatisfy(\.isNumber) else { return nil }
        return Parsed(accept: word.accept, code: String(parts[1]), language: word.language)
    }

    /// What came of an answer (`sos_sms_answers.outcome`).
    enum Outcome: String, Sendable, CaseIterable {
        case accepted, declined
        /// Someone else took it, or it ended.
        case taken
        /// Dispatch refused it for another reason (the volunteer already has an SOS in hand,
        /// is no longer verified…).
        case refused
        /// A code this phone was never sent, or one that expired.
        case unknownCode = "unknown_code"
        /// From a phone no offer was ever texted to: not answered at all.
        case ignored
    }

    /// What dispatch's answer means: its error, or none. nil: try again later (dispatch could
    /// not be reached, or failed).
    static func outcome(accept: Bool, error: RPCError?) -> Outcome? {
        guard let error else { return accept ? .accepted : .declined }
        switch error.code {
        case .failedPrecondition:
            let reasons = Set(error.details.map(\.errorInfo.reason))
            return reasons.isDisjoint(with: ["SOS_ACCEPTED", "SOS_IN_PROGRESS", "SOS_RESOLVED", "SOS_CANCELLED"]) ? .refused : .taken
        case .permissionDenied, .notFound, .invalidArgument:
            return .refused
        default:
            return nil
        }
    }

    /// The SMS back, or nil (an ignored message is not answered). `why`: dispatch's refusal.
    static func reply(_ outcome: Outcome, why: String? = nil) -> String? {
        switch outcome {
        case .accepted: "CareMesh: you accepted the SOS. Thank you! Open CareMesh for the location and to chat with the person."
        case .declined: "CareMesh: you declined the SOS. Thank you for answering."
        case .taken: "CareMesh: this SOS was already taken by someone else or has ended. Thank you for answering."
        case .refused: "CareMesh: your answer could not be taken" + (why.map { " (\($0))" } ?? "") + ". Please use the app."
        case .unknownCode: "CareMesh: we do not know that code. Answer with YES or NO and the 4-digit code from the SOS text."
        case .ignored: nil
        }
    }
}

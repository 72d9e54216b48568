import Foundation

/// What an inbound SMS asks for when its whole body is a keyword, as Twilio's Advanced Opt-Out
/// reads it: case, accents, surrounding spaces and trailing punctuation do not matter; a
/// keyword inside a longer message is not one. The English keywords (the carriers' standard)
/// hold in every language; each language adds its own.
public enum SmsKeyword: String, Sendable, CaseIterable {
    /// Block further messages to this number (the confirmation is sent first).
    case optOut = "opt_out"
    /// Allow messages again.
    case optIn = "opt_in"
    /// Answer with who we are and how to stop.
    case help

    /// Keywords by language (ISO 639-1), upper case, without accents.
    public static let keywords: [String: [SmsKeyword: Set<String>]] = [
        "en": [.optOut: ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"],
               .optIn: ["START", "UNSTOP", "YES"],
               .help: ["HELP", "INFO"]],
        "fr": [.optOut: ["ARRET", "ARRETER", "DESABONNER", "DESINSCRIRE"],
               .optIn: ["DEMARRER", "REPRENDRE"],
               .help: ["AIDE"]],
        "es": [.optOut: ["PARAR", "ALTO", "BAJA", "CANCELAR"],
               .optIn: ["INICIAR", "ALTA"],
               .help: ["AYUDA"]],
        "pt": [.optOut: ["PARAR", "SAIR", "CANCELAR"],
               .optIn: ["INICIAR", "VOLTAR"],
               .help: ["AJUDA"]],
    ]

    /// The keyword `body` is in `language` (English always counts), or nil.
    public static func of(_ body: String, language: String = "en") -> SmsKeyword? {
        let word = normalized(body)
        guard !word.isEmpty else { return nil }
        for table in [keywords["en"], language == "en" ? nil : keywords[language.lowercased()]].compactMap({ $0 }) {
            for kind in allCases where table[kind]?.contains(word) == true { return kind }
        }
        return nil
    }

    /// Upper case, accents folded, surrounding whitespace and trailing . ! removed.
    static func normalized(_ body: String) -> String {
        var text = body.trimmingCharacters(in: .whitespacesAndNewlines)
        while let last = text.last, last == "." || last == "!" { text.removeLast() }
        return text.folding(options: [.caseInsensitive, .diacriticInsensitive], locale: Locale(identifier: "en_US_POSIX")).uppercased()
    }
}

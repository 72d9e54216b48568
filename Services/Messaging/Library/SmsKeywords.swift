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

extension SmsKeyword {
    /// The keyword `body` is and the language it is in: English first (the carriers'
    /// standard), then the other languages in a fixed order; nil for any other message.
    public static func detect(_ body: String) -> (keyword: SmsKeyword, language: String)? {
        let word = normalized(body)
        guard !word.isEmpty else { return nil }
        for language in ["en"] + keywords.keys.filter({ $0 != "en" }).sorted() {
            for kind in allCases where keywords[language]?[kind]?.contains(word) == true { return (kind, language) }
        }
        return nil
    }

    /// The answer to this keyword in `language` (English for a language without its own).
    public func reply(language: String) -> String {
        let replies: [SmsKeyword: [String: String]] = [
            .optOut: [
                "en": "You are unsubscribed from CareMesh messages and will receive no more. Reply START to subscribe again.",
                "fr": "Vous êtes désinscrit des messages CareMesh et n'en recevrez plus. Répondez DEMARRER pour vous réinscrire.",
                "es": "Se ha dado de baja de los mensajes de CareMesh y no recibirá más. Responda INICIAR para volver a suscribirse.",
                "pt": "Você cancelou as mensagens da CareMesh e não receberá mais. Responda INICIAR para voltar a receber.",
            ],
            .optIn: [
                "en": "You are subscribed to CareMesh messages again. Reply STOP to unsubscribe, HELP for help.",
                "fr": "Vous recevez à nouveau les messages CareMesh. Répondez STOP pour vous désinscrire, AIDE pour de l'aide.",
                "es": "Vuelve a recibir los mensajes de CareMesh. Responda STOP para darse de baja, AYUDA para ayuda.",
                "pt": "Você voltou a receber as mensagens da CareMesh. Responda STOP para cancelar, AJUDA para ajuda.",
            ],
            .help: [
                "en": "CareMesh care reminders. Reply STOP to unsubscribe, START to subscribe again. Message and data rates may apply.",
                "fr": "Rappels de soins CareMesh. Répondez STOP pour vous désinscrire, DEMARRER pour vous réinscrire.",
                "es": "Recordatorios de CareMesh. Responda STOP para darse de baja, INICIAR para volver a suscribirse.",
                "pt": "Lembretes da CareMesh. Responda STOP para cancelar, INICIAR para voltar a receber.",
            ],
        ]
        return replies[self]?[language] ?? replies[self]!["en"]!
    }
}

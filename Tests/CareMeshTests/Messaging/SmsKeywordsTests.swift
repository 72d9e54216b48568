import MessagingService
import Testing

/// Inbound keywords, table by table.
@Suite struct SmsKeywordsTests {
    /// (body, language, keyword)
    static let cases: [(String, String, SmsKeyword?)] = [
        ("STOP", "en", .optOut),
        ("stop", "en", .optOut),
        ("  Stop!  ", "en", .optOut),
        ("unsubscribe.", "en", .optOut),
        ("StopAll", "en", .optOut),
        ("OPTOUT", "en", .optOut),
        ("revoke", "en", .optOut),
        ("quit", "fr", .optOut), // English holds in every language
        ("Arrêt", "fr", .optOut),
        ("arret", "fr", .optOut),
        ("arrêt", "en", nil), // French only for French speakers
        ("baja", "es", .optOut),
        ("start", "en", .optIn),
        ("UNSTOP", "pt", .optIn),
        ("démarrer", "fr", .optIn),
        ("help", "en", .help),
        ("aide", "fr", .help),
        ("ajuda", "pt", .help),
        ("please stop texting me", "en", nil), // inside a message: not a keyword
        ("stopp", "en", nil),
        ("", "en", nil),
        ("!!!", "en", nil),
    ]

    @Test("whole-body keywords, any case, accents and trailing punctuation; English everywhere", arguments: 0..<cases.count)
    func keyword(_ i: Int) {
        let (body, language, expected) = Self.cases[i]
        #expect(SmsKeyword.of(body, language: language) == expected, "\(body) [\(language)]")
    }
}

import MessagingService
import Testing

/// Templates: placeholders, rendering, fallback and the shipped set.
@Suite struct SmsTemplatesTests {
    @Test("rendering fills every placeholder or names the missing ones; other braces are text")
    func render() throws {
        let t = SmsTemplate(.oneDayReminder, "en", "Hi {name}, {name} again: {when} {not a var} {} {X}")
        #expect(t.variables == ["name", "when"])
        #expect(try t.render(["name": "Ada", "when": "09:00", "unused": "x"]) == "Hi Ada, Ada again: 09:00 {not a var} {} {X}")
        #expect(throws: SmsTemplate.MissingVariables(names: ["when"])) { try t.render(["name": "Ada"]) }
        #expect(throws: SmsTemplate.MissingVariables(names: ["name", "when"])) { try t.render([:]) }
        #expect(try SmsTemplate(.oneDayReminder, "en", "no placeholders {").render([:]) == "no placeholders {")
        // A value is inserted as it is, never read as a placeholder.
        #expect(try SmsTemplate(.oneDayReminder, "en", "{a}{b}").render(["a": "{b}", "b": "!"]) == "{b}!")
    }

    @Test("the shipped templates: every type in every language, the seed's variables, STOP, one language falls back to English")
    func shipped() throws {
        let languages = Set(DefaultSmsTemplates.all.map(\.language))
        #expect(languages == ["en", "fr", "es", "pt"])
        for language in languages {
            for kind in SmsTemplate.Kind.allCases {
                let t = try #require(DefaultSmsTemplates.all.first { $0.kind == kind && $0.language == language })
                let english = try #require(DefaultSmsTemplates.template(kind, language: "en"))
                #expect(Set(t.variables) == Set(english.variables), "\(kind) \(language)")
                #expect(t.text.contains("STOP"), "\(kind) \(language)")
            }
        }
        #expect(DefaultSmsTemplates.template(.overdueReminder, language: "de")?.language == "en")
        #expect(DefaultSmsTemplates.template(.overdueReminder, language: "FR")?.language == "fr")
        // The English 7-day text: the seed's placeholders without its vaccine, and its real length.
        let seven = try #require(DefaultSmsTemplates.template(.sevenDayReminder, language: "en"))
        #expect(seven.variables == ["patient_name", "facility_name", "due_date", "appointment_time"])
        #expect(seven.characterCount == 122)
        let message = try seven.render(["patient_name": "Ada", "due_date": "2026-12-01", "facility_name": "Clinique du Parc", "appointment_time": "09:30"])
        #expect(SmsSegments(message).encoding == .gsm7 && SmsSegments(message).segments == 1)
        // French accents (é, à) are in the GSM-7 alphabet; Spanish "ñ" is too but "á" (más) and
        // Portuguese "ã" (Amanhã) are not, so those messages go as UCS-2.
        let values = ["patient_name": "Ada", "facility_name": "X", "appointment_time": "9:00"]
        #expect(SmsSegments(try DefaultSmsTemplates.template(.oneDayReminder, language: "fr")!.render(values)).encoding == .gsm7)
        #expect(SmsSegments(try DefaultSmsTemplates.template(.oneDayReminder, language: "es")!.render(values)).encoding == .ucs2)
        #expect(SmsSegments(try DefaultSmsTemplates.template(.oneDayReminder, language: "pt")!.render(values)).encoding == .ucs2)
    }
}

import MessagingService
import Testing

/// Segment counting as carriers do it, table by table.
@Suite struct SmsSegmentsTests {
    /// (text, encoding, units, segments)
    static let cases: [(String, SmsSegments.Encoding, Int, Int)] = [
        ("", .gsm7, 0, 0),
        ("Your appointment is tomorrow at 09:00.", .gsm7, 38, 1),
        (String(repeating: "a", count: 160), .gsm7, 160, 1),
        (String(repeating: "a", count: 161), .gsm7, 161, 2),
        (String(repeating: "a", count: 306), .gsm7, 306, 2),
        (String(repeating: "a", count: 307), .gsm7, 307, 3),
        // Extended characters count twice.
        (String(repeating: "€", count: 80), .gsm7, 160, 1),
        (String(repeating: "€", count: 81), .gsm7, 162, 2),
        ("[1] {2} ~3~ |4| \\5 ^6", .gsm7, 31, 1),
        // An escape pair is never split: 152 plain then "€" moves to the next segment.
        (String(repeating: "a", count: 152) + "€" + String(repeating: "a", count: 10), .gsm7, 164, 2),
        (String(repeating: "a", count: 152) + "€" + String(repeating: "a", count: 152), .gsm7, 306, 3),
        // Accents of the default alphabet stay GSM-7; others make the text UCS-2.
        ("Rendez-vous à 9h, Ångström, Æsir, ¿qué?", .gsm7, 39, 1),
        ("Rappel : votre rendez-vous est demain à 9h ç", .ucs2, 44, 1),
        ("Привет", .ucs2, 6, 1),
        (String(repeating: "ж", count: 70), .ucs2, 70, 1),
        (String(repeating: "ж", count: 71), .ucs2, 71, 2),
        (String(repeating: "ж", count: 134), .ucs2, 134, 2),
        (String(repeating: "ж", count: 135), .ucs2, 135, 3),
        // An emoji is a surrogate pair: two units, never split.
        ("Merci 🙏", .ucs2, 8, 1),
        (String(repeating: "ж", count: 66) + "🙏" + "ж", .ucs2, 69, 1),
        (String(repeating: "ж", count: 66) + "🙏" + String(repeating: "ж", count: 5), .ucs2, 73, 2),
        // CR LF is one Character but two septets.
        ("a\r\nb", .gsm7, 4, 1),
    ]

    @Test("GSM-7 and UCS-2 units and segments", arguments: 0..<cases.count)
    func segments(_ i: Int) {
        let (text, encoding, units, segments) = Self.cases[i]
        let s = SmsSegments(text)
        #expect(s.encoding == encoding, "\(text.prefix(20))")
        #expect(s.units == units, "\(text.prefix(20))")
        #expect(s.segments == segments, "\(text.prefix(20))")
    }
}

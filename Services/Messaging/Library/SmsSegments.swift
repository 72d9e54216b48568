/// How many SMS segments a text takes, as carriers and Twilio count them.
///
/// A text made only of the GSM 03.38 default alphabet is sent as GSM-7: 160 septets in a single
/// message, 153 per segment once it is split (the rest of each segment carries the
/// concatenation header). The characters of the extension table (`^ { } \ [ ] ~ | €` and form
/// feed) are an escape plus a character: two septets, never split across segments. Anything
/// else makes the whole text UCS-2: 70 UTF-16 code units alone, 67 per segment, a surrogate
/// pair (an emoji) never split.
public struct SmsSegments: Sendable, Equatable {
    public enum Encoding: String, Sendable { case gsm7 = "GSM-7", ucs2 = "UCS-2" }

    public var encoding: Encoding
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    public var units: Int
    /// 0 for an empty text.
    public var segments: Int

    /// The GSM 03.38 default alphabet (one septet each; the escape itself excluded).
    static let basic: Set<Unicode.Scalar> = Set(
        "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
            .unicodeScalars)
    /// The extension table (an escape and a character: two septets each).
    static let extended: Set<Unicode.Scalar> = Set("^{}\\[~]|€\u{0C}".unicodeScalars)

    public init(_ text: String) {
        let scalars = Array(text.unicodeScalars)
        let gsm = scalars.allSatisfy { Self.basic.contains($0) || Self.extended.contains($0) }
        encoding = gsm ? .gsm7 : .ucs2
        // Each scalar's size in units; it must stay whole within one segment.
        let sizes = scalars.map { s in gsm ? (Self.extended.contains(s) ? 2 : 1) : (s.value > 0xFFFF ? 2 : 1) }
        units = sizes.reduce(0, +)
        let (single, multi) = gsm ? (160, 153) : (70, 67)
        if units == 0 {
            segments = 0
        } else if units <= single {
            segments = 1
        } else {
            var count = 1, used = 0
            for size in sizes {
                if used + size > multi {
                    count += 1
                    used = 0
                }
                used += size
            }
            segments = count
        }
    }
}

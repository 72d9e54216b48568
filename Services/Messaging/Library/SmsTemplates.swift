/// An SMS template: text with `{variable}` placeholders (lower-case letters, digits and
/// underscores). Rendering fills every placeholder or fails naming the missing ones; braces
/// that are not a placeholder are text.
public struct SmsTemplate: Sendable, Equatable {
    /// Seed 004's three reminder types.
    public enum Kind: String, Sendable, CaseIterable {
        case sevenDayReminder = "7_day_reminder"
        case oneDayReminder = "1_day_reminder"
        case overdueReminder = "overdue_reminder"
    }

    public var kind: Kind
    /// ISO 639-1.
    public var language: String
    public var text: String

    public init(_ kind: Kind, _ language: String, _ text: String) {
        self.kind = kind
        self.language = language
        self.text = text
    }

    public struct MissingVariables: Error, Equatable, CustomStringConvertible {
        public var names: [String]
        public init(names: [String]) { self.names = names }
        public var description: String { "missing template variables: \(names.joined(separator: ", "))" }
    }

    /// The placeholders, in order of first appearance.
    public var variables: [String] {
        var seen: [String] = []
        for part in Self.parts(text) { if case .variable(let name) = part, !seen.contains(name) { seen.append(name) } }
        return seen
    }

    /// The template's own length as the seed's `character_count` means it: characters of the
    /// text with its placeholders.
    public var characterCount: Int { text.count }

    /// Its name in `sms_templates` (seed 004's "7_day_reminder_en").
    public var name: String { kind.rawValue + "_" + language }

    /// The message: every placeholder replaced by its value.
    public func render(_ values: [String: String]) throws(MissingVariables) -> String {
        let missing = variables.filter { values[$0] == nil }
        guard missing.isEmpty else { throw MissingVariables(names: missing) }
        return Self.parts(text).map { part in
            switch part {
            case .text(let t): t
            case .variable(let name): values[name]!
            }
        }.joined()
    }

    enum Part: Equatable {
        case text(String)
        case variable(String)
    }

    static func parts(_ text: String) -> [Part] {
        var out: [Part] = []
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "{") {
            let afterOpen = rest.index(after: open)
            guard let close = rest[afterOpen...].firstIndex(of: "}") else { break }
            let name = rest[afterOpen..<close]
            if !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "_") }) {
                out.append(.text(String(rest[..<open])))
                out.append(.variable(String(name)))
            } else {
                out.append(.text(String(rest[...open])))
                rest = rest[afterOpen...]
                continue
            }
            rest = rest[rest.index(after: close)...]
        }
        out.append(.text(String(rest)))
        return out.filter { $0 != .text("") }
    }
}

/// The reminder templates CareMesh ships, in English, French, Spanish and Portuguese (seeded;
/// a language without its own falls back to English). Seed 004's three types and its
/// placeholders, worded for any appointment rather than only a vaccination (dispatch's
/// appointments are visits of every kind, and say nothing of a vaccine). Appointment reminders
/// fill `patient_name`, `facility_name`, `due_date` (the local date, YYYY-MM-DD),
/// `appointment_time` (local, HH:MM) and `days_overdue`.
public enum DefaultSmsTemplates {
    public static let all: [SmsTemplate] = [
        .init(.sevenDayReminder, "en",
              "Reminder: {patient_name} has an appointment at {facility_name} on {due_date} at {appointment_time}. Reply STOP to opt out."),
        .init(.oneDayReminder, "en",
              "Tomorrow: {patient_name}'s appointment at {facility_name}. Time: {appointment_time}. Reply STOP to opt out."),
        .init(.overdueReminder, "en",
              "Overdue: {patient_name}'s appointment was due {days_overdue} days ago. Please contact {facility_name}. Reply STOP to opt out."),
        .init(.sevenDayReminder, "fr",
              "Rappel : {patient_name} a rendez-vous à {facility_name} le {due_date} à {appointment_time}. Répondez STOP pour ne plus recevoir de SMS."),
        .init(.oneDayReminder, "fr",
              "Demain : rendez-vous de {patient_name} à {facility_name}, à {appointment_time}. Répondez STOP pour ne plus recevoir de SMS."),
        .init(.overdueReminder, "fr",
              "En retard : le rendez-vous de {patient_name} était prévu il y a {days_overdue} jours. Contactez {facility_name}. Répondez STOP pour ne plus recevoir de SMS."),
        .init(.sevenDayReminder, "es",
              "Recordatorio: {patient_name} tiene cita en {facility_name} el {due_date} a las {appointment_time}. Responda STOP para no recibir más."),
        .init(.oneDayReminder, "es",
              "Mañana: cita de {patient_name} en {facility_name}, a las {appointment_time}. Responda STOP para no recibir más."),
        .init(.overdueReminder, "es",
              "Atrasada: la cita de {patient_name} era hace {days_overdue} días. Contacte a {facility_name}. Responda STOP para no recibir más."),
        .init(.sevenDayReminder, "pt",
              "Lembrete: {patient_name} tem consulta em {facility_name} no dia {due_date} às {appointment_time}. Responda STOP para não receber mais."),
        .init(.oneDayReminder, "pt",
              "Amanhã: consulta de {patient_name} em {facility_name}, às {appointment_time}. Responda STOP para não receber mais."),
        .init(.overdueReminder, "pt",
              "Atrasada: a consulta de {patient_name} era há {days_overdue} dias. Contate {facility_name}. Responda STOP para não receber mais."),
    ]

    /// The template of `kind` in `language`, or in English.
    public static func template(_ kind: SmsTemplate.Kind, language: String) -> SmsTemplate? {
        all.first { $0.kind == kind && $0.language == language.lowercased() } ?? all.first { $0.kind == kind && $0.language == "en" }
    }
}

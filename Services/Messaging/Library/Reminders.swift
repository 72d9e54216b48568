import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO

/// When an appointment's reminders go out and the date words they carry, without I/O.
///
/// Seed 004's three: 7 days and 1 day before the start (each only while still ahead), and the
/// overdue reminder `overdueAfter` past the end, which the appointment's completion (or
/// cancellation) withdraws. Dates and times are the appointment's local ones, in its time zone.
public enum ReminderSchedule {
    public struct Reminder: Sendable, Equatable {
        public var kind: SmsTemplate.Kind
        public var at: Date
        /// The date placeholders: `due_date` (YYYY-MM-DD), `appointment_time` (HH:MM) and, for
        /// the overdue reminder, `days_overdue`.
        public var variables: [String: String]
    }

    public static func plan(start: Date, end: Date, timeZone: TimeZone, now: Date, overdueAfter: Duration) -> [Reminder] {
        let (date, time) = local(start, timeZone)
        let dated = ["due_date": date, "appointment_time": time]
        var out: [Reminder] = []
        let ahead: [(SmsTemplate.Kind, Double)] = [(.sevenDayReminder, 7 * 86_400), (.oneDayReminder, 86_400)]
        for (kind, seconds) in ahead {
            let at = start.addingTimeInterval(-seconds)
            if at > now { out.append(Reminder(kind: kind, at: at, variables: dated)) }
        }
        let overdue = end.addingTimeInterval(overdueAfter.seconds)
        var late = dated
        late["days_overdue"] = String(max(1, Int(overdue.timeIntervalSince(start) / 86_400)))
        out.append(Reminder(kind: .overdueReminder, at: overdue, variables: late))
        return out
    }

    /// The local date and time of `instant` in `zone`.
    static func local(_ instant: Date, _ zone: TimeZone) -> (date: String, time: String) {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute], from: instant)
        return (String(format: "%04d-%02d-%02d", c.year!, c.month!, c.day!), String(format: "%02d:%02d", c.hour!, c.minute!))
    }

    /// The reminder's client correlator: one message per appointment and type, so an event
    /// delivered twice queues nothing twice.
    public static func correlator(_ appointment: UUID, _ kind: SmsTemplate.Kind) -> String {
        "appointment:\(appointment.text):\(kind.rawValue)"
    }

    /// The two-letter language of a BCP 47 tag ("pt-BR" → "pt"), or nil.
    static func language(_ tag: String) -> String? {
        let first = tag.split(separator: "-").first.map { $0.lowercased() } ?? ""
        return first.wholeMatch(of: /[a-z]{2}/) != nil ? first : nil
    }
}

/// Appointment reminders from dispatch's events, each applied in the event consumer's
/// transaction. `AppointmentBooked` reads the patient's contact from identity
/// (`GetPatientContact`, audited there) and queues the reminders as scheduled SMS through the
/// one send path (template, consent, segments; the sender is woken once the consumer's
/// transaction commits); `AppointmentCancelled` cancels those still
/// queued, `AppointmentCompleted` the overdue one. A patient without a record, a phone or SMS
/// preference, or a number without consent gets no reminder (logged by appointment id only).
final class Reminders: Sendable {
    let desk: SmsDesk
    let client: RPCClient
    let configuration: MessagingConfiguration
    let logger: Logger

    init(desk: SmsDesk, client: RPCClient, configuration: MessagingConfiguration, logger: Logger) {
        self.desk = desk
        self.client = client
        self.configuration = configuration
        self.logger = logger
    }

    func apply(_ event: Event, _ c: PostgresConnection) async throws {
        let payload = Data(event.payload)
        switch event.type {
        case Caremesh_Dispatch_V1_AppointmentBooked.protoMessageName:
            try await booked(try Caremesh_Dispatch_V1_AppointmentBooked(serializedBytes: payload), on: c)
        case Caremesh_Dispatch_V1_AppointmentCancelled.protoMessageName:
            let e = try Caremesh_Dispatch_V1_AppointmentCancelled(serializedBytes: payload)
            try await withdraw(e.appointmentID, SmsTemplate.Kind.allCases, on: c)
        case Caremesh_Dispatch_V1_AppointmentCompleted.protoMessageName:
            let e = try Caremesh_Dispatch_V1_AppointmentCompleted(serializedBytes: payload)
            try await withdraw(e.appointmentID, [.overdueReminder], on: c)
        default:
            return
        }
    }

    func booked(_ e: Caremesh_Dispatch_V1_AppointmentBooked, on c: PostgresConnection) async throws {
        guard let appointment = UUID(uuidString: e.appointmentID), let patient = UUID(uuidString: e.patientID) else { return }
        let now = Date()
        let reminders = ReminderSchedule.plan(start: e.start.date, end: e.end.date, timeZone: TimeZone(identifier: e.timeZone) ?? .gmt,
                                              now: now, overdueAfter: configuration.overdueAfter)
        // An account booking for itself, with no record linked: nobody's contact to read.
        guard e.patientID != e.patientAccountID, let contact = try await contact(patient, appointment: appointment) else { return }
        for r in reminders {
            var variables = r.variables
            variables["patient_name"] = contact.fullName
            variables["facility_name"] = configuration.facilityName
            let plan = SmsDesk.SendPlan(
                correlator: ReminderSchedule.correlator(appointment, r.kind), to: contact.primaryPhone, patient: patient,
                type: r.kind.rawValue, template: r.kind, language: ReminderSchedule.language(contact.preferredLanguage),
                variables: variables, text: "", scheduledAt: r.at > now ? r.at : nil, callbackData: "appointment:\(appointment.text)")
            do {
                _ = try await desk.record(plan, by: MessagingService.actor, on: c)
            } catch let error as RPCError where Self.notSent.contains(error.code) {
                logger.notice("appointment reminder not queued", metadata: [
                    "appointment.id": "\(appointment.text)", "reminder": "\(r.kind.rawValue)", "code": "\(error.code)",
                ])
            }
        }
    }

    /// What keeps one reminder from being queued without failing the event: no consent, a
    /// template an admin broke (a missing variable), its correlator taken by another message.
    static let notSent: Set<StatusCode> = [.failedPrecondition, .invalidArgument, .alreadyExists]

    /// The patient's contact, or nil (logged) when there is none to text.
    func contact(_ patient: UUID, appointment: UUID) async throws -> Caremesh_Identity_V1_GetPatientContactResponse? {
        var request = Caremesh_Identity_V1_GetPatientContactRequest()
        request.patientID = patient.text
        request.purpose = .operations
        let contact: Caremesh_Identity_V1_GetPatientContactResponse
        do {
            contact = try await client.call(IdentityMethods.getPatientContact, request: request)
        } catch {
            // A patient id with no record at identity (an account booking for itself).
            guard error.code == .notFound else { throw error }
            logger.info("no appointment reminders", metadata: ["appointment.id": "\(appointment.text)", "why": "no patient record"])
            return nil
        }
        if contact.smsPreferred, !contact.primaryPhone.isEmpty { return contact }
        logger.info("no appointment reminders", metadata: ["appointment.id": "\(appointment.text)", "why": "the patient does not take SMS"])
        return nil
    }

    /// Cancels the appointment's reminders of `kinds` still queued.
    func withdraw(_ appointmentID: String, _ kinds: [SmsTemplate.Kind], on c: PostgresConnection) async throws {
        guard let appointment = UUID(uuidString: appointmentID) else { return }
        _ = try await desk.cancelQueued(correlators: kinds.map { ReminderSchedule.correlator(appointment, $0) }, on: c)
    }
}

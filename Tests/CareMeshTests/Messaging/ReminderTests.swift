import CareMeshContracts
import CareMeshRPC
import CareMeshTesting
import Foundation
import MessagingService
import PostgresNIO
import SwiftProtobuf
import Testing

/// Appointment reminders end to end: identity (the patient's contact), dispatch (the booking
/// and its events) and messaging (the scheduled SMS), through a router that requires tokens.
extension SmsTests {
    struct Reminder: Sendable {
        let id: String
        let type: String
        let status: String
        let due: Date
        let body: String
    }

    /// The SMS queued for `appointment`, soonest due first.
    static func reminders(_ s: Stack, _ appointment: String) async throws -> [Reminder] {
        try await s.db.sql("""
            SELECT id::text, message_type, status, extract(epoch FROM next_attempt_at)::float8, message_content
            FROM messaging.sms_messages WHERE callback_data = \("appointment:" + appointment) ORDER BY next_attempt_at, id
            """).map {
            let (id, type, status, due, body) = try $0.decode((String, String, String, Double, String).self)
            return Reminder(id: id, type: type, status: status, due: Date(timeIntervalSince1970: due), body: body)
        }
    }

    /// The doctor sees patients all day, every day, in Paris.
    static func openAllWeek(_ s: Stack, _ doctor: TestAccount) async throws {
        let week: [Caremesh_Dispatch_V1_Weekday] = [.monday, .tuesday, .wednesday, .thursday, .friday, .saturday, .sunday]
        var schedule = Caremesh_Dispatch_V1_SetScheduleRequest()
        schedule.timeZone = "Europe/Paris"
        schedule.windows = week.map { day in
            var w = Caremesh_Dispatch_V1_AvailabilityWindow()
            w.weekday = day
            w.start = "00:00"
            w.end = "24:00"
            return w
        }
        _ = try await s.client.call(DispatchMethods.setSchedule, request: schedule, options: doctor.auth)
    }

    @Test func aBookedAppointmentSchedulesRemindersThatCancellationAndCompletionWithdraw() async throws {
        try await withStack(["MESSAGING_FACILITY_NAME": "Clinique du Parc", "MESSAGING_OVERDUE_AFTER_HOURS": "24"], dispatch: true) { s in
            let doctor = try await TestAccount.make(s.client, s.db, role: "professional")
            // A patient record at identity: French, texts preferred; the number consented.
            let phone = Self.phone()
            var create = Caremesh_Identity_V1_CreatePatientRequest()
            create.patient.kind = .patient
            create.patient.fullName = "Ana Lima"
            create.patient.primaryPhone = phone
            create.patient.preferredLanguage = "fr-FR"
            create.patient.smsPreferred = true
            create.purpose = .treatment
            let patient = try await s.client.call(IdentityMethods.createPatient, request: create, options: s.admin.auth).patient
            try await s.consent(phone, true)
            try await Self.openAllWeek(s, doctor)
            func book(_ start: Date, for patientID: String = patient.id) async throws -> Caremesh_Dispatch_V1_Appointment {
                try await s.client.call(DispatchMethods.bookAppointment, request: .with {
                    $0.practitionerID = doctor.id.uuidString
                    $0.patientID = patientID
                    $0.start = Google_Protobuf_Timestamp(date: start)
                    $0.reason = "vaccination"
                    $0.purpose = .personRequest
                }, options: s.admin.auth).appointment
            }
            func waitFor(_ appointment: String, count: Int, where ok: @escaping @Sendable ([Reminder]) -> Bool = { _ in true }) async throws -> [Reminder] {
                try await TestStack.eventually(timeout: .seconds(15)) {
                    let found = try await Self.reminders(s, appointment)
                    guard found.count == count, ok(found) else { throw RPCError(.failedPrecondition, "\(found.count) reminders so far") }
                    return found
                }
            }
            let halfHour = 1_800.0
            let soonest = (Date().timeIntervalSince1970 / halfHour).rounded(.up) * halfHour

            // Ten days ahead: 7 days before, 1 day before, and the overdue one a day after the end.
            let start = Date(timeIntervalSince1970: soonest + 10 * 86_400)
            // Her record is linked to her own account (by the front desk, with a purpose): an
            // appointment booked for the record gets both the reminders and a conversation.
            let ana = try await TestAccount.make(s.client, s.db, role: "user")
            _ = try await s.client.call(IdentityMethods.linkPatientAccount, request: .with {
                $0.patientID = patient.id
                $0.accountID = ana.id.uuidString
                $0.purpose = .personRequest
            }, options: s.admin.auth)
            let first = try await book(start)
            #expect(first.patientID == patient.id && first.patientAccountID == ana.id.uuidString.lowercased())
            let queued = try await waitFor(first.id, count: 3)
            let talk = try await TestStack.eventually(timeout: .seconds(15)) {
                let found = try await Self.conversations(s, ana)
                guard found.count == 1 else { throw RPCError(.notFound, "no conversation yet") }
                return found[0]
            }
            #expect(talk.patientID == ana.id.uuidString.lowercased() && talk.practitionerID == doctor.id.uuidString.lowercased())
            #expect(queued.map(\.type) == ["7_day_reminder", "1_day_reminder", "overdue_reminder"])
            #expect(queued.map(\.status) == ["scheduled", "scheduled", "scheduled"])
            #expect(queued.map(\.due) == [start.addingTimeInterval(-7 * 86_400), start.addingTimeInterval(-86_400),
                                          start.addingTimeInterval(halfHour + 86_400)])
            // In the patient's language, with the local date and time in the practice's zone.
            var paris = Calendar(identifier: .gregorian)
            paris.timeZone = TimeZone(identifier: "Europe/Paris")!
            let local = paris.dateComponents([.year, .month, .day, .hour, .minute], from: start)
            let date = String(format: "%04d-%02d-%02d", local.year!, local.month!, local.day!)
            let time = String(format: "%02d:%02d", local.hour!, local.minute!)
            #expect(queued[0].body == "Rappel : Ana Lima a rendez-vous à Clinique du Parc le \(date) à \(time). Répondez STOP pour ne plus recevoir de SMS.")
            #expect(queued[1].body.hasPrefix("Demain : rendez-vous de Ana Lima à Clinique du Parc, à \(time)."))
            #expect(queued[2].body.hasPrefix("En retard : le rendez-vous de Ana Lima était prévu il y a 1 jours."))
            // The contact read is in identity's audit trail, the service as its actor.
            let audit = try await s.client.call(IdentityMethods.listAuditEntries, request: .with { $0.recordID = patient.id }, options: s.admin.auth)
            #expect(audit.entries.contains { $0.actorID == "service:messaging" && $0.action == "READ" && $0.purpose == .operations })
            // No other service and no person may read contacts that way.
            #expect(await statusCode {
                _ = try await s.client.call(IdentityMethods.getPatientContact, request: .with {
                    $0.patientID = patient.id
                    $0.purpose = .operations
                }, options: s.admin.auth)
            } == .permissionDenied)

            // Cancelled: all three withdrawn, each announced.
            _ = try await s.client.call(DispatchMethods.cancelAppointment, request: .with { $0.id = first.id; $0.purpose = .operations }, options: s.admin.auth)
            _ = try await waitFor(first.id, count: 3) { $0.allSatisfy { $0.status == "cancelled" } }
            #expect(try await s.count("""
                SELECT count(*) FROM messaging.outbox o JOIN messaging.sms_messages m ON o.key = m.id::text
                WHERE o.type = 'caremesh.messaging.v1.SmsStatusChanged' AND m.callback_data = \("appointment:" + first.id)
                """) == 3)

            // Two hours ahead: too close for the 7-day and 1-day ones, only the overdue one.
            let second = try await book(Date(timeIntervalSince1970: soonest + 2 * 3_600))
            let overdue = try await waitFor(second.id, count: 1)
            #expect(overdue.map(\.type) == ["overdue_reminder"])
            // It took place (the clock moved on: the appointment is put in the past) and is
            // completed: the overdue reminder is withdrawn.
            _ = try await s.db.sql("""
                UPDATE dispatch.appointments SET during = tstzrange(now() - interval '2 hours', now() - interval '90 minutes')
                WHERE id = \(UUID(uuidString: second.id)!)
                """)
            _ = try await s.client.call(DispatchMethods.confirmAppointment, request: .with { $0.id = second.id; $0.purpose = .treatment }, options: s.admin.auth)
            _ = try await s.client.call(DispatchMethods.completeAppointment, request: .with { $0.id = second.id; $0.purpose = .treatment }, options: s.admin.auth)
            _ = try await waitFor(second.id, count: 1) { $0.first?.status == "cancelled" }

            // Not completed: when its time comes (moved to now here), the overdue reminder goes out.
            let third = try await book(Date(timeIntervalSince1970: soonest + 3 * 3_600))
            let missed = try await waitFor(third.id, count: 1)
            _ = try await s.db.sql("UPDATE messaging.sms_messages SET next_attempt_at = now() WHERE id = \(UUID(uuidString: missed[0].id)!)")
            let sent = try await s.until(missed[0].id, is: .delivered)
            #expect(sent.messageType == .overdueReminder && sent.to == phone && sent.language == "fr")
            #expect(s.sandbox.received.map(\.body) == [missed[0].body])

            // A patient who does not take texts, an account booking for itself (no patient
            // record), a number without consent: booked, but no reminder.
            var quiet = create
            quiet.patient.fullName = "Marc Roy"
            quiet.patient.primaryPhone = Self.phone()
            quiet.patient.smsPreferred = false
            let quietPatient = try await s.client.call(IdentityMethods.createPatient, request: quiet, options: s.admin.auth).patient
            let unreminded = try await book(start, for: quietPatient.id)
            // One who takes texts but whose number never consented: refused by the send path.
            var unconsented = create
            unconsented.patient.fullName = "Léa Petit"
            unconsented.patient.primaryPhone = Self.phone()
            let noConsentPatient = try await s.client.call(IdentityMethods.createPatient, request: unconsented, options: s.admin.auth).patient
            let noConsent = try await book(start.addingTimeInterval(2 * halfHour), for: noConsentPatient.id)
            let own = try await s.client.call(DispatchMethods.bookAppointment, request: .with {
                $0.practitionerID = doctor.id.uuidString
                $0.start = Google_Protobuf_Timestamp(date: start.addingTimeInterval(halfHour))
            }, options: s.admin.auth).appointment
            // The three events were applied (messaging's cursor passed them) and queued nothing.
            let cursor = try await s.db.sql("SELECT max(seq) FROM dispatch.outbox")[0].decode(Int64.self)
            _ = try await TestStack.eventually(timeout: .seconds(15)) {
                let at = try await s.db.sql("SELECT coalesce(max(position), 0) FROM messaging.event_cursors WHERE source = 'dispatch'")[0].decode(Int64.self)
                if at < cursor { throw RPCError(.failedPrecondition, "messaging is at \(at) of \(cursor)") }
            }
            #expect(try await Self.reminders(s, unreminded.id).isEmpty)
            #expect(try await Self.reminders(s, own.id).isEmpty)
            #expect(try await Self.reminders(s, noConsent.id).isEmpty)
        }
    }

    @Test func theReminderScheduleWithoutIO() throws {
        let start = try #require(ISO8601DateFormatter().date(from: "2026-03-29T07:30:00Z"))
        let end = start.addingTimeInterval(1_800)
        let paris = try #require(TimeZone(identifier: "Europe/Paris"))
        // Paris moved to summer time that morning: 07:30Z is 09:30 there.
        let all = ReminderSchedule.plan(start: start, end: end, timeZone: paris, now: start.addingTimeInterval(-30 * 86_400), overdueAfter: .seconds(86_400))
        #expect(all.map(\.kind) == [.sevenDayReminder, .oneDayReminder, .overdueReminder])
        #expect(all.map(\.at) == [start.addingTimeInterval(-7 * 86_400), start.addingTimeInterval(-86_400), end.addingTimeInterval(86_400)])
        #expect(all[0].variables == ["due_date": "2026-03-29", "appointment_time": "09:30"])
        #expect(all[2].variables["days_overdue"] == "1")
        // Only what is still ahead; the overdue one always (three days late here).
        let late = ReminderSchedule.plan(start: start, end: end, timeZone: .gmt, now: start.addingTimeInterval(-3_600), overdueAfter: .seconds(3 * 86_400))
        #expect(late.map(\.kind) == [.overdueReminder])
        #expect(late[0].variables == ["due_date": "2026-03-29", "appointment_time": "07:30", "days_overdue": "3"])
        let id = UUID()
        #expect(ReminderSchedule.correlator(id, .oneDayReminder) == "appointment:\(id.uuidString.lowercased()):1_day_reminder")
    }
}

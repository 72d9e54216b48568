import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import DispatchService
import Foundation
import PostgresNIO
import SwiftProtobuf
import Testing

/// Appointments through the router (the same stack as `DispatchTests`).
extension DispatchTests {
    static func at(_ iso: String) -> Google_Protobuf_Timestamp {
        Google_Protobuf_Timestamp(date: ISO8601DateFormatter().date(from: iso)!)
    }

    /// Midnight UTC of the next second Sunday of March (when New York moves its clocks
    /// forward) whose Friday before is at least a day away: the test never ages.
    static func nextUSDaylightSavingSunday(after now: Date = Date()) -> Date {
        var utc = Calendar(identifier: .gregorian)
        utc.timeZone = TimeZone(identifier: "UTC")!
        var year = utc.component(.year, from: now)
        while true {
            let march = utc.date(from: DateComponents(year: year, month: 3, day: 1))!
            let untilSunday = (8 - utc.component(.weekday, from: march)) % 7  // weekday 1 = Sunday
            let sunday = utc.date(byAdding: .day, value: untilSunday + 7, to: march)!
            if sunday.addingTimeInterval(-2 * 86_400) > now.addingTimeInterval(86_400) { return sunday }
            year += 1
        }
    }

    /// The next `weekday` (1 = Sunday) at midnight UTC, at least two days away.
    static func next(weekday: Int, after now: Date = Date()) -> Date {
        var utc = Calendar(identifier: .gregorian)
        utc.timeZone = TimeZone(identifier: "UTC")!
        var day = utc.startOfDay(for: now.addingTimeInterval(2 * 86_400))
        while utc.component(.weekday, from: day) != weekday { day = utc.date(byAdding: .day, value: 1, to: day)! }
        return day
    }

    func reason(_ body: () async throws -> Void) async -> String? {
        do { try await body(); return nil } catch let e as RPCError { return e.reason ?? e.code.name } catch { return "not an RPCError" }
    }

    @Test("schedules in a time zone across DST, blocked times, free slots, booking rules, and the lifecycle with its events")
    func appointments() async throws {
        try await withStack { s in
            let doctor = try await account(s, "professional"), other = try await account(s, "professional")
            let patient = try await account(s, "user"), stranger = try await account(s, "user")
            let desk = try await account(s, "coordinator")
            func call<Q, A>(_ m: RPCMethod<Q, A>, _ who: Account, _ r: Q) async throws -> A {
                try await s.client.call(m, request: r, options: who.auth)
            }
            func window(_ day: Caremesh_Dispatch_V1_Weekday, _ start: String, _ end: String) -> Caremesh_Dispatch_V1_AvailabilityWindow {
                .with { $0.weekday = day; $0.start = start; $0.end = end }
            }
            let weekdays: [Caremesh_Dispatch_V1_Weekday] = [.monday, .tuesday, .wednesday, .thursday, .friday]

            // Bad schedules: the fields named, nothing written. Only practitioners have one.
            #expect(await violations {
                _ = try await call(DispatchMethods.setSchedule, doctor, .with {
                    $0.timeZone = "Mars/Olympus"
                    $0.windows = [window(.monday, "09:00", "12:00")]
                })
            } == ["time_zone"])
            #expect(await violations {
                _ = try await call(DispatchMethods.setSchedule, doctor, .with {
                    $0.timeZone = "America/New_York"
                    $0.slotMinutes = 2
                    $0.windows = [window(.monday, "09:00", "12:00"), window(.monday, "11:00", "13:00"), window(.tuesday, "25:00", "26:00")]
                })
            } == ["slot_minutes", "windows[1]", "windows[2].start", "windows[2].end"])
            #expect(await code { _ = try await call(DispatchMethods.setSchedule, patient, .with { $0.timeZone = "UTC" }) } == .permissionDenied)
            #expect(await code {
                _ = try await call(DispatchMethods.setSchedule, other, .with { $0.practitionerID = doctor.id.uuidString; $0.timeZone = "UTC" })
            } == .permissionDenied)
            #expect(try await s.count("SELECT count(*) FROM dispatch.practitioner_schedules") == 0)

            // Weekday mornings in New York; the desk sets up the other practitioner in London.
            let schedule = try await call(DispatchMethods.setSchedule, doctor, .with {
                $0.timeZone = "America/New_York"
                $0.windows = weekdays.map { window($0, "09:00", "12:00") }
            }).schedule
            #expect(schedule.slotMinutes == 30 && schedule.windows.count == 5 && schedule.windows[0].start == "09:00")
            _ = try await call(DispatchMethods.setSchedule, desk, .with {
                $0.practitionerID = other.id.uuidString
                $0.timeZone = "Europe/London"
                $0.windows = weekdays.map { window($0, "09:00", "17:00") }
            })

            // Friday to Tuesday around the Sunday New York moves its clocks forward: 09:00 there
            // is 14:00Z on the Friday and 13:00Z on the Monday. Six slots a weekday.
            let sunday = Self.nextUSDaylightSavingSunday()
            func t(_ day: Int, _ hour: Int, _ minute: Int = 0) -> Google_Protobuf_Timestamp {
                Google_Protobuf_Timestamp(date: sunday.addingTimeInterval(Double(day * 86_400 + hour * 3_600 + minute * 60)))
            }
            let from = t(-2, 5), to = t(3, 4)
            func free() async throws -> [Date] {
                try await call(DispatchMethods.findFreeSlots, stranger, .with {
                    $0.practitionerID = doctor.id.uuidString
                    $0.from = from
                    $0.to = to
                }).slots.map(\.start.date)
            }
            let slots = try await free()
            #expect(slots.count == 18)
            #expect(slots.first == t(-2, 14).date)
            #expect(slots[6] == t(1, 13).date && slots[5] == t(-2, 16, 30).date)
            #expect(await violations {
                _ = try await call(DispatchMethods.findFreeSlots, stranger, .with {
                    $0.practitionerID = doctor.id.uuidString
                    $0.from = from
                    $0.to = t(40, 0)
                })
            } == ["to"])

            // Tuesday 10:00–11:00 blocked: two slots fewer, and only the practice sees why.
            let blocked = try await call(DispatchMethods.addBlockedTime, doctor, .with {
                $0.start = t(2, 14)
                $0.end = t(2, 15)
                $0.reason = "training"
            }).blocked
            #expect(try await free().count == 16)
            #expect(try await call(DispatchMethods.getSchedule, doctor, .init()).blocked.map(\.id) == [blocked.id])
            #expect(try await call(DispatchMethods.getSchedule, patient, .with { $0.practitionerID = doctor.id.uuidString }).blocked.isEmpty)

            // Booking: the patient for themself, inside the hours, not blocked, not past.
            func book(_ who: Account, _ start: Google_Protobuf_Timestamp, for patientID: UUID? = nil, minutes: UInt32 = 0, with practitioner: Account? = nil,
                      purpose: Caremesh_Identity_V1_AccessPurpose = .unspecified) async throws -> Caremesh_Dispatch_V1_Appointment
            {
                try await call(DispatchMethods.bookAppointment, who, .with {
                    $0.practitionerID = (practitioner ?? doctor).id.uuidString
                    if let patientID { $0.patientID = patientID.uuidString }
                    $0.start = start
                    $0.durationMinutes = minutes
                    $0.reason = "check-up"
                    $0.purpose = purpose
                }).appointment
            }
            let friday = try await book(patient, t(-2, 14))
            #expect(friday.status == .pending && friday.end.date.timeIntervalSince(friday.start.date) == 1_800)
            #expect(friday.timeZone == "America/New_York" && friday.bookedBy == patient.id.uuidString.lowercased())
            #expect(friday.patientID == patient.id.text && friday.patientAccountID == patient.id.text)
            #expect(try await free().count == 15)
            #expect(await reason { _ = try await book(stranger, t(-2, 14, 15)) } == "SLOT_TAKEN")
            #expect(await reason { _ = try await book(stranger, t(-2, 18)) } == "OUTSIDE_HOURS")
            #expect(await reason { _ = try await book(stranger, t(-2, 16, 45)) } == "OUTSIDE_HOURS")  // runs past 12:00
            #expect(await reason { _ = try await book(stranger, t(2, 14, 30)) } == "BLOCKED")
            #expect(await reason { _ = try await book(stranger, t(-1, 14)) } == "OUTSIDE_HOURS")  // a Saturday
            #expect(await reason { _ = try await book(patient, t(-2, 14), with: other) } == "PATIENT_BUSY")
            #expect(await violations { _ = try await book(stranger, Self.at("2020-01-06T14:00:00Z")) } == ["start"])
            #expect(await violations { _ = try await book(stranger, t(1, 13), minutes: 600) } == ["duration_minutes"])
            #expect(await code { _ = try await book(patient, t(1, 13), for: stranger.id) } == .permissionDenied)
            #expect(await reason {
                _ = try await call(DispatchMethods.addBlockedTime, doctor, .with {
                    $0.start = t(-2, 13)
                    $0.end = t(-2, 15)
                })
            } == "APPOINTMENTS_IN_THE_WAY")
            #expect(try await s.count("SELECT count(*) FROM dispatch.appointments") == 1)
            #expect(try await s.count("SELECT count(*) FROM dispatch.blocked_times") == 1)

            // The lifecycle: the practice confirms; completing waits for the start; anyone party
            // to it cancels, which frees the slot; strangers see nothing.
            let ref = friday.id
            #expect(await code { _ = try await call(DispatchMethods.confirmAppointment, patient, .with { $0.id = ref }) } == .permissionDenied)
            // Someone else's appointment does not exist for a stranger; staff must say why.
            #expect(await code { _ = try await call(DispatchMethods.getAppointment, stranger, .with { $0.id = ref }) } == .notFound)
            #expect(await violations { _ = try await call(DispatchMethods.getAppointment, desk, .with { $0.id = ref }) } == ["purpose"])
            let confirmed = try await call(DispatchMethods.confirmAppointment, doctor, .with { $0.id = ref }).appointment
            #expect(confirmed.status == .confirmed && confirmed.hasConfirmedAt)
            #expect(await violations { _ = try await call(DispatchMethods.confirmAppointment, desk, .with { $0.id = ref }) } == ["purpose"])
            #expect(try await call(DispatchMethods.confirmAppointment, desk, .with { $0.id = ref; $0.purpose = .operations }).appointment == confirmed)
            #expect(await reason { _ = try await call(DispatchMethods.completeAppointment, doctor, .with { $0.id = ref }) }
                == "APPOINTMENT_NOT_STARTED")
            let cancelled = try await call(DispatchMethods.cancelAppointment, patient, .with { $0.id = ref; $0.reason = "feeling better" })
                .appointment
            #expect(cancelled.status == .cancelled && cancelled.cancelReason == "feeling better")
            #expect(try await free().count == 16)
            #expect(await violations { _ = try await book(desk, t(-2, 14), for: stranger.id) } == ["purpose"])
            let rebooked = try await book(desk, t(-2, 14), for: stranger.id, purpose: .personRequest)
            #expect(rebooked.patientID == stranger.id.uuidString.lowercased() && rebooked.bookedBy == desk.id.uuidString.lowercased())
            #expect(rebooked.patientAccountID == stranger.id.text)
            // A patient id that names nobody at identity: NOT_FOUND naming the field, nothing written.
            let before = try await s.count("SELECT count(*) FROM dispatch.appointments")
            #expect(await code { _ = try await book(desk, t(1, 15), for: UUID(), purpose: .personRequest) } == .notFound)
            #expect(await violations { _ = try await book(desk, t(1, 15), for: UUID(), purpose: .personRequest) } == ["patient_id"])
            #expect(try await s.count("SELECT count(*) FROM dispatch.appointments") == before)

            // Unblocking is the practice's; Tuesday's two slots come back; a second removal is NOT_FOUND.
            #expect(await code { _ = try await call(DispatchMethods.removeBlockedTime, patient, .with { $0.id = blocked.id }) } == .permissionDenied)
            _ = try await call(DispatchMethods.removeBlockedTime, doctor, .with { $0.id = blocked.id })
            #expect(try await free().count == 17)
            #expect(await code { _ = try await call(DispatchMethods.removeBlockedTime, doctor, .with { $0.id = blocked.id }) } == .notFound)

            // One that has started: the practice completes it; then it cannot be cancelled.
            let pastID = try await s.sql("""
                INSERT INTO dispatch.appointments (practitioner_id, patient_id, patient_account_id, during, status, booked_by, confirmed_at)
                VALUES (\(doctor.id), \(patient.id), \(patient.id), tstzrange(now() - interval '20 minutes', now() + interval '10 minutes'),
                        'CONFIRMED', \(patient.id), now())
                RETURNING id
                """).first!.decode(UUID.self).uuidString
            let completed = try await call(DispatchMethods.completeAppointment, doctor, .with { $0.id = pastID }).appointment
            #expect(completed.status == .completed)
            #expect(await reason { _ = try await call(DispatchMethods.cancelAppointment, patient, .with { $0.id = pastID }) }
                == "APPOINTMENT_COMPLETED")

            // Lists: each sees their own; staff may ask for anyone's.
            let window = Caremesh_Dispatch_V1_ListAppointmentsRequest.with { $0.from = Google_Protobuf_Timestamp(date: Date().addingTimeInterval(-86_400)); $0.to = t(20, 0) }
            let mine = try await call(DispatchMethods.listAppointments, patient, window).appointments
            #expect(mine.map(\.id) == [pastID.lowercased(), ref])
            #expect(try await call(DispatchMethods.listAppointments, doctor, window).appointments.count == 3)
            var live = window
            live.statuses = [.pending, .confirmed]
            #expect(try await call(DispatchMethods.listAppointments, doctor, live).appointments.map(\.id) == [rebooked.id])
            var theirs = window
            theirs.patientID = stranger.id.uuidString
            #expect(await code { _ = try await call(DispatchMethods.listAppointments, patient, theirs) } == .permissionDenied)
            #expect(await violations { _ = try await call(DispatchMethods.listAppointments, desk, theirs) } == ["purpose"])
            theirs.purpose = .careCoordination
            #expect(try await call(DispatchMethods.listAppointments, desk, theirs).appointments.map(\.id) == [rebooked.id])
            // Without a purpose the desk sees only its own (none).
            #expect(try await call(DispatchMethods.listAppointments, desk, window).appointments.isEmpty)

            // Events for reminders: one per booking, one per cancellation.
            #expect(try await s.count("SELECT count(*) FROM dispatch.outbox WHERE type = 'caremesh.dispatch.v1.AppointmentBooked'") == 2)
            #expect(try await s.count("SELECT count(*) FROM dispatch.outbox WHERE type = 'caremesh.dispatch.v1.AppointmentCancelled'") == 1)
        }
    }

    @Test("double booking is refused by the database: 30 concurrent bookings of one slot make one appointment")
    func doubleBooking() async throws {
        try await withStack { s in
            let doctor = try await account(s, "professional"), desk = try await account(s, "coordinator")
            _ = try await s.client.call(DispatchMethods.setSchedule, request: .with {
                $0.timeZone = "UTC"
                $0.windows = [.with { $0.weekday = .wednesday; $0.start = "08:00"; $0.end = "18:00" }]
            }, options: doctor.auth)
            // 30 patients at once, the front desk booking each for 30 minutes at 10:00, or at
            // 10:10 or 10:20 (overlapping, not equal).
            let wednesday = Self.next(weekday: 4)
            let starts = [0, 10, 20].map { Google_Protobuf_Timestamp(date: wednesday.addingTimeInterval(Double(10 * 3_600 + $0 * 60))) }
            var patients: [String] = []
            for i in 0..<30 {
                patients.append(try await s.client.call(IdentityMethods.createPatient, request: .with {
                    $0.patient.kind = .patient
                    $0.patient.fullName = "Patient \(i)"
                    $0.purpose = .treatment
                }, options: desk.auth).patient.id)
            }
            let all = await withTaskGroup(of: StatusCode?.self) { group in
                for i in 0..<30 {
                    let request = Caremesh_Dispatch_V1_BookAppointmentRequest.with {
                        $0.practitionerID = doctor.id.uuidString
                        $0.patientID = patients[i]
                        $0.start = starts[i % 3]
                        $0.purpose = .personRequest
                    }
                    group.addTask { await code { _ = try await s.client.call(DispatchMethods.bookAppointment, request: request, options: desk.auth) } }
                }
                return await group.reduce(into: [StatusCode?]()) { $0.append($1) }
            }
            #expect(all.filter { $0 == nil }.count == 1)
            #expect(all.filter { $0 == .failedPrecondition }.count == 29)
            #expect(try await s.count("SELECT count(*) FROM dispatch.appointments") == 1)

            // The constraint itself, without the service: an overlapping row is refused by
            // PostgreSQL; a cancelled one may overlap.
            var refused: String?
            do {
                _ = try await s.sql("""
                    INSERT INTO dispatch.appointments (practitioner_id, patient_id, during, booked_by)
                    VALUES (\(doctor.id), \(UUID()), tstzrange(\(wednesday.addingTimeInterval(37_500)), \(wednesday.addingTimeInterval(38_100))), \(desk.id))
                    """)
            } catch { refused = PSQLError.violation(in: error)?.constraint }
            #expect(refused == "appointments_practitioner_free")
            _ = try await s.sql("""
                INSERT INTO dispatch.appointments (practitioner_id, patient_id, during, booked_by, status, cancelled_at)
                VALUES (\(doctor.id), \(UUID()), tstzrange(\(wednesday.addingTimeInterval(37_500)), \(wednesday.addingTimeInterval(38_100))), \(desk.id), 'CANCELLED', now())
                """)
        }
    }
}

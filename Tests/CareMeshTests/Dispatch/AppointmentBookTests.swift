import CareMeshContracts
import CareMeshRPC
import DispatchService
import Foundation
import Testing

/// The appointment lifecycle and weekly hours, without I/O.
@Suite struct AppointmentBookTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func outcome(_ action: AppointmentAction, _ state: AppointmentState, _ relation: AppointmentRelation,
                 startsIn seconds: TimeInterval = 3_600) -> Result<AppointmentState?, RPCError> {
        Result { () throws(RPCError) in
            try AppointmentLifecycle.apply(action, to: state, by: relation, startsAt: now.addingTimeInterval(seconds), now: now)
        }
    }

    func code(_ r: Result<AppointmentState?, RPCError>) -> StatusCode? {
        if case .failure(let e) = r { return e.code }
        return nil
    }

    @Test("pending → confirmed → completed once started; pending or confirmed → cancelled; repeats change nothing")
    func transitions() throws {
        #expect(try outcome(.confirm, .pending, .practitioner).get() == .confirmed)
        #expect(try outcome(.confirm, .pending, .staff).get() == .confirmed)
        #expect(try outcome(.complete, .confirmed, .practitioner, startsIn: -60).get() == .completed)
        #expect(try outcome(.complete, .confirmed, .staff, startsIn: 0).get() == .completed)
        for state in [AppointmentState.pending, .confirmed] {
            for who in [AppointmentRelation.patient, .practitioner, .staff] {
                #expect(try outcome(.cancel, state, who).get() == .cancelled)
            }
        }
        // Done already: no change, no error (safe retries).
        #expect(try outcome(.confirm, .confirmed, .practitioner).get() == nil)
        #expect(try outcome(.cancel, .cancelled, .patient).get() == nil)
        #expect(try outcome(.complete, .completed, .practitioner, startsIn: -60).get() == nil)
    }

    @Test("every other (action, state) pair is FAILED_PRECONDITION; completing before the start too")
    func wrongMoments() {
        let legal: [AppointmentAction: Set<AppointmentState>] = [
            .confirm: [.pending, .confirmed], .cancel: [.pending, .confirmed, .cancelled], .complete: [.confirmed, .completed],
        ]
        for (action, states) in legal {
            for state in AppointmentState.allCases {
                let r = outcome(action, state, [.practitioner, .patient], startsIn: -60)
                #expect(code(r) == (states.contains(state) ? nil : .failedPrecondition), "\(action) in \(state)")
            }
        }
        #expect(code(outcome(.complete, .confirmed, .practitioner, startsIn: 60)) == .failedPrecondition)
    }

    @Test("strangers may do nothing; patients may not confirm or complete")
    func who() {
        for action in [AppointmentAction.confirm, .cancel, .complete] {
            for state in AppointmentState.allCases {
                #expect(code(outcome(action, state, [])) == .permissionDenied)
            }
        }
        #expect(code(outcome(.confirm, .pending, .patient)) == .permissionDenied)
        #expect(code(outcome(.complete, .confirmed, .patient, startsIn: -60)) == .permissionDenied)
        // A practitioner who is also the patient acts as the practice.
        #expect(code(outcome(.confirm, .pending, [.patient, .practitioner])) == nil)
    }

    @Test("live states hold time; the wire's status maps both ways")
    func states() {
        #expect(AppointmentState.allCases.filter(\.isLive) == [.pending, .confirmed])
        for s in AppointmentState.allCases { #expect(AppointmentState(proto: s.proto) == s) }
        #expect(AppointmentState(proto: .unspecified) == nil)
    }

    @Test("HH:MM times: 00:00 to 24:00, nothing else")
    func times() {
        #expect(WeeklyHours.minutes("00:00") == 0)
        #expect(WeeklyHours.minutes("09:30") == 570)
        #expect(WeeklyHours.minutes("24:00") == 1_440)
        for bad in ["24:01", "25:00", "9:30", "09:60", "09:30:00", "", "ab:cd", " 09:30"] {
            #expect(WeeklyHours.minutes(bad) == nil, "\(bad)")
        }
        #expect(WeeklyHours.text(570) == "09:30")
        #expect(WeeklyHours.text(1_440) == "24:00")
    }

    func window(_ day: Caremesh_Dispatch_V1_Weekday, _ start: String, _ end: String) -> Caremesh_Dispatch_V1_AvailabilityWindow {
        .with { $0.weekday = day; $0.start = start; $0.end = end }
    }

    @Test("windows: sorted by day and time; bad days, bad times, empty and overlapping windows are named")
    func windows() {
        var v = FieldViolations()
        let ok = WeeklyHours.validate([window(.tuesday, "14:00", "18:00"), window(.monday, "09:00", "12:00"),
                                       window(.tuesday, "08:00", "14:00"), window(.sunday, "22:00", "24:00")], into: &v)
        #expect(v.isEmpty)
        #expect(ok.map { [$0.weekday, $0.start, $0.end] } == [[1, 540, 720], [2, 480, 840], [2, 840, 1_080], [7, 1_320, 1_440]])

        var bad = FieldViolations()
        _ = WeeklyHours.validate([window(.unspecified, "09:00", "10:00"), window(.monday, "24:00", "24:00"),
                                  window(.monday, "10:00", "09:00"), window(.monday, "09:00", "12:00"),
                                  window(.monday, "11:00", "13:00"), window(.friday, "09:00", "9pm")], into: &bad)
        #expect(Set(bad.violations.map(\.field)) == ["windows[0].weekday", "windows[1].start", "windows[2].end", "windows[4]", "windows[5].end"])
    }
}

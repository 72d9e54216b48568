import AlertsService
import CareMeshRPC
import Foundation
import Testing

/// The care-alert lifecycle, the escalation chain and call progress, without I/O.
@Suite struct CareAlertLifecycleTests {
    func code(_ action: CareAlertAction, _ state: CareAlertState, _ who: CareAlertRelation) -> StatusCode? {
        do { _ = try CareAlertLifecycle.apply(action, to: state, by: who); return nil } catch { return error.code }
    }

    func target(_ action: CareAlertAction, _ state: CareAlertState, _ who: CareAlertRelation) -> CareAlertState? {
        (try? CareAlertLifecycle.apply(action, to: state, by: who)) ?? nil
    }

    static let people: [CareAlertRelation] = [[], .raiser, .coordinator, .admin, [.raiser, .admin]]
    static let actions: [CareAlertAction] = [.ring, .answer, .acknowledge, .noAnswer(next: true), .noAnswer(next: false), .resolve, .cancel]

    @Test("the seed's path: initiated → ringing → answered → resolved; no answer escalates, then ends in no_answer")
    func happyPath() {
        #expect(target(.ring, .initiated, .system) == .ringing)
        #expect(target(.answer, .ringing, .system) == .answered)
        #expect(target(.resolve, .answered, .coordinator) == .resolved)
        #expect(target(.noAnswer(next: true), .ringing, .system) == .escalated)
        #expect(target(.noAnswer(next: true), .initiated, .system) == .escalated)
        #expect(target(.ring, .escalated, .system) == .ringing)
        #expect(target(.noAnswer(next: true), .escalated, .system) == .escalated)
        #expect(target(.noAnswer(next: false), .ringing, .system) == .noAnswer)
        #expect(target(.answer, .escalated, .system) == .answered)
        // Nobody answered anywhere: still open, a coordinator may take it or resolve it.
        #expect(target(.acknowledge, .noAnswer, .coordinator) == .answered)
        #expect(target(.resolve, .noAnswer, .admin) == .resolved)
        #expect(target(.cancel, .noAnswer, .raiser) == .cancelled)
    }

    @Test("the system's actions never fail: one that no longer applies changes nothing")
    func systemNeverThrows() {
        for state in CareAlertState.allCases {
            for action in [CareAlertAction.ring, .answer, .noAnswer(next: true), .noAnswer(next: false)] {
                #expect(code(action, state, .system) == nil, "\(action) on \(state)")
            }
        }
        // A late ring after an answer, a late failure after an answer, anything after the end.
        #expect(target(.ring, .answered, .system) == nil)
        #expect(target(.ring, .ringing, .system) == nil)
        #expect(target(.noAnswer(next: true), .answered, .system) == nil)
        #expect(target(.noAnswer(next: true), .noAnswer, .system) == nil)
        #expect(target(.answer, .answered, .system) == nil)
        for state: CareAlertState in [.resolved, .cancelled] {
            for action in Self.actions { #expect(target(action, state, .system) == nil, "\(action) on \(state)") }
        }
    }

    @Test("people are checked before the state: strangers get PERMISSION_DENIED even on a closed alert")
    func whoBeforeWhen() {
        for state in CareAlertState.allCases {
            #expect(code(.acknowledge, state, .raiser) == .permissionDenied)
            #expect(code(.resolve, state, .raiser) == .permissionDenied)
            #expect(code(.resolve, state, []) == .permissionDenied)
            // Coordinators work alerts but only the caregiver or an admin cancels one.
            #expect(code(.cancel, state, .coordinator) == .permissionDenied)
            #expect(code(.cancel, state, []) == .permissionDenied)
        }
    }

    @Test("allowed people at the wrong moment get FAILED_PRECONDITION; the final states never move")
    func wrongMoments() {
        for state: CareAlertState in [.resolved, .cancelled] {
            #expect(code(.resolve, state, .coordinator) == .failedPrecondition)
            #expect(code(.acknowledge, state, .admin) == .failedPrecondition)
            #expect(code(.cancel, state, .raiser) == .failedPrecondition)
        }
        // Answered: the coordinator is on it; the caregiver can no longer call it off.
        #expect(code(.cancel, .answered, .raiser) == .failedPrecondition)
        #expect(code(.cancel, .answered, .admin) == .failedPrecondition)
        // Acknowledging what is answered is answered like the first time.
        #expect(code(.acknowledge, .answered, .coordinator) == nil)
        #expect(target(.acknowledge, .answered, .coordinator) == nil)
        for state in CareAlertState.allCases where state.isFinal {
            for who in Self.people {
                for action in Self.actions {
                    let to = target(action, state, who)
                    #expect(to == nil, "\(action) moved a \(state) alert to \(String(describing: to))")
                }
            }
        }
    }

    @Test("unanswered alerts can be cancelled by their caregiver or an admin; any open one resolved by staff")
    func cancelAndResolve() {
        for state: CareAlertState in [.initiated, .ringing, .escalated, .noAnswer] {
            #expect(target(.cancel, state, .raiser) == .cancelled)
            #expect(target(.cancel, state, .admin) == .cancelled)
            #expect(target(.acknowledge, state, .coordinator) == .answered)
        }
        for state in CareAlertState.allCases where !state.isFinal {
            #expect(target(.resolve, state, .coordinator) == .resolved)
            #expect(target(.resolve, state, .admin) == .resolved)
        }
    }

    // MARK: - The chain

    static func person(_ n: Int) -> EscalationTarget {
        EscalationTarget(coordinatorID: UUID(uuidString: String(format: "00000000-0000-0000-0000-%012d", n))!, phone: "+4470000000\(n)")
    }

    @Test("stages in order: primary, backup, the policy repeated, the admins; then the end")
    func chainOrder() throws {
        let chain = EscalationChain(primary: Self.person(1), backup: Self.person(2),
                                    policy: [.init(ringTimeoutS: 20, targets: [Self.person(3), Self.person(4)]),
                                             .init(ringTimeoutS: 40, targets: [Self.person(5)])],
                                    repeatCount: 1, admins: [Self.person(8), Self.person(9)], ringTimeoutS: 30)
        #expect(chain.count == 7)
        var seen: [(Int, EscalationStage.Level, [Int], Int)] = []
        var step = -1
        while let next = chain.next(after: step) {
            let ids = next.stage.targets.map { Int($0.coordinatorID.uuidString.suffix(4))! }
            seen.append((next.step, next.stage.level, ids, next.stage.ringTimeoutS))
            step = next.step
        }
        let expected: [(Int, EscalationStage.Level, [Int], Int)] = [
            (0, .primary, [1], 30), (1, .backup, [2], 30), (2, .policy, [3, 4], 20), (3, .policy, [5], 40),
            (4, .policy, [3, 4], 20), (5, .policy, [5], 40), (6, .admins, [8, 9], 30),
        ]
        #expect(seen.count == expected.count)
        for (a, b) in zip(seen, expected) {
            #expect(a.0 == b.0 && a.1 == b.1 && a.2 == b.2 && a.3 == b.3, "\(a) vs \(b)")
        }
        #expect(chain.stage(7) == nil)
        #expect(chain.next(after: 6) == nil)
    }

    @Test("stages with nobody to call are skipped; a chain with nobody at all has no first stage")
    func emptyStages() {
        // No coordinator in the zone and no backup: straight to the policy, then the admins.
        let noZone = EscalationChain(policy: [.init(ringTimeoutS: 10, targets: [Self.person(3)]), .init(ringTimeoutS: 10, targets: [])],
                                     admins: [Self.person(9)], ringTimeoutS: 30)
        #expect(noZone.next(after: -1)?.step == 2)
        #expect(noZone.next(after: 2)?.stage.level == .admins)
        #expect(noZone.next(after: 2)?.step == 4)
        // No policy: the backup is followed by the admins.
        let short = EscalationChain(primary: Self.person(1), backup: Self.person(2), admins: [Self.person(9)], ringTimeoutS: 30)
        #expect(short.next(after: 1)?.step == 2)
        #expect(short.next(after: 1)?.stage.level == .admins)
        // No admins either: the backup is the last.
        let alone = EscalationChain(primary: Self.person(1), backup: Self.person(2), ringTimeoutS: 30)
        #expect(alone.next(after: 1) == nil)
        #expect(EscalationChain(ringTimeoutS: 30).next(after: -1) == nil)
    }

    @Test("a call's status only moves forward; a pickup is still live, and only accepted answers")
    func callProgress() {
        let order = ["requested", "queued", "ringing", "in_progress"]
        for (i, from) in order.enumerated() {
            for (j, to) in order.enumerated() {
                #expect(CallProgress.advances(from: from, to: to) == (j > i), "\(from) → \(to)")
            }
        }
        #expect(CallProgress.live == order)
        for end in ["accepted", "busy", "no_answer", "failed", "canceled", "machine", "timed_out", "ended", "completed"] {
            #expect(CallProgress.advances(from: "ringing", to: end))
            #expect(CallProgress.advances(from: "in_progress", to: end))
            #expect(!CallProgress.advances(from: end, to: "ringing"))
            #expect(!CallProgress.advances(from: end, to: "in_progress"))
            #expect(!CallProgress.advances(from: end, to: "no_answer"))
            // Once accepted, the call's end changes nothing: the attempt stays what answered.
            #expect(!CallProgress.advances(from: "accepted", to: end))
        }
    }
}

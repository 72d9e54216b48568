import CareMeshRPC
import DispatchService
import Testing

/// The SOS lifecycle and wave plan, without I/O.
@Suite struct SosLifecycleTests {
    func code(_ action: SosAction, _ state: SosState, _ relation: SosRelation) -> StatusCode? {
        do { _ = try SosLifecycle.apply(action, to: state, by: relation); return nil } catch { return error.code }
    }

    func target(_ action: SosAction, _ state: SosState, _ relation: SosRelation) -> SosState? {
        try? SosLifecycle.apply(action, to: state, by: relation).to
    }

    @Test("the happy path: pending → accepted → in progress → resolved, and escalated → accepted")
    func happyPath() throws {
        #expect(target(.accept, .pending, .offered) == .accepted)
        #expect(target(.start, .accepted, .responder) == .inProgress)
        #expect(target(.resolve, .inProgress, .responder) == .resolved)
        #expect(target(.escalate, .pending, []) == .escalated)
        #expect(target(.accept, .escalated, .offered) == .accepted)
        #expect(try SosLifecycle.apply(.accept, to: .pending, by: .offered).closesOffers)
        // Declining keeps the SOS where it is.
        #expect(target(.decline, .pending, .offered) == .pending)
        #expect(target(.decline, .escalated, .offered) == .escalated)
    }

    @Test("every (action, state) pair outside the diagram is FAILED_PRECONDITION for an allowed actor")
    func wrongMoments() {
        let allowed: [SosAction: SosRelation] = [.accept: .offered, .decline: .offered, .start: .responder,
                                                 .resolve: .responder, .cancel: .requester, .escalate: []]
        let legal: [SosAction: Set<SosState>] = [
            .accept: [.pending, .escalated], .decline: [.pending, .escalated], .start: [.accepted],
            .resolve: [.inProgress], .cancel: [.pending, .escalated, .accepted, .inProgress], .escalate: [.pending],
        ]
        for (action, relation) in allowed {
            for state in SosState.allCases {
                let expected: StatusCode? = legal[action]!.contains(state) ? nil : .failedPrecondition
                #expect(code(action, state, relation) == expected, "\(action) in \(state)")
            }
        }
    }

    @Test("who may act: strangers are refused before the state is looked at")
    func permissions() {
        for state in SosState.allCases {
            #expect(code(.accept, state, []) == .permissionDenied)
            #expect(code(.accept, state, .requester) == .permissionDenied)
            #expect(code(.decline, state, .responder) == .permissionDenied)
            #expect(code(.start, state, .offered) == .permissionDenied)
            #expect(code(.start, state, .staff) == .permissionDenied)
            #expect(code(.resolve, state, .requester) == .permissionDenied)
            #expect(code(.cancel, state, .offered) == .permissionDenied)
            #expect(code(.cancel, state, []) == .permissionDenied)
        }
        // Staff may resolve and cancel; the requester may cancel but not resolve.
        #expect(target(.resolve, .inProgress, .staff) == .resolved)
        #expect(target(.cancel, .accepted, .staff) == .cancelled)
        #expect(target(.cancel, .pending, .requester) == .cancelled)
    }

    @Test("a responder who cancels after accepting hands it back: PENDING, counted, re-offered")
    func responderWithdraws() throws {
        for state in [SosState.accepted, .inProgress] {
            let t = try SosLifecycle.apply(.cancel, to: state, by: .responder)
            #expect(t.to == .pending)
            #expect(t.responderWithdrew)
        }
        #expect(try SosLifecycle.apply(.cancel, to: .accepted, by: .responder, wasEscalated: true).to == .escalated)
        #expect(code(.cancel, .resolved, .responder) == .failedPrecondition)
        // The requester's cancel ends it even if they are also the responder's coordinator.
        let t = try SosLifecycle.apply(.cancel, to: .accepted, by: [.requester, .responder])
        #expect(t.to == .cancelled && !t.responderWithdrew)
        // A refusal names the state.
        do {
            _ = try SosLifecycle.apply(.accept, to: .accepted, by: .offered)
            Issue.record("accepted twice")
        } catch {
            #expect(error.reason == "SOS_ACCEPTED")
        }
    }

    @Test("waves: one per radius, then escalation waves with professionals, then none")
    func wavePlan() {
        var c = DispatchConfiguration()
        c.waveRadii = [1_000, 3_000]
        c.escalationWaves = 2
        #expect(WavePlan.plan(0, c) == nil)
        #expect(WavePlan.plan(1, c) == WavePlan(wave: 1, radius: 1_000, includesProfessionals: false, escalates: false))
        #expect(WavePlan.plan(2, c) == WavePlan(wave: 2, radius: 3_000, includesProfessionals: false, escalates: false))
        #expect(WavePlan.plan(3, c) == WavePlan(wave: 3, radius: 3_000, includesProfessionals: true, escalates: true))
        #expect(WavePlan.plan(4, c) == WavePlan(wave: 4, radius: 3_000, includesProfessionals: true, escalates: false))
        #expect(WavePlan.plan(5, c) == nil)
    }

    @Test("configuration from the environment, bad values named")
    func configuration() throws {
        let c = try DispatchConfiguration(environment: ["DISPATCH_WAVE_RADII_M": "500, 1500", "DISPATCH_WAVE_SIZE": "3"])
        #expect(c.waveRadii == [500, 1_500] && c.waveSize == 3)
        for (key, value) in [("DISPATCH_WAVE_RADII_M", "3000,1000"), ("DISPATCH_WAVE_RADII_M", "1000,x"),
                             ("DISPATCH_WAVE_SIZE", "0"), ("DISPATCH_WAVE_TIMEOUT_S", "never")] {
            #expect(throws: DispatchConfiguration.BadValue.self) { try DispatchConfiguration(environment: [key: value]) }
        }
    }
}

import AlertsService
import CareMeshContracts
import CareMeshRPC
import CareMeshTesting
import Foundation
import Testing

/// Alerts' news reaches people (issue 33): a caregiver hears that nobody answered their care
/// alert (critical), a rule alert's coordinators hear it was raised and its assignee that it is
/// theirs. Messaging reads alerts' events with a consumer of its own, apart from the calls'
/// (which this stack does not run: it has no voice provider).
extension AlertsTests {
    /// `who`'s notifications of `kind`, waiting until there are `count`.
    func notifications(_ s: Stack, _ who: Account, _ kind: Caremesh_Messaging_V1_NotificationKind, count: Int = 1) async throws
        -> [Caremesh_Messaging_V1_Notification]
    {
        try await TestStack.eventually(timeout: .seconds(20)) {
            let got = try await s.client.call(MessagingMethods.listMyNotifications, request: .init(), options: who.auth).notifications
                .filter { $0.kind == kind }
            guard got.count >= count else { throw RPCError(.unavailable, "\(got.count) of \(count) \(kind) notifications") }
            return got
        }
    }

    @Test("a caregiver is told, critically, that nobody answered their care alert; never who the client is")
    func caregiverHearsNobodyAnswered() async throws {
        try await withStack(["ALERTS_RING_TIMEOUT_S": "1"]) { s in
            let admin = try await account(s, "admin")
            let caregiver = try await account(s, "caregiver")
            let zone = UUID()
            _ = try await coordinator(s, admin: admin, zone: zone)
            let client = try await client(s, staff: caregiver, zone: zone)
            let raised = try await raise(s, caregiver, client: client)
            // Nobody answers (no call is even placed: no voice provider); the chain runs out.
            let told = try await notifications(s, caregiver, .careAlertUpdated)
            let last = try #require(told.first { $0.data["status"] == "NO_ANSWER" })
            #expect(last.critical && last.title == "Nobody answered your care alert" && last.data["alert_id"] == raised.alert.id)
            let patient = try await s.db.sql("SELECT full_name FROM identity.patients WHERE id = \(UUID(uuidString: client)!)")[0].decode(String.self)
            #expect(told.allSatisfy { !$0.body.contains(patient) && !$0.title.contains(patient) })
            // The coordinator, who did nothing, is told nothing of it.
            #expect(try await s.count("SELECT count(*) FROM messaging.notifications WHERE kind = 'CARE_ALERT_UPDATED' AND person_id <> \(caregiver.id)") == 0)
            // Two consumers of alerts' events in messaging, each with its own cursor.
            #expect(try await s.count("SELECT count(*) FROM messaging.event_cursors WHERE source = 'alerts/notifications'") == 1)
        }
    }

    @Test("a rule alert is told to its pairing's coordinators when raised, and to its assignee when assigned")
    func ruleAlertsReachTheirPeople() async throws {
        try await withStack { s in
            let admin = try await account(s, "admin")
            let zone = UUID()
            let (first, _) = try await coordinator(s, admin: admin, zone: zone)
            let (second, _) = try await coordinator(s, admin: admin, zone: zone)
            let (elsewhere, _) = try await coordinator(s, admin: admin, zone: UUID())
            let client = try await client(s, staff: admin, zone: zone)
            let ea = try await self.ea(s, admin: admin)
            let p = try await pairing(s, admin: admin, ea, client: client, start: ea.today.adding(days: -20))
            for rule in DefaultRules.all where rule.name != "repeated-needs-support" {
                _ = try await setRule(s, admin, try await self.rule(s, admin, named: rule.name).id) { $0.enabled = false }
            }
            for back in 2...8 { _ = try await report(s, ea, p, ea.today.adding(days: -back)) { $0.needsSupport = true } }
            let alert = try #require(try await ruleAlerts(s, admin, pairing: p.id).first)
            for who in [first, second] {
                let raised = try #require(try await notifications(s, who, .ruleAlert).first)
                #expect(raised.title == "A rule alert needs a look" && raised.body.hasPrefix("High alert: ") && raised.data["alert_id"] == alert.id)
            }
            #expect(try await s.client.call(MessagingMethods.listMyNotifications, request: .init(), options: elsewhere.auth).notifications.isEmpty)

            // Assigned to the second by the first: the second is told it is theirs.
            var assign = Caremesh_Alerts_V1_AssignRuleAlertRequest()
            assign.id = alert.id
            assign.assignedTo = second.id.uuidString
            _ = try await s.client.call(AlertsMethods.assignRuleAlert, request: assign, options: first.auth)
            let mine = try await notifications(s, second, .ruleAlert, count: 2)
            #expect(mine.first?.title == "A rule alert is yours" && mine.first?.data["assigned"] == "true")
            // Taking it oneself tells nobody more.
            assign.assignedTo = first.id.uuidString
            _ = try await s.client.call(AlertsMethods.assignRuleAlert, request: assign, options: first.auth)
            #expect(try await s.count("SELECT count(*) FROM alerts.outbox WHERE type LIKE '%RuleAlertAssigned'") == 1)
            #expect(try await notifications(s, first, .ruleAlert).count == 1)
        }
    }
}

import AlertsService
import CareMeshContracts
import CareMeshRPC
import CareMeshRouter
import CareMeshStore
import CareMeshTesting
import Foundation
import IdentityService
import Logging
import MessagingService
import PostgresNIO
import SwiftProtobuf
import Testing

/// The queries: a coordinator's dashboard, SLA monitoring, a client's history.
extension AlertsTests {
    @Test("queries: a coordinator's dashboard, SLA monitoring (unanswered past N seconds), a client's history by pages")
    func queries() async throws {
        try await withStack { s in
            let admin = try await account(s, "admin")
            let caregiver = try await account(s, "caregiver")
            let zone = UUID()
            let (me, mine) = try await coordinator(s, admin: admin, zone: zone)
            let (other, _) = try await coordinator(s, admin: admin, zone: UUID())
            let client = try await client(s, staff: caregiver, zone: zone)
            var raised: [Caremesh_Alerts_V1_RaiseCareAlertResponse] = []
            for _ in 0..<5 { raised.append(try await raise(s, caregiver, client: client)) }
            // The zone's only coordinator takes them all.
            #expect(Set(raised.map(\.alert.coordinatorID)) == [mine.id])
            try await s.callStatus(raised[0].calls[0].id, .ringing)
            try await s.until(raised[0].alert.id, is: .ringing, as: admin)
            var ack = Caremesh_Alerts_V1_AcknowledgeCareAlertRequest()
            ack.id = raised[1].alert.id
            _ = try await s.client.call(AlertsMethods.acknowledgeCareAlert, request: ack, options: me.auth)
            var resolve = Caremesh_Alerts_V1_ResolveCareAlertRequest()
            resolve.id = raised[2].alert.id
            resolve.outcome = "done"
            _ = try await s.client.call(AlertsMethods.resolveCareAlert, request: resolve, options: me.auth)

            let board = try await s.client.call(AlertsMethods.coordinatorDashboard, request: .init(), options: me.auth)
            #expect(board.coordinator.id == mine.id)
            #expect(board.alerts.map(\.id) == [raised[4], raised[3], raised[1], raised[0]].map(\.alert.id))
            #expect(board.openByStatus == ["initiated": 2, "ringing": 1, "answered": 1])
            var theirs = Caremesh_Alerts_V1_CoordinatorDashboardRequest()
            theirs.coordinatorID = mine.id
            #expect(await code { _ = try await s.client.call(AlertsMethods.coordinatorDashboard, request: theirs, options: other.auth) }
                    == .permissionDenied)
            #expect(try await s.client.call(AlertsMethods.coordinatorDashboard, request: theirs, options: admin.auth).alerts.count == 4)

            // SLA: two alerts have waited a minute (backdated), one of them answered.
            for i in [0, 1] {
                _ = try await s.sql("""
                    UPDATE alerts.care_alerts SET initiated_at = initiated_at - interval '60 seconds'
                    WHERE id = \(UUID(uuidString: raised[i].alert.id)!)
                    """)
            }
            var sla = Caremesh_Alerts_V1_ListUnansweredCareAlertsRequest()
            sla.olderThanS = 30
            let late = try await s.client.call(AlertsMethods.listUnansweredCareAlerts, request: sla, options: me.auth).alerts
            #expect(late.map(\.alert.id) == [raised[0].alert.id])
            #expect((late.first?.waitingS ?? 0) >= 60)
            #expect(await code { _ = try await s.client.call(AlertsMethods.listUnansweredCareAlerts, request: sla, options: caregiver.auth) }
                    == .permissionDenied)

            var history = Caremesh_Alerts_V1_ListClientCareAlertsRequest()
            history.clientID = client
            history.pageSize = 2
            var seen: [String] = []
            repeat {
                let page = try await s.client.call(AlertsMethods.listClientCareAlerts, request: history, options: admin.auth)
                #expect(page.alerts.count <= 2)
                seen += page.alerts.map(\.id)
                history.pageToken = page.nextPageToken
            } while !history.pageToken.isEmpty
            // Newest first (the two backdated ones last, the older of them at the end).
            #expect(seen == [raised[4], raised[3], raised[2], raised[1], raised[0]].map(\.alert.id))
        }
    }
}

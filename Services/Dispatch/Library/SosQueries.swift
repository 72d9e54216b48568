import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import PostgresNIO

/// Seed 001's queries: the requester's and the volunteer's histories, the staff's board of
/// active SOS, and volunteers' performance.
extension SosDesk {
    /// After `columns`: the page key, the duration, and the feedback given (`f`, joined by
    /// `historyFeedback`, which exposes only its two columns so `columns` stay unambiguous).
    static let historyColumns = """
        \(columns), \(Page.micros("created_at")),
        coalesce(extract(epoch FROM resolved_at - created_at)::float8, 0), coalesce(f.rating, 0), coalesce(f.comment, '')
        """
    static let historyFeedback = """
        LEFT JOIN LATERAL (SELECT rating, comment FROM sos_feedback WHERE sos_feedback.sos_id = sos_requests.id) f ON true
        """

    /// One page of history entries: the SOS whose `column` (requester_id, accepted_by) is `user`.
    private func history(_ column: String, _ user: UUID, page: Page) async throws
        -> (rows: [Caremesh_Dispatch_V1_SosHistoryEntry], token: String)
    {
        let query: PostgresQuery = """
            SELECT \(unescaped: Self.historyColumns) FROM sos_requests \(unescaped: Self.historyFeedback)
            WHERE \(unescaped: column) = \(user) AND \(after: page, time: "created_at", id: "id")
            ORDER BY created_at DESC, id DESC LIMIT \(page.limit)
            """
        return try await store.withConnection { c in
            var found: [(row: Caremesh_Dispatch_V1_SosHistoryEntry, micros: Int64, id: UUID)] = []
            for try await row in try await c.query(query, logger: self.logger) {
                let a = row.makeRandomAccess()
                let record = try Self.record(a)
                var entry = Caremesh_Dispatch_V1_SosHistoryEntry()
                entry.sos = record.sos
                entry.durationS = try a[17].decode(Double.self)
                entry.rating = UInt32(try a[18].decode(Int32.self))
                entry.comment = try a[19].decode(String.self)
                found.append((entry, try a[16].decode(Int64.self), record.id))
            }
            return page.collect(found)
        }
    }

    func listMySos(_ r: Caremesh_Dispatch_V1_ListMySosRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_ListMySosResponse {
        let me = try context.requireCaller().requireUserID()
        let page = try Page(size: r.pageSize, token: r.pageToken)
        var response = Caremesh_Dispatch_V1_ListMySosResponse()
        (response.entries, response.nextPageToken) = try await history("requester_id", me, page: page)
        return response
    }

    func listVolunteerSos(_ r: Caremesh_Dispatch_V1_ListVolunteerSosRequest, _ context: RPCContext) async throws
        -> Caremesh_Dispatch_V1_ListVolunteerSosResponse
    {
        let volunteer = try context.requireSelf(r.volunteerID, field: "volunteer_id", orRole: Responders.staff)
        let page = try Page(size: r.pageSize, token: r.pageToken)
        var response = Caremesh_Dispatch_V1_ListVolunteerSosResponse()
        (response.entries, response.nextPageToken) = try await history("accepted_by", volunteer, page: page)
        return response
    }

    func activeBoard(_ r: Caremesh_Dispatch_V1_ActiveBoardRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_ActiveBoardResponse {
        _ = try context.requireRole(Responders.staff)
        var v = FieldViolations()
        let limit = v.limit(r.limit, default: 200)
        try v.throwIfAny()
        return try await store.withConnection { c in
            // The partial index `sos_requests_active_priority` serves this order.
            let rows = try await c.query("""
                SELECT \(unescaped: Self.columns), extract(epoch FROM now() - created_at)::float8,
                       (SELECT count(*) FROM sos_offers o WHERE o.sos_id = sos_requests.id AND o.response = 'PENDING')::int4
                FROM sos_requests WHERE status IN ('PENDING', 'ESCALATED', 'ACCEPTED', 'IN_PROGRESS')
                ORDER BY priority_rank, created_at, id LIMIT \(limit)
                """, logger: self.logger)
            var response = Caremesh_Dispatch_V1_ActiveBoardResponse()
            for try await row in rows {
                let a = row.makeRandomAccess()
                var entry = Caremesh_Dispatch_V1_BoardEntry()
                entry.sos = try Self.record(a).sos
                entry.elapsedS = max(0, try a[16].decode(Double.self))
                entry.offersOut = UInt32(try a[17].decode(Int32.self))
                response.entries.append(entry)
            }
            return response
        }
    }

    func volunteerPerformance(_ r: Caremesh_Dispatch_V1_VolunteerPerformanceRequest, _ context: RPCContext) async throws
        -> Caremesh_Dispatch_V1_VolunteerPerformanceResponse
    {
        let staff = try context.requireCaller().hasAny(of: Responders.staff)
        // Staff asking for nobody in particular get every verified volunteer.
        let one: UUID? = r.volunteerID.isEmpty && staff ? nil
            : try context.requireSelf(r.volunteerID, field: "volunteer_id", orRole: Responders.staff)
        var v = FieldViolations()
        let limit = v.limit(r.limit, default: 100)
        try v.throwIfAny()
        return try await store.withConnection { c in
            // Seed 001's query 4: verified volunteers (or the one asked for) by rating, then by
            // how many SOS they handled.
            let rows = try await c.query("""
                SELECT v.user_id, v.average_rating::float8, v.rating_count, v.cancellation_count,
                       count(s.id)::int4, (count(*) FILTER (WHERE s.status = 'RESOLVED'))::int4,
                       coalesce(avg(extract(epoch FROM s.accepted_at - s.created_at))::float8, 0)
                FROM responders v LEFT JOIN sos_requests s ON s.accepted_by = v.user_id
                WHERE (\(one)::uuid IS NULL AND v.verified) OR v.user_id = \(one)
                GROUP BY v.user_id
                ORDER BY v.average_rating DESC, count(s.id) DESC, v.user_id LIMIT \(limit)
                """, logger: self.logger)
            var response = Caremesh_Dispatch_V1_VolunteerPerformanceResponse()
            for try await (id, rating, ratings, cancellations, handled, resolved, meanResponse)
                in rows.decode((UUID, Double, Int32, Int32, Int32, Int32, Double).self)
            {
                var p = Caremesh_Dispatch_V1_VolunteerPerformance()
                p.volunteerID = id.uuidString.lowercased()
                p.averageRating = rating
                p.ratingCount = UInt32(ratings)
                p.cancellations = UInt32(cancellations)
                p.handled = UInt32(handled)
                p.resolved = UInt32(resolved)
                p.meanResponseS = meanResponse
                response.volunteers.append(p)
            }
            return response
        }
    }
}

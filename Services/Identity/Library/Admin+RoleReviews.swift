import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import PostgresNIO
import SwiftProtobuf

extension Admin {
    /// The accounts migration 0106 took a staff role from (self-registered caregivers and
    /// professionals without a verified licence), newest first; open ones only unless asked.
    /// An admin confirms one by giving the role back (`SetUserRole`).
    func listRoleReviews(_ r: Caremesh_Identity_V1_ListRoleReviewsRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_ListRoleReviewsResponse
    {
        _ = try context.requireRole(Roles.admin)
        var v = FieldViolations()
        let page = Page(size: r.pageSize, token: r.pageToken, into: &v)
        try v.throwIfAny()
        let all = r.includeConfirmed
        return try await store.withConnection { c in
            let rows = try await c.query("""
                SELECT r.user_id, u.email, r.previous_role, r.reason, extract(epoch FROM r.demoted_at)::float8,
                       r.confirmed_by, extract(epoch FROM r.confirmed_at)::float8, \(unescaped: Page.micros("r.demoted_at"))
                FROM role_reviews r JOIN users u ON u.id = r.user_id
                WHERE (r.confirmed_at IS NULL OR \(all)) AND \(after: page, time: "r.demoted_at", id: "r.user_id")
                ORDER BY r.demoted_at DESC, r.user_id DESC LIMIT \(page.limit)
                """, logger: self.logger)
            var response = Caremesh_Identity_V1_ListRoleReviewsResponse()
            (response.reviews, response.nextPageToken) = try await page.collect(
                rows.decode((UUID, String, String, String, Double, UUID?, Double?, Int64).self)
            ) { row in
                var review = Caremesh_Identity_V1_RoleReview()
                review.userID = row.0.uuidString.lowercased()
                review.email = row.1
                review.previousRole = Roles.role(row.2)
                review.reason = row.3
                review.demotedAt = Google_Protobuf_Timestamp(epochSeconds: row.4)
                review.confirmedBy = row.5?.uuidString.lowercased() ?? ""
                if let at = row.6 { review.confirmedAt = Google_Protobuf_Timestamp(epochSeconds: at) }
                return (review, row.7, row.0)
            }
            return response
        }
    }
}

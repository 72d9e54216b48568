import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import PostgresNIO

/// A patient's record and the same patient's account: linked by the front desk, and resolved
/// for the services that take a person's id.
extension People {
    /// Who links records to accounts: the front desk (there is no receptionist role; admins and
    /// coordinators run the desk, as they book for others at dispatch).
    static let frontDesk: Set<String> = ["admin", "coordinator"]

    /// The services that resolve a person's id: dispatch (booking) and alerts (raising).
    static let resolvers: Set<String> = ["service:dispatch", "service:alerts"]

    /// Links the record to the account (or unlinks it, empty `account_id`), audited as an UPDATE
    /// of the record in the same transaction. An account holds at most one record.
    func link(_ r: Caremesh_Identity_V1_LinkPatientAccountRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_LinkPatientAccountResponse
    {
        let actor = try Actor(context)
        guard !Set(actor.roles).isDisjoint(with: Self.frontDesk) else {
            throw RPCError(.permissionDenied, "only the front desk (admin, coordinator) links records to accounts")
        }
        var v = FieldViolations()
        let purpose = v.purpose(r.purpose)
        let id = v.uuid(r.patientID, "patient_id")
        let account = v.optionalUUID(r.accountID, "account_id")
        try v.throwIfAny()
        var response = Caremesh_Identity_V1_LinkPatientAccountResponse()
        do {
            response.patient = try await one(actor, "UPDATE", purpose!, """
                UPDATE patients SET account_id = \(account) WHERE id = \(id!)
                  AND (\(account)::uuid IS NULL OR EXISTS (SELECT 1 FROM users WHERE id = \(account) AND is_active))
                RETURNING \(unescaped: Self.columns)
                """)
        } catch let error as RPCError where error.code == .notFound {
            guard account != nil else { throw RPCError.notFound(field: "patient_id", "no patient or client record with this id") }
            // Which of the two is missing: the record (RLS shows it to the front desk) or the account.
            let known = try await withPHI(actor) { c in
                try await c.query("SELECT count(*) FROM patients WHERE id = \(id!)", logger: self.logger).first(Int64.self) ?? 0
            }
            if known == 0 { throw RPCError.notFound(field: "patient_id", "no patient or client record with this id") }
            throw RPCError.notFound(field: "account_id", "no active account with this id")
        } catch {
            if let (state, constraint) = PSQLError.violation(in: error), state == "23505", constraint == "patients_account_id_key" {
                throw RPCError(.alreadyExists, "account_id: this account is linked to another record",
                               details: [RPCError.fieldDetail("account_id", "is linked to another record")])
            }
            throw error
        }
        return response
    }

    /// What `id` names (a record, or an active account) and the link between them: ids only,
    /// from `person_index` and `users`, never the PHI table.
    func resolve(_ r: Caremesh_Identity_V1_ResolvePersonRequest, _ context: RPCContext) async throws
        -> Caremesh_Identity_V1_ResolvePersonResponse
    {
        _ = try context.requireService(Self.resolvers, "only dispatch and alerts resolve people")
        var v = FieldViolations()
        let id = v.uuid(r.id, "id")
        try v.throwIfAny()
        let rows = try await store.query("""
            SELECT p.id, p.kind, p.zone_id, (SELECT u.id FROM users u WHERE u.id = p.account_id AND u.is_active)
            FROM person_index p WHERE p.id = \(id!) OR p.account_id = \(id!)
            UNION ALL
            SELECT NULL, NULL, NULL, u.id FROM users u
            WHERE u.id = \(id!) AND u.is_active AND NOT EXISTS (SELECT 1 FROM person_index p WHERE p.account_id = u.id)
            """)
        guard let row = rows.first else { throw RPCError.notFound(field: "id", "names no patient or client record and no active account") }
        let (record, kind, zone, account) = try row.decode((UUID?, String?, UUID?, UUID?).self)
        var response = Caremesh_Identity_V1_ResolvePersonResponse()
        response.recordID = record?.text ?? ""
        response.kind = kind.flatMap { Self.kindNames.key(for: $0) } ?? .unspecified
        response.accountID = account?.text ?? ""
        response.zoneID = zone?.text ?? ""
        return response
    }
}

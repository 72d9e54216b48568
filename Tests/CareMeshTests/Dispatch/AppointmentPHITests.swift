import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import PostgresNIO
import SwiftProtobuf
import Testing

/// Appointments as PHI (issue 32): row-level security keyed on the acting user, every access
/// audited, and a patient's record linked to the same patient's account.
extension DispatchTests {
    @Test("appointments: invisible without an acting user, every access audited, records linked to accounts, unknown patients refused")
    func appointmentsArePHI() async throws {
        try await withStack { s in
            let doctor = try await account(s, "professional"), patient = try await account(s, "user")
            let desk = try await account(s, "coordinator"), admin = try await account(s, "admin")
            func call<Q, A>(_ m: RPCMethod<Q, A>, _ who: Account, _ r: Q) async throws -> A {
                try await s.client.call(m, request: r, options: who.auth)
            }
            _ = try await call(DispatchMethods.setSchedule, doctor, .with {
                $0.timeZone = "UTC"
                $0.windows = [.with { $0.weekday = .wednesday; $0.start = "08:00"; $0.end = "18:00" }]
            })
            let wednesday = Self.next(weekday: 4)
            func at(_ hour: Int) -> Google_Protobuf_Timestamp { Google_Protobuf_Timestamp(date: wednesday.addingTimeInterval(Double(hour * 3_600))) }
            func record(_ name: String) async throws -> Caremesh_Identity_V1_Patient { try await Self.patientRecord(s, name, by: desk) }
            func link(_ who: Account, _ record: String, _ account: UUID?) async throws -> Caremesh_Identity_V1_Patient {
                try await Self.link(s, record, to: account, by: who)
            }

            // The front desk links the patient's record to the patient's account; nobody else
            // may, an unknown account or record is NOT_FOUND naming it, one account one record.
            let rosa = try await record("Rosa Ortega"), other = try await record("Other Person")
            #expect(await code { _ = try await link(patient, rosa.id, patient.id) } == .permissionDenied)
            #expect(await code { _ = try await link(desk, rosa.id, UUID()) } == .notFound)
            #expect(await violations { _ = try await link(desk, rosa.id, UUID()) } == ["account_id"])
            #expect(await violations { _ = try await link(desk, UUID().text, patient.id) } == ["patient_id"])
            #expect(await violations {
                _ = try await call(IdentityMethods.linkPatientAccount, desk, .with { $0.patientID = rosa.id; $0.accountID = patient.id.text })
            } == ["purpose"])
            let linked = try await link(desk, rosa.id, patient.id)
            #expect(linked.accountID == patient.id.text && linked.fullName == "Rosa Ortega")
            #expect(await code { _ = try await link(desk, other.id, patient.id) } == .alreadyExists)
            #expect(await violations { _ = try await link(desk, other.id, patient.id) } == ["account_id"])
            let trail = try await call(IdentityMethods.listAuditEntries, admin, .with { $0.recordID = rosa.id }).entries
            #expect(trail.first?.action == "UPDATE" && trail.first?.actorID == desk.id.text && trail.first?.purpose == .personRequest)
            // Who an id names is for services only.
            #expect(await code { _ = try await call(IdentityMethods.resolvePerson, admin, .with { $0.id = rosa.id }) } == .permissionDenied)

            // Booked by the desk for the record, or by the patient for themself: both carry the
            // record as the patient and the account, so the patient sees both as theirs, and
            // the database keeps the patient from being booked twice at once either way.
            let byDesk = try await call(DispatchMethods.bookAppointment, desk, .with {
                $0.practitionerID = doctor.id.text
                $0.patientID = rosa.id
                $0.start = at(9)
                $0.reason = "chest pain follow-up"
                $0.purpose = .personRequest
            }).appointment
            #expect(byDesk.patientID == rosa.id && byDesk.patientAccountID == patient.id.text)
            let own = try await call(DispatchMethods.bookAppointment, patient, .with {
                $0.practitionerID = doctor.id.text
                $0.start = at(10)
                $0.reason = "chest pain follow-up"
            }).appointment
            #expect(own.patientID == rosa.id && own.patientAccountID == patient.id.text)
            #expect(await code {
                _ = try await call(DispatchMethods.bookAppointment, desk, .with {
                    $0.practitionerID = doctor.id.text
                    $0.patientID = patient.id.text
                    $0.start = at(10)
                    $0.purpose = .personRequest
                })
            } == .failedPrecondition)
            let window = Caremesh_Dispatch_V1_ListAppointmentsRequest.with { $0.to = at(24) }
            #expect(try await call(DispatchMethods.listAppointments, patient, window).appointments.map(\.id) == [byDesk.id, own.id])
            // Unlinked afterwards, a record still books (reminders only, no account on it).
            _ = try await link(desk, rosa.id, nil)
            let recordOnly = try await call(DispatchMethods.bookAppointment, desk, .with {
                $0.practitionerID = doctor.id.text
                $0.patientID = rosa.id
                $0.start = at(11)
                $0.purpose = .personRequest
            }).appointment
            #expect(recordOnly.patientID == rosa.id && recordOnly.patientAccountID.isEmpty)
            #expect(try await call(DispatchMethods.listAppointments, patient, window).appointments.count == 2)
            #expect(await code { _ = try await call(DispatchMethods.getAppointment, patient, .with { $0.id = recordOnly.id }) } == .notFound)

            // Row-level security: dispatch's own role sees no appointment without an acting
            // user; the patient their two, the practitioner all three, staff only with a purpose.
            func actor(_ id: String, _ roles: String, purpose: String = "") -> String {
                "SELECT set_config('caremesh.actor_id', '\(id)', false), set_config('caremesh.actor_roles', '\(roles)', false), "
                    + "set_config('caremesh.purpose', '\(purpose)', false)"
            }
            let all = "SELECT count(*) FROM dispatch.appointments"
            #expect(try await s.count(PostgresQuery(unsafeSQL: all)) == 3)
            #expect(try await s.db.count(as: "dispatch", all) == 0)
            #expect(try await s.db.count(as: "dispatch", all, after: actor(patient.id.text, "user")) == 2)
            #expect(try await s.db.count(as: "dispatch", all, after: actor(doctor.id.text, "professional")) == 3)
            #expect(try await s.db.count(as: "dispatch", all, after: actor(desk.id.text, "coordinator")) == 0)
            #expect(try await s.db.count(as: "dispatch", all, after: actor(desk.id.text, "coordinator", purpose: "OPERATIONS")) == 3)
            #expect(try await s.db.count(as: "dispatch", all, after: actor(UUID().text, "user", purpose: "OPERATIONS")) == 0)
            // Free slots still see every booking (booked_times holds no PHI).
            let free = try await call(DispatchMethods.findFreeSlots, admin, .with {
                $0.practitionerID = doctor.id.text
                $0.from = at(8)
                $0.to = at(12)
            }).slots.map(\.start)
            #expect(free == [at(8), at(8).adding(1_800), at(9).adding(1_800), at(10).adding(1_800), at(11).adding(1_800)])
            await #expect(throws: (any Error).self) {
                _ = try await s.db.count(as: "dispatch", """
                    INSERT INTO dispatch.appointments (practitioner_id, patient_id, during, booked_by)
                    VALUES ('\(doctor.id)', '\(patient.id)', tstzrange(now() + interval '9 days', now() + interval '9 days 30 minutes'), '\(patient.id)')
                    RETURNING 1
                    """)
            }

            // The audit trail: every read, list and change, by whom and why; admins read it.
            _ = try await call(DispatchMethods.getAppointment, doctor, .with { $0.id = byDesk.id })
            _ = try await call(DispatchMethods.confirmAppointment, desk, .with { $0.id = byDesk.id; $0.purpose = .operations })
            let entries = try await call(DispatchMethods.listAppointmentAudit, admin, .with { $0.appointmentID = byDesk.id }).entries
            #expect(entries.map(\.action) == ["UPDATE", "READ", "READ", "READ", "CREATE"])  // newest first
            #expect(entries.map(\.actorID) == [desk.id.text, doctor.id.text, patient.id.text, patient.id.text, desk.id.text])
            #expect(entries.map(\.purpose) == [.operations, .treatment, .personRequest, .personRequest, .personRequest])
            let lists = try await call(DispatchMethods.listAppointmentAudit, admin, .with { $0.actorID = patient.id.text }).entries
                .filter { $0.action == "LIST" }
            #expect(lists.map(\.resultCount) == [2, 2])
            #expect(await code { _ = try await call(DispatchMethods.listAppointmentAudit, desk, .init()) } == .permissionDenied)
            #expect(try await s.count("SELECT count(*) FROM dispatch.appointment_audit a WHERE row_to_json(a)::text ILIKE '%chest%'") == 0)
            await #expect(throws: (any Error).self) {
                _ = try await s.db.count(as: "dispatch", "UPDATE dispatch.appointment_audit SET purpose = 'COMPLIANCE' RETURNING 1")
            }
        }
    }
}

extension DispatchTests {
    /// A patient record made at identity by `desk` (care staff).
    static func patientRecord(_ s: Stack, _ name: String, by desk: Account) async throws -> Caremesh_Identity_V1_Patient {
        let request = Caremesh_Identity_V1_CreatePatientRequest.with {
            $0.patient.kind = .patient
            $0.patient.fullName = name
            $0.purpose = .treatment
        }
        return try await s.client.call(IdentityMethods.createPatient, request: request, options: desk.auth).patient
    }

    /// Links (or, with nil, unlinks) a record and an account, as `who`.
    static func link(_ s: Stack, _ record: String, to account: UUID?, by who: Account) async throws -> Caremesh_Identity_V1_Patient {
        let request = Caremesh_Identity_V1_LinkPatientAccountRequest.with {
            $0.patientID = record
            $0.accountID = account?.text ?? ""
            $0.purpose = .personRequest
        }
        return try await s.client.call(IdentityMethods.linkPatientAccount, request: request, options: who.auth).patient
    }
}

extension Google_Protobuf_Timestamp {
    func adding(_ seconds: Double) -> Google_Protobuf_Timestamp { Google_Protobuf_Timestamp(date: date.addingTimeInterval(seconds)) }
}

import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// SOS requests: creation (rate-limited), matching and offer waves, the lifecycle
/// (`SosLifecycle` decides, this applies it under a row lock), feedback.
final class SosDesk: Sendable {
    let store: Store
    let outbox: Outbox
    let configuration: DispatchConfiguration
    let logger: Logger

    /// The durable timer of a wave: payload "<sos id> <wave>", unique per `waveKey`.
    static let waveJob = "sos-wave"

    /// The wave timer's unique key: "<sos id>:<wave>" (the id as PostgreSQL prints it).
    static func waveKey(_ id: UUID, _ wave: Int) -> String { "\(id.uuidString.lowercased()):\(wave)" }
    /// Reports a person over the SOS rate limit to identity: payload JSON.
    static let rateReportJob = "sos-rate-report"

    init(store: Store, outbox: Outbox, configuration: DispatchConfiguration, logger: Logger) {
        self.store = store
        self.outbox = outbox
        self.configuration = configuration
        self.logger = logger
    }

    // MARK: - Rows

    static let emergencyTypes = Caremesh_Dispatch_V1_EmergencyType.storedNames
    static let priorities = Caremesh_Dispatch_V1_Priority.storedNames

    /// An SOS row as the desk works with it.
    struct Record: Sendable {
        var sos: Caremesh_Dispatch_V1_Sos
        var id: UUID
        var state: SosState
        var requester: UUID
        var acceptedBy: UUID?
        var wave: Int
        var wasEscalated: Bool
    }

    static let columns = """
        id, requester_id, emergency_type, priority, ST_Y(location::geometry), ST_X(location::geometry), description, status,
        wave, accepted_by, extract(epoch FROM created_at)::float8, extract(epoch FROM accepted_at)::float8,
        extract(epoch FROM started_at)::float8, extract(epoch FROM resolved_at)::float8,
        extract(epoch FROM cancelled_at)::float8, extract(epoch FROM escalated_at)::float8
        """

    /// `columns` of one row (at `offset` in it) as a record.
    static func record(_ row: PostgresRandomAccessRow, offset o: Int = 0) throws -> Record {
        var s = Caremesh_Dispatch_V1_Sos()
        let id = try row[o].decode(UUID.self)
        let requester = try row[o + 1].decode(UUID.self)
        s.id = id.uuidString.lowercased()
        s.requesterID = requester.uuidString.lowercased()
        s.emergencyType = emergencyTypes.key(for: try row[o + 2].decode(String.self)) ?? .unspecified
        s.priority = priorities.key(for: try row[o + 3].decode(String.self)) ?? .unspecified
        s.location.latitude = try row[o + 4].decode(Double.self)
        s.location.longitude = try row[o + 5].decode(Double.self)
        s.description_p = try row[o + 6].decode(String.self)
        let state = SosState(rawValue: try row[o + 7].decode(String.self)) ?? .pending
        s.status = state.proto
        let wave = Int(try row[o + 8].decode(Int32.self))
        s.wave = UInt32(wave)
        let acceptedBy = try row[o + 9].decode(UUID?.self)
        s.acceptedBy = acceptedBy?.uuidString.lowercased() ?? ""
        s.createdAt = Google_Protobuf_Timestamp(epochSeconds: try row[o + 10].decode(Double.self))
        if let t = try row[o + 11].decode(Double?.self) { s.acceptedAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        if let t = try row[o + 12].decode(Double?.self) { s.startedAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        if let t = try row[o + 13].decode(Double?.self) { s.resolvedAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        if let t = try row[o + 14].decode(Double?.self) { s.cancelledAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        let escalatedAt = try row[o + 15].decode(Double?.self)
        if let t = escalatedAt { s.escalatedAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        return Record(sos: s, id: id, state: state, requester: requester, acceptedBy: acceptedBy, wave: wave,
                      wasEscalated: escalatedAt != nil)
    }

    func one(_ c: PostgresConnection, _ query: PostgresQuery) async throws -> Record? {
        var out: Record?
        for try await row in try await c.query(query, logger: logger) { out = try Self.record(row.makeRandomAccess()) }
        return out
    }

    /// A new SOS, unless its requester already raised `limit` within the window (then no row).
    enum InsertSos: PreparedSQL {
        static let sql = """
            INSERT INTO sos_requests (requester_id, emergency_type, priority, location, description)
            SELECT $1, $2, $3, ST_SetSRID(ST_MakePoint($4, $5), 4326)::geography, $6
            WHERE (SELECT count(*) FROM sos_requests
                   WHERE requester_id = $1 AND created_at > now() - make_interval(secs => $7)) < $8
            RETURNING \(SosDesk.columns)
            """
        static let types: [PostgresDataType] = [.uuid, .text, .text, .float8, .float8, .text, .float8, .int8]
    }

    /// The SOS, locked for the rest of the transaction (concurrent changes queue behind it).
    func locked(_ c: PostgresConnection, _ id: UUID) async throws -> Record {
        guard let r = try await one(c, "SELECT \(unescaped: Self.columns) FROM sos_requests WHERE id = \(id) FOR UPDATE") else {
            throw RPCError(.notFound, "no SOS with this id")
        }
        return r
    }

    static func sosID(_ text: String) throws(RPCError) -> UUID {
        guard let id = UUID(uuidString: text) else { throw RPCError.invalidArgument(field: "sos_id", "must be a UUID") }
        return id
    }

    /// The caller's offer of this SOS, if they have one: its `response` (PENDING, ACCEPTED,
    /// DECLINED, WITHDRAWN).
    func offerResponse(_ c: PostgresConnection, _ id: UUID, _ caller: Caller) async throws -> String? {
        guard let me = caller.userID else { return nil }
        return try await c.query("SELECT response FROM sos_offers WHERE sos_id = \(id) AND responder_id = \(me)", logger: logger)
            .first(String.self)
    }

    /// What `caller` is to `record`: requester, staff, its responder, or holder of an offer they
    /// have not declined (a withdrawn one too: whoever lost an accept race is told why with
    /// FAILED_PRECONDITION, not refused as a stranger).
    static func relation(_ record: Record, _ caller: Caller, offer: String?) -> SosRelation {
        var relation: SosRelation = []
        if caller.hasAny(of: Responders.staff) { relation.insert(.staff) }
        guard let me = caller.userID else { return relation }
        if me == record.requester { relation.insert(.requester) }
        if me == record.acceptedBy { relation.insert(.responder) }
        if offer == "PENDING" || offer == "WITHDRAWN" { relation.insert(.offered) }
        return relation
    }

    /// `relation` with the caller's offer looked up.
    func relation(_ c: PostgresConnection, _ record: Record, _ caller: Caller) async throws -> SosRelation {
        Self.relation(record, caller, offer: try await offerResponse(c, record.id, caller))
    }

    // MARK: - Create and match

    func create(_ r: Caremesh_Dispatch_V1_CreateSosRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_CreateSosResponse {
        let me = try context.requireCaller().requireUserID()
        var v = FieldViolations()
        let type = Self.emergencyTypes[r.emergencyType]
        v.check(type != nil, "emergency_type", "must be one of MEDICAL, FIRE, ACCIDENT, CRIME, NATURAL_DISASTER, OTHER")
        let priority = Self.priorities[r.priority]
        v.check(priority != nil, "priority", "must be one of CRITICAL, HIGH, MEDIUM, LOW")
        Geo.validate(r.hasLocation ? r.location : nil, "location", into: &v)
        v.check(r.description_p.count <= 2_000, "description", "must be at most 2000 characters")
        try v.throwIfAny()
        let configuration = self.configuration
        let window = Double(configuration.sosRateWindow.components.seconds)
        let response: Caremesh_Dispatch_V1_CreateSosResponse? = try await store.withTransaction { c in
            // The rate limit, counted under a per-person lock (taken in a statement of its own,
            // so the count's snapshot sees whatever the previous holder committed): bursts
            // cannot slip past it. Under the limit the insert happens in the same statement.
            try await c.lockForTransaction("dispatch.sos-rate.\(me)", logger: self.logger)
            let inserted = try await c.run(Prepared<InsertSos>(me, type!, priority!, r.location.longitude, r.location.latitude,
                                                               r.description_p, window, configuration.sosRateLimit),
                                           logger: self.logger)
            guard let record = try inserted.first.map({ try Self.record($0.makeRandomAccess()) }) else {
                try await self.reportRateLimit(c, me, window: window)
                return nil
            }
            var events = PendingEvents()
            var created = Caremesh_Dispatch_V1_SosCreated()
            created.sosID = record.sos.id
            created.requesterID = record.sos.requesterID
            created.emergencyType = r.emergencyType
            created.priority = r.priority
            try events.add(created, key: record.sos.id)
            let (sos, offers) = try await self.dispatch(c, record, from: 1, &events)
            try await self.outbox.append(events, on: c)
            var response = Caremesh_Dispatch_V1_CreateSosResponse()
            response.sos = sos.sos
            response.offers = offers
            return response
        }
        guard let response else {
            throw RPCError(.resourceExhausted, "too many SOS requests: at most \(configuration.sosRateLimit) in \(Int(window)) s",
                           details: [RPCError.detail(reason: "SOS_RATE_LIMITED", domain: "dispatch")])
        }
        return response
    }

    /// Schedules one report to identity per person per window (the refusals in between are
    /// not reported again).
    private func reportRateLimit(_ c: PostgresConnection, _ me: UUID, window: Double) async throws {
        let recent = try await c.query("""
            WITH due AS (
                INSERT INTO sos_rate_reports (user_id) VALUES (\(me))
                ON CONFLICT (user_id) DO UPDATE SET reported_at = now()
                WHERE sos_rate_reports.reported_at < now() - make_interval(secs => \(window))
                RETURNING 1)
            SELECT count(*) FROM sos_requests
            WHERE requester_id = \(me) AND created_at > now() - make_interval(secs => \(window)) AND EXISTS (SELECT 1 FROM due)
            """, logger: logger).first(Int64.self) ?? 0
        guard recent > 0 else { return }
        let payload = try JSONSerialization.data(withJSONObject: [
            "user_id": me.uuidString.lowercased(), "recent": "\(recent)", "window_s": "\(Int(window))",
        ], options: [.sortedKeys])
        try await Jobs.schedule(Self.rateReportJob, payload: payload, on: c, logger: logger)
    }

    /// Offers `record` wave by wave from `wave` until a wave finds someone (or escalates),
    /// arming that wave's timer; its events go to `events`. Returns the SOS as it now stands
    /// and the offers made.
    func dispatch(_ c: PostgresConnection, _ record: Record, from first: Int, _ events: inout PendingEvents) async throws
        -> (Record, [Caremesh_Dispatch_V1_Offer])
    {
        // Empty waves are skipped at once; the escalation wave (professionals included) is
        // always the last tried, found or not.
        var tried: WavePlan?
        var offers: [Caremesh_Dispatch_V1_Offer] = []
        while let plan = WavePlan.plan((tried?.wave ?? first - 1) + 1, configuration) {
            tried = plan
            offers = try await match(c, record, plan)
            if !offers.isEmpty || plan.includesProfessionals { break }
        }
        guard let plan = tried else { return (record, []) }
        let escalation = plan.escalates ? try? SosLifecycle.apply(.escalate, to: record.state, by: []) : nil
        var updated = record
        if plan.wave != record.wave || escalation != nil {
            guard let row = try await one(c, """
                UPDATE sos_requests SET wave = \(plan.wave), status = coalesce(\(escalation?.to.rawValue), status),
                    escalated_at = CASE WHEN \(escalation != nil) THEN now() ELSE escalated_at END
                WHERE id = \(record.id) RETURNING \(unescaped: Self.columns)
                """) else { throw RPCError(.internal, "the SOS vanished") }
            updated = row
        }
        if let escalation {
            var e = Caremesh_Dispatch_V1_SosEscalated()
            e.sosID = record.sos.id
            e.wave = UInt32(plan.wave)
            try events.add(e, key: record.sos.id)
            try Self.statusChanged(&events, record, to: escalation.to, actor: nil)
        }
        try Self.announce(&events, updated, wave: plan.wave, offers.map(\.responderID), escalated: plan.includesProfessionals)
        if !offers.isEmpty || plan.includesProfessionals {
            let runAt = Date().addingTimeInterval(Double(configuration.waveTimeout.components.seconds))
            try await Jobs.schedule(Self.waveJob, payload: Data("\(record.id) \(plan.wave)".utf8), runAt: runAt,
                                    uniqueKey: Self.waveKey(record.id, plan.wave), on: c, logger: logger)
        }
        return (updated, offers)
    }

    /// `SosOffered` for the responders who now hold an offer of `record` (none: no event).
    static func announce(_ events: inout PendingEvents, _ record: Record, wave: Int, _ responders: [String], escalated: Bool) throws {
        guard !responders.isEmpty else { return }
        var e = Caremesh_Dispatch_V1_SosOffered()
        e.sosID = record.sos.id
        e.wave = UInt32(wave)
        e.responderIds = responders
        e.emergencyType = record.sos.emergencyType
        e.priority = record.sos.priority
        e.escalated = escalated
        try events.add(e, key: record.sos.id)
    }

    /// The wave's offers: among the `3 × waveSize` nearest eligible, available, free responders
    /// within the radius with a fresh fix (KNN on the GiST index), not the requester and not
    /// offered or refused this SOS before, those with a skill preferred for the emergency
    /// first, then the nearest; `waveSize` of them. Distances are great-circle (sphere).
    func match(_ c: PostgresConnection, _ record: Record, _ plan: WavePlan) async throws -> [Caremesh_Dispatch_V1_Offer] {
        let roles = plan.includesProfessionals ? ["volunteer", "professional"] : ["volunteer"]
        let preferred = SkillPreference.preferred(for: record.sos.emergencyType).compactMap(\.storedName)
        let maxAge = Double(configuration.locationMaxAge.components.seconds)
        let pool = 3 * configuration.waveSize
        let p = record.sos.location
        let rows = try await c.run(Prepared<MatchWave>(record.id, record.requester, p.longitude, p.latitude, plan.radius, roles,
                                                       preferred, maxAge, Int32(pool), Int32(plan.wave),
                                                       Int32(configuration.waveSize)), logger: logger)
        let offers = try rows.map { try Self.offer($0.makeRandomAccess(), sos: record.sos.id) }
        return offers.sorted { ($0.skillMatch ? 0 : 1, $0.distanceM) < ($1.skillMatch ? 0 : 1, $1.distanceM) }
    }

    /// `match_candidates` (migration 0102: the KNN scan, with its planner setting), the best
    /// `size` of them inserted as the wave's offers.
    enum MatchWave: PreparedSQL {
        static let sql = """
            WITH candidates AS (
                SELECT * FROM match_candidates($1, $2, ST_SetSRID(ST_MakePoint($3, $4), 4326)::geography, $5, $6, $7, $8, $9)
            )
            INSERT INTO sos_offers (sos_id, responder_id, wave, distance_m, skill_match)
            SELECT $1, user_id, $10, distance_m, skill_match FROM candidates
            ORDER BY skill_match DESC, distance_m LIMIT $11
            RETURNING \(SosDesk.offerColumns)
            """
        static let types: [PostgresDataType] = [
            .uuid, .uuid, .float8, .float8, .float8, .textArray, .textArray, .float8, .int4, .int4, .int4,
        ]
    }

    /// The wave timer: if nobody accepted and the SOS is still on that wave, the next one.
    func waveTimedOut(_ job: Job, _ c: PostgresConnection) async throws {
        let parts = String(decoding: job.payload, as: UTF8.self).split(separator: " ")
        guard parts.count == 2, let id = UUID(uuidString: String(parts[0])), let wave = Int(parts[1]) else { return }
        guard let record = try await one(c, "SELECT \(unescaped: Self.columns) FROM sos_requests WHERE id = \(id) FOR UPDATE"),
              record.state.isOpen, record.wave == wave
        else { return }
        var events = PendingEvents()
        _ = try await dispatch(c, record, from: wave + 1, &events)
        try await outbox.append(events, on: c)
    }

    // MARK: - Lifecycle

    func accept(_ r: Caremesh_Dispatch_V1_AcceptSosRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_AcceptSosResponse {
        let caller = try context.requireCaller()
        let me = try caller.requireUserID()
        let id = try Self.sosID(r.sosID)
        var response = Caremesh_Dispatch_V1_AcceptSosResponse()
        response.sos = try await store.withTransaction { c in
            let record = try await self.locked(c, id)
            let t = try SosLifecycle.apply(.accept, to: record.state, by: try await self.relation(c, record, caller))
            var fit = false, busy = false
            for try await (f, b) in try await c.query("""
                SELECT coalesce((SELECT verified AND active AND NOT credential_expired FROM responders WHERE user_id = \(me)), false),
                       EXISTS (SELECT 1 FROM sos_requests WHERE accepted_by = \(me) AND status IN ('ACCEPTED', 'IN_PROGRESS'))
                """, logger: self.logger).decode((Bool, Bool).self) { (fit, busy) = (f, b) }
            guard fit else { throw RPCError(.failedPrecondition, "this responder is no longer verified and active") }
            guard !busy else {
                throw RPCError(.failedPrecondition, "this responder already has an SOS in hand: finish or cancel it first")
            }
            guard let updated = try await self.one(c, """
                UPDATE sos_requests SET status = \(t.to.rawValue), accepted_by = \(me), accepted_at = now()
                WHERE id = \(id) RETURNING \(unescaped: Self.columns)
                """) else { throw RPCError(.internal, "the SOS vanished") }
            try await c.query("""
                UPDATE sos_offers SET response = CASE WHEN responder_id = \(me) THEN 'ACCEPTED' ELSE 'WITHDRAWN' END,
                    responded_at = now()
                WHERE sos_id = \(id) AND response = 'PENDING'
                """, logger: self.logger)
            try await Jobs.cancel(Self.waveJob, uniqueKey: Self.waveKey(id, record.wave), on: c, logger: self.logger)
            var events = PendingEvents()
            var e = Caremesh_Dispatch_V1_SosAccepted()
            e.sosID = updated.sos.id
            e.requesterID = updated.sos.requesterID
            e.responderID = me.uuidString.lowercased()
            try events.add(e, key: updated.sos.id)
            try Self.statusChanged(&events, record, to: t.to, actor: me)
            try await self.outbox.append(events, on: c)
            return updated.sos
        }
        return response
    }

    func decline(_ r: Caremesh_Dispatch_V1_DeclineSosRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_DeclineSosResponse {
        let caller = try context.requireCaller()
        let me = try caller.requireUserID()
        let id = try Self.sosID(r.sosID)
        var response = Caremesh_Dispatch_V1_DeclineSosResponse()
        response.sos = try await store.withTransaction { c in
            let record = try await self.locked(c, id)
            let offer = try await self.offerResponse(c, id, caller)
            // Declining twice is answered like the first time.
            if offer == "DECLINED" { return record.sos }
            _ = try SosLifecycle.apply(.decline, to: record.state, by: Self.relation(record, caller, offer: offer))
            try await c.query("""
                UPDATE sos_offers SET response = 'DECLINED', responded_at = now() WHERE sos_id = \(id) AND responder_id = \(me)
                """, logger: self.logger)
            try await c.query("INSERT INTO sos_rejections (sos_id, volunteer_id) VALUES (\(id), \(me)) ON CONFLICT DO NOTHING",
                              logger: self.logger)
            // Everyone in the current wave said no: the next wave now, not at the timeout.
            let waiting = try await c.query("""
                SELECT 1 FROM sos_offers WHERE sos_id = \(id) AND wave = \(record.wave) AND response = 'PENDING' LIMIT 1
                """, logger: self.logger).hasRows()
            guard !waiting else { return record.sos }
            try await Jobs.cancel(Self.waveJob, uniqueKey: Self.waveKey(id, record.wave), on: c, logger: self.logger)
            var events = PendingEvents()
            let sos = try await self.dispatch(c, record, from: record.wave + 1, &events).0.sos
            try await self.outbox.append(events, on: c)
            return sos
        }
        return response
    }

    func start(_ r: Caremesh_Dispatch_V1_StartSosRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_StartSosResponse {
        var response = Caremesh_Dispatch_V1_StartSosResponse()
        response.sos = try await move(r.sosID, .start, context, set: "started_at = now()")
        return response
    }

    func resolve(_ r: Caremesh_Dispatch_V1_ResolveSosRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_ResolveSosResponse {
        var response = Caremesh_Dispatch_V1_ResolveSosResponse()
        response.sos = try await move(r.sosID, .resolve, context, set: "resolved_at = now()")
        return response
    }

    /// A plain status change (start, resolve): the lifecycle decides, one UPDATE applies it.
    private func move(_ sosID: String, _ action: SosAction, _ context: RPCContext, set: String) async throws -> Caremesh_Dispatch_V1_Sos {
        let caller = try context.requireCaller()
        let id = try Self.sosID(sosID)
        return try await store.withTransaction { c in
            let record = try await self.locked(c, id)
            let t = try SosLifecycle.apply(action, to: record.state, by: try await self.relation(c, record, caller))
            guard let updated = try await self.one(c, """
                UPDATE sos_requests SET status = \(t.to.rawValue), \(unescaped: set) WHERE id = \(id) RETURNING \(unescaped: Self.columns)
                """) else { throw RPCError(.internal, "the SOS vanished") }
            var events = PendingEvents()
            try Self.statusChanged(&events, record, to: t.to, actor: caller.userID)
            try await self.outbox.append(events, on: c)
            return updated.sos
        }
    }

    func cancel(_ r: Caremesh_Dispatch_V1_CancelSosRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_CancelSosResponse {
        let caller = try context.requireCaller()
        let id = try Self.sosID(r.sosID)
        guard r.reason.count <= 500 else { throw RPCError.invalidArgument(field: "reason", "must be at most 500 characters") }
        var response = Caremesh_Dispatch_V1_CancelSosResponse()
        response.sos = try await store.withTransaction { c in
            let record = try await self.locked(c, id)
            let t = try SosLifecycle.apply(.cancel, to: record.state, by: try await self.relation(c, record, caller),
                                           wasEscalated: record.wasEscalated)
            if t.responderWithdrew, let me = caller.userID {
                return try await self.withdraw(c, record, to: t.to, responder: me, reason: r.reason)
            }
            return try await self.end(c, record, to: t.to, actor: caller.userID)
        }
        return response
    }

    /// The requester or staff cancel: the SOS ends, open offers are withdrawn, the timer stops.
    private func end(_ c: PostgresConnection, _ record: Record, to: SosState, actor: UUID?) async throws -> Caremesh_Dispatch_V1_Sos {
        guard let updated = try await one(c, """
            UPDATE sos_requests SET status = \(to.rawValue), cancelled_at = now() WHERE id = \(record.id)
            RETURNING \(unescaped: Self.columns)
            """) else { throw RPCError(.internal, "the SOS vanished") }
        try await c.query("""
            UPDATE sos_offers SET response = 'WITHDRAWN', responded_at = now() WHERE sos_id = \(record.id) AND response = 'PENDING'
            """, logger: logger)
        try await Jobs.cancel(Self.waveJob, uniqueKey: Self.waveKey(record.id, record.wave), on: c, logger: logger)
        var events = PendingEvents()
        try Self.statusChanged(&events, record, to: to, actor: actor)
        try await outbox.append(events, on: c)
        return updated.sos
    }

    /// The responder hands it back: counted against them, never offered it again, and everyone
    /// whose offer was withdrawn at the acceptance has it again, with a new wave.
    private func withdraw(_ c: PostgresConnection, _ record: Record, to: SosState, responder me: UUID, reason: String) async throws
        -> Caremesh_Dispatch_V1_Sos
    {
        let id = record.id
        guard let reopened = try await one(c, """
            UPDATE sos_requests SET status = \(to.rawValue), accepted_by = NULL, accepted_at = NULL, started_at = NULL
            WHERE id = \(id) RETURNING \(unescaped: Self.columns)
            """) else { throw RPCError(.internal, "the SOS vanished") }
        try await c.query("UPDATE responders SET cancellation_count = cancellation_count + 1 WHERE user_id = \(me)", logger: logger)
        try await c.query("INSERT INTO sos_cancellations (sos_id, volunteer_id, reason) VALUES (\(id), \(me), \(reason))", logger: logger)
        try await c.query("INSERT INTO sos_rejections (sos_id, volunteer_id) VALUES (\(id), \(me)) ON CONFLICT DO NOTHING", logger: logger)
        try await c.query("""
            UPDATE sos_offers SET response = 'DECLINED', responded_at = now() WHERE sos_id = \(id) AND responder_id = \(me)
            """, logger: logger)
        let again = try await c.query("""
            UPDATE sos_offers SET response = 'PENDING', responded_at = NULL WHERE sos_id = \(id) AND response = 'WITHDRAWN'
            RETURNING responder_id
            """, logger: logger)
        var reoffered: [String] = []
        for try await responder in again.decode(UUID.self) { reoffered.append(responder.uuidString.lowercased()) }
        var events = PendingEvents()
        try Self.statusChanged(&events, record, to: to, actor: me)
        try Self.announce(&events, reopened, wave: reopened.wave, reoffered, escalated: reopened.wasEscalated)
        let sos = try await dispatch(c, reopened, from: reopened.wave + 1, &events).0.sos
        try await outbox.append(events, on: c)
        return sos
    }

    static func statusChanged(_ events: inout PendingEvents, _ before: Record, to: SosState, actor: UUID?) throws {
        var e = Caremesh_Dispatch_V1_SosStatusChanged()
        e.sosID = before.sos.id
        e.status = to.proto
        e.previousStatus = before.state.proto
        e.actorID = actor?.uuidString.lowercased() ?? ""
        e.requesterID = before.sos.requesterID
        try events.add(e, key: before.sos.id)
    }

    // MARK: - Reading

    func get(_ r: Caremesh_Dispatch_V1_GetSosRequest, _ context: RPCContext) async throws -> Caremesh_Dispatch_V1_GetSosResponse {
        let caller = try context.requireCaller()
        let id = try Self.sosID(r.sosID)
        return try await store.withConnection { c in
            guard let record = try await self.one(c, "SELECT \(unescaped: Self.columns) FROM sos_requests WHERE id = \(id)") else {
                throw RPCError(.notFound, "no SOS with this id")
            }
            let offer = try await self.offerResponse(c, id, caller)
            let relation = Self.relation(record, caller, offer: offer)
            let everyOffer = relation.contains(.requester) || relation.contains(.staff)
            // A responder offered it once (even if they declined) still sees it.
            guard everyOffer || relation.contains(.responder) || offer != nil else {
                throw RPCError(.permissionDenied, "only its requester, the responders it was offered to, and staff may see this SOS")
            }
            var response = Caremesh_Dispatch_V1_GetSosResponse()
            response.sos = record.sos
            response.offers = try await self.offers(c, id, only: everyOffer ? nil : caller.userID)
            return response
        }
    }

    func offers(_ c: PostgresConnection, _ id: UUID, only responder: UUID?) async throws -> [Caremesh_Dispatch_V1_Offer] {
        let rows = try await c.query("""
            SELECT \(unescaped: Self.offerColumns)
            FROM sos_offers WHERE sos_id = \(id) AND (\(responder)::uuid IS NULL OR responder_id = \(responder))
            ORDER BY wave, skill_match DESC, distance_m
            """, logger: logger)
        var out: [Caremesh_Dispatch_V1_Offer] = []
        for try await row in rows { out.append(try Self.offer(row.makeRandomAccess(), sos: id.uuidString.lowercased())) }
        return out
    }

    static let offerColumns = """
        responder_id, wave, distance_m, skill_match, response, extract(epoch FROM offered_at)::float8,
        extract(epoch FROM responded_at)::float8
        """

    /// `offerColumns` of one row (at `offset` in it) as an offer of SOS `sos`.
    static func offer(_ row: PostgresRandomAccessRow, sos: String, offset o: Int = 0) throws -> Caremesh_Dispatch_V1_Offer {
        var offer = Caremesh_Dispatch_V1_Offer()
        offer.sosID = sos
        offer.responderID = try row[o].decode(UUID.self).uuidString.lowercased()
        offer.wave = UInt32(try row[o + 1].decode(Int32.self))
        offer.distanceM = try row[o + 2].decode(Double.self)
        offer.skillMatch = try row[o + 3].decode(Bool.self)
        offer.response = responses[try row[o + 4].decode(String.self)] ?? .unspecified
        offer.offeredAt = Google_Protobuf_Timestamp(epochSeconds: try row[o + 5].decode(Double.self))
        if let t = try row[o + 6].decode(Double?.self) { offer.respondedAt = Google_Protobuf_Timestamp(epochSeconds: t) }
        return offer
    }

    static let responses: [String: Caremesh_Dispatch_V1_OfferResponse] = [
        "PENDING": .pending, "ACCEPTED": .accepted, "DECLINED": .declined, "WITHDRAWN": .withdrawn,
    ]

    func listMyOffers(_ r: Caremesh_Dispatch_V1_ListMyOffersRequest, _ context: RPCContext) async throws
        -> Caremesh_Dispatch_V1_ListMyOffersResponse
    {
        let me = try context.requireCaller().requireUserID()
        let page = try Page(size: r.pageSize, token: r.pageToken)
        return try await store.withConnection { c in
            let rows = try await c.query("""
                SELECT o.*, s.*
                FROM (SELECT \(unescaped: Self.offerColumns), \(unescaped: Page.micros("offered_at")),
                             sos_id AS offered_sos, offered_at AS offered
                      FROM sos_offers WHERE responder_id = \(me)) o
                JOIN LATERAL (SELECT \(unescaped: Self.columns), status AS current FROM sos_requests WHERE id = o.offered_sos) s ON true
                WHERE (NOT \(r.openOnly) OR (o.response = 'PENDING' AND s.current IN ('PENDING', 'ESCALATED')))
                  AND \(after: page, time: "o.offered", id: "o.offered_sos")
                ORDER BY o.offered DESC, o.offered_sos DESC LIMIT \(page.limit)
                """, logger: self.logger)
            var found: [(row: Caremesh_Dispatch_V1_OfferView, micros: Int64, id: UUID)] = []
            for try await row in rows {
                let a = row.makeRandomAccess()
                let record = try Self.record(a, offset: 10)
                var view = Caremesh_Dispatch_V1_OfferView()
                view.sos = record.sos
                view.offer = try Self.offer(a, sos: record.sos.id)
                found.append((view, try a[7].decode(Int64.self), record.id))
            }
            var response = Caremesh_Dispatch_V1_ListMyOffersResponse()
            (response.offers, response.nextPageToken) = page.collect(found)
            return response
        }
    }

    // MARK: - Feedback

    func feedback(_ r: Caremesh_Dispatch_V1_SubmitFeedbackRequest, _ context: RPCContext) async throws
        -> Caremesh_Dispatch_V1_SubmitFeedbackResponse
    {
        let caller = try context.requireCaller()
        let me = try caller.requireUserID()
        var v = FieldViolations()
        let id = UUID(uuidString: r.sosID)
        v.check(id != nil, "sos_id", "must be a UUID")
        v.check((1...5).contains(r.rating), "rating", "must be from 1 to 5")
        v.check(r.comment.count <= 2_000, "comment", "must be at most 2000 characters")
        try v.throwIfAny()
        return try await store.withTransaction { c in
            let record = try await self.locked(c, id!)
            guard record.requester == me else {
                throw RPCError(.permissionDenied, "only the person who raised this SOS may rate it")
            }
            guard record.state == .resolved, let volunteer = record.acceptedBy else {
                throw RPCError(.failedPrecondition, "feedback is given once the SOS is resolved",
                               details: [RPCError.detail(reason: "SOS_\(record.state.rawValue)", domain: "dispatch")])
            }
            let rows = try await c.query("""
                INSERT INTO sos_feedback (sos_id, volunteer_id, requester_id, rating, comment)
                VALUES (\(id!), \(volunteer), \(me), \(Int32(r.rating)), \(r.comment))
                ON CONFLICT (sos_id) DO NOTHING
                RETURNING extract(epoch FROM created_at)::float8
                """, logger: self.logger)
            guard let at = try await rows.first(Double.self) else {
                throw RPCError(.failedPrecondition, "feedback for this SOS was already given",
                               details: [RPCError.detail(reason: "FEEDBACK_GIVEN", domain: "dispatch")])
            }
            var response = Caremesh_Dispatch_V1_SubmitFeedbackResponse()
            response.feedback.sosID = record.sos.id
            response.feedback.volunteerID = volunteer.uuidString.lowercased()
            response.feedback.rating = r.rating
            response.feedback.comment = r.comment
            response.feedback.createdAt = Google_Protobuf_Timestamp(epochSeconds: at)
            response.volunteerAverageRating = try await c.query("""
                SELECT average_rating::float8 FROM responders WHERE user_id = \(volunteer)
                """, logger: self.logger).first(Double.self) ?? 0
            var e = Caremesh_Dispatch_V1_FeedbackSubmitted()
            e.sosID = record.sos.id
            e.volunteerID = response.feedback.volunteerID
            e.rating = r.rating
            _ = try await self.outbox.append(e, key: record.sos.id, on: c)
            return response
        }
    }
}


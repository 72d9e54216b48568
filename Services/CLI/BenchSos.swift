import ArgumentParser
import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Histogram
import PostgresNIO
import Synchronization
import ZMQ

/// `caremesh bench sos`: SOS create + match through a running stack's router against a city of
/// seeded volunteers, at a fixed rate and flat out; location updates per second.
struct SosBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sos",
        abstract: "SOS create+match p50/p99 at a fixed rate and at most; location updates/s; through the router.",
        discussion: """
            Needs a running stack (caremesh up, release build recommended) started with a SOS rate limit \
            the bench cannot reach, e.g. DISPATCH_SOS_RATE_LIMIT=1000000 (the default allows 5 per person \
            per 10 minutes). It seeds --volunteers verified, available volunteers with fresh fixes straight \
            into dispatch's tables (ids derived from 'caremesh-bench-N', so re-runs reuse them), spread \
            uniformly over a 50 km square around Paris, and registers --requesters users and --concurrency \
            volunteers at identity. Loads: sos (open loop at --rate: latency counted from each call's \
            scheduled start, so a stall is not hidden), sos-max (closed loop at --concurrency), locations \
            (UpdateLocation, closed loop). The bench's SOS are closed afterwards (cancelled in the \
            database, offers withdrawn) so their wave timers do nothing; --remove deletes the seeded \
            volunteers.
            """
    )

    @OptionGroup var router: RouterOptions
    @Option(help: "Volunteers to seed.") var volunteers = 100_000
    @Option(help: "SOS per second for the fixed-rate load.") var rate = 100.0
    @Option(help: "Calls in flight for the closed-loop loads (default: four times the cores).") var concurrency: Int?
    @Option(help: "Requester accounts to register.") var requesters = 32
    @Option(help: "Warm-up seconds per load.") var warmup = 2.0
    @Option(help: "Measured seconds per load.") var duration = 10.0
    @Option(help: "Loads to run, of sos, sos-max, locations.") var loads: [String] = ["sos", "sos-max", "locations"]
    @Flag(help: "Delete the seeded volunteers afterwards.") var remove = false

    static let knownLoads: Set = ["sos", "sos-max", "locations"]
    /// Paris; the square is ±0.225° of latitude (25 km) and ±0.34° of longitude (≈25 km there).
    static let center = (lat: 48.8566, lon: 2.3522), halfLat = 0.225, halfLon = 0.34

    func validate() throws {
        if volunteers < 0 { throw ValidationError("--volunteers must be at least 0") }
        if !(rate > 0 && rate <= 100_000) { throw ValidationError("--rate must be between 0 and 100000") }
        if let concurrency, concurrency < 1 { throw ValidationError("--concurrency must be at least 1") }
        if requesters < 1 { throw ValidationError("--requesters must be at least 1") }
        if !(warmup >= 0 && duration > 0) { throw ValidationError("--warmup must be at least 0 and --duration more than 0") }
        if let unknown = loads.first(where: { !Self.knownLoads.contains($0) }) {
            throw ValidationError("unknown load '\(unknown)': choose from \(Self.knownLoads.sorted().joined(separator: ", "))")
        }
    }

    /// A point in the city, or in its middle `spread` (a fraction of its size).
    static func randomPoint(spread: Double = 1) -> Caremesh_Dispatch_V1_LatLng {
        var p = Caremesh_Dispatch_V1_LatLng()
        p.latitude = center.lat + Double.random(in: -halfLat...halfLat) * spread
        p.longitude = center.lon + Double.random(in: -halfLon...halfLon) * spread
        return p
    }

    func run() async throws {
        print(machineLine())
        let logger = cliLogger("caremesh.bench")
        let database = try LocalDatabase.url(for: "dispatch", layout: StackLayout())
        let c = concurrency ?? 4 * ProcessInfo.processInfo.activeProcessorCount
        let client = RPCClient(configuration: try router.clientConfiguration(), logger: logger)
        defer { client.close() }

        // The city: volunteers in dispatch's projection, as identity's events would leave them.
        var started = monotonicNanos()
        try await Store.withSingleConnection(database, timeout: .seconds(10), logger: logger) { conn in
            try await conn.query("""
                INSERT INTO responders (user_id, role, verified, verified_at, active, available, skills)
                SELECT md5('caremesh-bench-' || i)::uuid, 'volunteer', true, now(), true, true,
                       CASE WHEN i % 3 = 0 THEN ARRAY['FIRST_AID'] ELSE '{}' END
                FROM generate_series(1, \(volunteers)) i
                ON CONFLICT (user_id) DO UPDATE SET verified = true, active = true, available = true, credential_expired = false
                WHERE NOT (responders.verified AND responders.active AND responders.available AND NOT responders.credential_expired)
                """, logger: logger)
            try await conn.query("""
                INSERT INTO user_locations (user_id, location, accuracy_m, updated_at)
                SELECT md5('caremesh-bench-' || i)::uuid,
                       ST_SetSRID(ST_MakePoint(\(Self.center.lon) + (random() * 2 - 1) * \(Self.halfLon),
                                               \(Self.center.lat) + (random() * 2 - 1) * \(Self.halfLat)), 4326)::geography,
                       10, now()
                FROM generate_series(1, \(volunteers)) i
                ON CONFLICT (user_id) DO UPDATE SET updated_at = now()
                WHERE user_locations.updated_at < now() - interval '10 minutes'
                """, logger: logger)
            // A re-run keeps the city (same places, fixes refreshed only when they would go
            // stale during the run) and starts without the dead rows of earlier runs: a KNN
            // scan wading through them measures the last run's debris, not matching.
            try await conn.query("VACUUM (ANALYZE) responders, user_locations, sos_requests, sos_offers, jobs", logger: logger)
        }
        print(String(format: "dispatch seed: volunteers=%d seconds=%.1f", volunteers, Double(monotonicNanos() - started) / 1e9))

        // People: requesters (users) and volunteers who move (their own tokens).
        started = monotonicNanos()
        let run = UInt32.random(in: 0...UInt32.max)
        let locationCount = loads.contains("locations") ? c : 0
        let emails = (0..<(requesters + locationCount)).map { "bench-sos-\(run)-\($0)@example.org" }
        let people = try await registerBenchAccounts(client, emails: emails, password: "bench passphrase \(run)", concurrency: 64) {
            [requesters] i in i < requesters ? .user : .volunteer
        }.map(\.accessToken)
        let auth = people.map { CallOptions(metadata: ["authorization": "Bearer \($0)"]) }
        print(String(format: "identity register: accounts=%d seconds=%.1f", people.count, Double(monotonicNanos() - started) / 1e9))

        let requestersAuth = Array(auth.prefix(requesters)), movers = Array(auth.dropFirst(requesters))
        let processes = StackProcesses(layout: StackLayout(), names: ["router", "dispatch"])
        /// One SOS; the offers it got (wave 1).
        @Sendable func sos(_ i: Int) async throws -> Int {
            var r = Caremesh_Dispatch_V1_CreateSosRequest()
            r.emergencyType = [.medical, .fire, .accident, .other][i % 4]
            r.priority = .high
            r.location = Self.randomPoint()
            r.description_p = "bench"
            return try await client.call(DispatchMethods.createSos, request: r, options: requestersAuth[i % requesters]).offers.count
        }
        let offers = OfferCount()
        if loads.contains("sos") {
            let result = await FixedRate(rate: rate, warmup: warmup, duration: duration, processes: processes).run { i in
                offers.add(try await sos(i))
            }
            print(result.line("dispatch sos create+match (open loop)",
                              String(format: "rate=%.0f volunteers=%d offers_per_sos=%.2f", rate, volunteers, offers.mean)))
            if result.errors > 0 { print("  (errors: RESOURCE_EXHAUSTED means the stack's DISPATCH_SOS_RATE_LIMIT is in the way)") }
        }
        if loads.contains("sos-max") {
            let load = Load(concurrency: c, warmup: warmup, duration: duration, processes: processes)
            let result = await load.run { _ in _ = try await sos(Int.random(in: 0..<1_000_000)) }
            print(result.line("dispatch sos create+match (closed loop)", "concurrency=\(c) volunteers=\(volunteers)"))
        }
        if loads.contains("locations") {
            let load = Load(concurrency: c, warmup: warmup, duration: duration, processes: processes)
            let result = await load.run { task in
                var r = Caremesh_Dispatch_V1_UpdateLocationRequest()
                r.location = Self.randomPoint()
                r.accuracyM = 12
                _ = try await client.call(DispatchMethods.updateLocation, request: r, options: movers[task % movers.count])
            }
            print(result.line("dispatch location updates", "concurrency=\(c)"))
        }

        // Close the bench's SOS and cancel their wave timers (left scheduled, they would fire
        // during a later run and load the box it measures); keep or drop the city.
        try await Store.withSingleConnection(database, timeout: .seconds(10), logger: logger) { conn in
            try await Self.closeBenchSos(conn, logger: logger)
            if remove {
                try await conn.query("""
                    DELETE FROM user_locations WHERE user_id IN (SELECT md5('caremesh-bench-' || i)::uuid FROM generate_series(1, \(volunteers)) i)
                    """, logger: logger)
                try await conn.query("""
                    DELETE FROM responders WHERE user_id IN (SELECT md5('caremesh-bench-' || i)::uuid FROM generate_series(1, \(volunteers)) i)
                    """, logger: logger)
            }
        }
    }

    /// Closes the SOS a bench raised (description 'bench') and cancels their wave timers: left
    /// open, their waves would go on offering them during a later run and load the box it measures.
    static func closeBenchSos(_ conn: PostgresConnection, logger: Logger) async throws {
        try await conn.query("""
            WITH closed AS (
                UPDATE sos_requests SET status = 'CANCELLED', cancelled_at = now()
                WHERE description = 'bench' AND status IN ('PENDING', 'ESCALATED') RETURNING id)
            UPDATE sos_offers SET response = 'WITHDRAWN', responded_at = now()
            WHERE sos_id IN (SELECT id FROM closed) AND response = 'PENDING'
            """, logger: logger)
        try await conn.query("""
            UPDATE jobs SET state = 'cancelled', finished_at = now()
            WHERE kind = 'sos-wave' AND state = 'scheduled'
              AND lower(split_part(unique_key, ':', 1)) IN (SELECT id::text FROM sos_requests WHERE description = 'bench')
            """, logger: logger)
    }

    /// Offers per SOS over a run.
    final class OfferCount: Sendable {
        let counts = Mutex<(sos: Int, offers: Int)>((0, 0))
        func add(_ offers: Int) { counts.withLock { $0.sos += 1; $0.offers += offers } }
        var mean: Double { counts.withLock { $0.sos == 0 ? 0 : Double($0.offers) / Double($0.sos) } }
    }
}

/// An open-loop load: call `operation(i)` at `rate` per second whether or not earlier calls
/// have returned; each call's latency is counted from when it was due (so a stall shows in the
/// percentiles rather than slowing the arrivals: no coordinated omission).
struct FixedRate {
    var rate: Double
    var warmup: Double
    var duration: Double
    var processes: StackProcesses?

    func run(_ operation: @escaping @Sendable (Int) async throws -> Void) async -> Load.Result {
        await runTimed { i, _, _ in try await operation(i) }
    }

    /// `run`, telling each call when it was due (monotonic ns) and whether it is measured.
    func runTimed(_ operation: @escaping @Sendable (Int, UInt64, Bool) async throws -> Void) async -> Load.Result {
        let start = monotonicNanos() + 10_000_000
        let measureFrom = start + UInt64(warmup * 1e9)
        let end = measureFrom + UInt64(duration * 1e9)
        let cpu = Load.cpu(of: processes, from: measureFrom, to: end)
        let total = Int((warmup + duration) * rate)
        let (histogram, errors) = await withTaskGroup(of: (latency: UInt64?, counted: Bool).self) { group in
            for i in 0..<total {
                let due = start + UInt64(Double(i) / rate * 1e9)
                let now = monotonicNanos()
                if due > now { try? await Task.sleep(for: .nanoseconds(Int64(due - now))) }
                group.addTask {
                    do {
                        try await operation(i, due, due >= measureFrom)
                        return (monotonicNanos() - due, due >= measureFrom)
                    } catch {
                        return (nil, due >= measureFrom)
                    }
                }
            }
            var h = Load.histogram()
            var errors = 0
            for await (latency, counted) in group where counted {
                if let latency { _ = h.record(latency) } else { errors += 1 }
            }
            return (h, errors)
        }
        return Load.Result(histogram: histogram, errors: errors, duration: duration, cpu: await cpu.value)
    }
}

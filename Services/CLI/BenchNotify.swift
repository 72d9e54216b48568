import ArgumentParser
import AsyncHTTPClient
import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Histogram
import IdentityService
import NIOCore
import PostgresNIO
import Synchronization
import ZMQ

/// `caremesh bench notify`: how fast people are told. SOS raised at a fixed rate near volunteers
/// who each hold a notification stream open on the router's HTTP edge and chose SMS: SOS created
/// → the offer on each volunteer's stream, and → its SMS handed to the provider (messaging's
/// `sent_at`); then many idle streams held open, with the edge's CPU and memory.
struct NotifyBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "notify",
        abstract: "Notifications: SOS → offer on the stream and → SMS to the provider p50/p99 at a fixed rate; idle streams' cost.",
        discussion: """
            Needs a running stack (caremesh up with the provider sandbox, release build recommended) whose \
            DISPATCH_SOS_RATE_LIMIT lets --requesters raise --rate SOS a second (e.g. 100000). It registers \
            --volunteers volunteers (placed in dispatch's tables around one point, as identity's events would \
            leave them, each with a phone, SMS chosen and consented) and --requesters requesters, opens one \
            stream per volunteer, and raises SOS open loop at --rate at that point: every offer counts from its \
            SOS's scheduled start to its arrival on the volunteer's stream, and to its SMS's acceptance by the \
            sandbox. Then --streams more streams (one account's) are held open idle for --duration seconds: \
            the router's CPU over that time and its resident memory per stream.
            """
    )

    @OptionGroup var router: RouterOptions
    @Option(help: "The router's HTTP edge.") var edge = "http://" + (ProcessInfo.processInfo.environment["CAREMESH_HTTP_ADDRESS"] ?? "127.0.0.1:8080")
    @Option(help: "SOS per second.") var rate = 50.0
    @Option(help: "Volunteers, each with a stream.") var volunteers = 100
    @Option(help: "Requester accounts.") var requesters = 16
    @Option(help: "Idle streams for the memory and CPU figure (0: none).") var streams = 5_000
    @Option(help: "Warm-up seconds.") var warmup = 2.0
    @Option(help: "Measured seconds.") var duration = 10.0

    func validate() throws {
        if !(rate > 0 && rate <= 1_000) { throw ValidationError("--rate must be between 0 and 1000") }
        if volunteers < 1 || requesters < 1 || streams < 0 { throw ValidationError("--volunteers and --requesters at least 1, --streams 0 or more") }
    }

    /// Volunteers and SOS spread over a fraction of `SosBench`'s city (about 6 × 6 km), so each
    /// SOS is offered to its own nearest few, as in a city.
    static let spread = 0.15

    func run() async throws {
        print(machineLine())
        let logger = cliLogger("caremesh.bench")
        let layout = StackLayout()
        let client = RPCClient(configuration: try router.clientConfiguration(), logger: logger)
        defer { client.close() }
        let run = UInt32.random(in: 0...UInt32.max)
        let sessions = try await registerBenchAccounts(client, emails: (0..<(volunteers + requesters)).map { "bench-notify-\(run)-\($0)@example.org" },
                                                       password: "bench passphrase \(run)", concurrency: 32) { [volunteers] i in
            i < volunteers ? .volunteer : .user
        }
        let auth = sessions.map { CallOptions(metadata: ["authorization": "Bearer \($0.accessToken)"]) }
        let people = try await Self.ids(of: sessions, client)
        try await place(Array(people.prefix(volunteers)), layout: layout, logger: logger)
        // Each volunteer: a phone, SMS and push chosen, their own consent.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<volunteers {
                group.addTask {
                    var update = Caremesh_Identity_V1_UpdateProfileRequest()
                    update.profile.name = "Bench volunteer \(i)"
                    update.profile.phone = "+3361\(String(format: "%07d", (Int(run % 1_000) * 10_000 + i) % 10_000_000))"
                    update.profile.preferences.notifications = .with { $0.sms = true; $0.push = true }
                    _ = try await client.call(IdentityMethods.updateProfile, request: update, options: auth[i])
                    _ = try await client.call(MessagingMethods.recordMySmsConsent, request: .with { $0.optedIn = true }, options: auth[i])
                }
            }
            try await group.waitForAll()
        }
        let arrivals = Arrivals()
        let open = try await (0..<volunteers).asyncMapConcurrently { i in
            try await SSEReader(url: edge + "/v1/notifications/stream", bearer: sessions[i].accessToken) { notification in
                if notification.kind == .sosOffered, let sos = notification.data["sos_id"] { arrivals.record(sos) }
            }
        }
        defer { open.forEach { $0.close() } }
        try await Task.sleep(for: .seconds(1))

        // SOS at the fixed rate; each one's scheduled start, on both clocks.
        let due = Mutex<[String: (mono: UInt64, wall: Double, measured: Bool)]>([:])
        let requesterAuth = Array(auth.dropFirst(volunteers))
        let processes = StackProcesses(layout: layout, names: ["router", "dispatch", "messaging", "sandbox"])
        let create = await FixedRate(rate: rate, warmup: warmup, duration: duration, processes: processes).runTimed { i, scheduled, measured in
            var r = Caremesh_Dispatch_V1_CreateSosRequest()
            r.emergencyType = .medical
            r.priority = .high
            r.location = SosBench.randomPoint(spread: Self.spread)
            r.description_p = "bench"
            let wall = Date().timeIntervalSince1970 - Double(monotonicNanos() - scheduled) / 1e9
            let sos = try await client.call(DispatchMethods.createSos, request: r, options: requesterAuth[i % requesterAuth.count]).sos
            due.withLock { $0[sos.id] = (scheduled, wall, measured) }
        }
        print(create.line("notify sos create (open loop)", String(format: "rate=%.0f volunteers=%d", rate, volunteers)))
        try await Task.sleep(for: .seconds(3))
        // The bench's SOS closed (their next waves would go on notifying).
        try await Store.withSingleConnection(try LocalDatabase.url(for: "dispatch", layout: layout), timeout: .seconds(10), logger: logger) { c in
            try await SosBench.closeBenchSos(c, logger: logger)
        }
        let measured = due.withLock { $0.filter(\.value.measured) }
        var stream = Load.histogram()
        for (sos, times) in arrivals.all() {
            guard let start = measured[sos] else { continue }
            for at in times where at > start.mono { _ = stream.record(at - start.mono) }
        }
        print(Load.Result(histogram: stream, errors: 0, duration: duration).line("notify sos → offer on the volunteer's stream",
                                                                               "offers=\(stream.totalCount)"))
        let smsLatencies = try await Store.withSingleConnection(try LocalDatabase.url(for: "messaging", layout: layout), timeout: .seconds(10),
                                                               logger: logger) { c in
            var out: [UInt64] = []
            // Notifications are under forced row-level security: read them as messaging does.
            try await Store.setActor("service:messaging", roles: ["service"], on: c, local: false, logger: logger)
            let rows = try await c.query("""
                SELECT n.data->>'sos_id', extract(epoch FROM m.sent_at)::float8 FROM notifications n
                JOIN notification_deliveries d ON d.notification_id = n.id AND d.channel = 'sms' JOIN sms_messages m ON m.id = d.sms_message_id
                WHERE n.kind = 'SOS_OFFERED' AND n.data->>'sos_id' = ANY(\(Array(measured.keys))) AND m.sent_at IS NOT NULL
                """, logger: logger)
            for try await (sos, sent) in rows.decode((String, Double).self) {
                if let start = measured[sos], sent > start.wall { out.append(UInt64((sent - start.wall) * 1e9)) }
            }
            return out
        }
        var sms = Load.histogram()
        for latency in smsLatencies { _ = sms.record(latency) }
        print(Load.Result(histogram: sms, errors: 0, duration: duration).line("notify sos → offer SMS handed to the provider", "sms=\(sms.totalCount)"))
        open.forEach { $0.close() }
        if streams > 0 { try await idleStreams(token: sessions[0].accessToken, layout: layout) }
    }

    /// `--streams` idle streams of one account: the router's CPU over `--duration` with them
    /// open, and its resident memory before and after, per stream.
    func idleStreams(token: String, layout: StackLayout) async throws {
        guard let router = StackProcesses(layout: layout, names: ["router"])?.processes.first?.pid else {
            print("notify idle streams: no router pid in \(layout.run.path)")
            return
        }
        let before = Self.residentKB(router)
        var held: [SSEReader] = []
        for batch in stride(from: 0, to: streams, by: 250) {
            held += try await (batch..<min(streams, batch + 250)).asyncMapConcurrently { _ in
                try await SSEReader(url: edge + "/v1/notifications/stream", bearer: token) { _ in }
            }
        }
        try await Task.sleep(for: .seconds(2))
        let cpu0 = StackProcesses.stat(router)?.cpu ?? 0
        try await Task.sleep(for: .seconds(duration))
        let cpu = (StackProcesses.stat(router)?.cpu ?? 0) - cpu0
        let after = Self.residentKB(router)
        let open = held.filter(\.isOpen).count
        print(String(format: "notify idle streams: streams=%d open=%d router_cpu_pct=%.2f rss_kb_before=%d rss_kb_after=%d kb_per_stream=%.1f",
                     streams, open, cpu / duration * 100, before, after, Double(after - before) / Double(max(1, streams))))
        held.forEach { $0.close() }
    }

    static func residentKB(_ pid: Int32) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    /// The accounts' user ids (who each session is).
    static func ids(of sessions: [Caremesh_Identity_V1_Session], _ client: RPCClient) async throws -> [UUID] {
        try await sessions.asyncMapConcurrently { session in
            let me = try await client.call(IdentityMethods.whoAmI, request: .init(),
                                           options: CallOptions(metadata: ["authorization": "Bearer \(session.accessToken)"]))
            guard let id = UUID(uuidString: me.user.id) else { throw ValidationError("identity returned no user id") }
            return id
        }
    }

    /// The volunteers in dispatch's projection, verified and available, spread over the area.
    func place(_ people: [UUID], layout: StackLayout, logger: Logger) async throws {
        try await Store.withSingleConnection(try LocalDatabase.url(for: "dispatch", layout: layout), timeout: .seconds(10), logger: logger) { c in
            try await c.query("""
                INSERT INTO responders (user_id, role, verified, verified_at, active, available, skills)
                SELECT id, 'volunteer', true, now(), true, true, '{}' FROM unnest(\(people)::uuid[]) id
                ON CONFLICT (user_id) DO UPDATE SET verified = true, active = true, available = true
                """, logger: logger)
            try await c.query("""
                INSERT INTO user_locations (user_id, location, accuracy_m, updated_at)
                SELECT id, ST_SetSRID(ST_MakePoint(\(SosBench.center.lon) + (random() * 2 - 1) * \(SosBench.halfLon * Self.spread),
                                                   \(SosBench.center.lat) + (random() * 2 - 1) * \(SosBench.halfLat * Self.spread)), 4326)::geography,
                       10, now()
                FROM unnest(\(people)::uuid[]) id
                ON CONFLICT (user_id) DO UPDATE SET updated_at = now()
                """, logger: logger)
        }
    }

    /// When each SOS's offers arrived (monotonic ns), by SOS id.
    final class Arrivals: Sendable {
        private let times = Mutex<[String: [UInt64]]>([:])
        func record(_ sos: String) {
            let now = monotonicNanos()
            times.withLock { $0[sos, default: []].append(now) }
        }
        func all() -> [String: [UInt64]] { times.withLock { $0 } }
    }
}

/// A notification stream read as an app would: each event's notification handed to `onEvent`.
final class SSEReader: Sendable {
    private let task = Mutex<Task<Void, Never>?>(nil)
    private let open = Mutex(true)

    init(url: String, bearer: String, onEvent: @escaping @Sendable (Caremesh_Messaging_V1_Notification) -> Void) async throws {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Authorization", value: "Bearer \(bearer)")
        let response = try await Self.client.execute(request, timeout: .seconds(3_600))
        guard response.status == .ok else { throw ValidationError("the stream answered \(response.status.code)") }
        let reader = Task { [self] in
            var text = ""
            do {
                for try await chunk in response.body {
                    text += String(buffer: chunk)
                    while let end = text.range(of: "\n\n") {
                        let block = text[..<end.lowerBound]
                        for line in block.split(separator: "\n") where line.hasPrefix("data: ") {
                            if let n = try? Caremesh_Messaging_V1_Notification(jsonString: String(line.dropFirst(6))) { onEvent(n) }
                        }
                        text.removeSubrange(..<end.upperBound)
                    }
                }
            } catch {}
            self.open.withLock { $0 = false }
        }
        task.withLock { $0 = reader }
    }

    /// Streams hold their connection for good: a pool as large as the bench's streams.
    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 20_000)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    var isOpen: Bool { open.withLock { $0 } }
    func close() { task.withLock { $0?.cancel() } }
}

extension Sequence where Element: Sendable {
    /// `transform` of each element, all at once; in the sequence's order.
    func asyncMapConcurrently<T: Sendable>(_ transform: @escaping @Sendable (Element) async throws -> T) async throws -> [T] {
        try await withThrowingTaskGroup(of: (Int, T).self) { group in
            var count = 0
            for (i, element) in enumerated() {
                group.addTask { (i, try await transform(element)) }
                count += 1
            }
            var out = [T?](repeating: nil, count: count)
            for try await (i, value) in group { out[i] = value }
            return out.map { $0! }
        }
    }
}

import ArgumentParser
import AsyncHTTPClient
import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import IdentityService
import MessagingService
import NIOCore
import PostgresNIO
import Synchronization

/// `caremesh bench messaging`: SMS sends through the router into the provider sandbox, and
/// provider webhooks through the router's HTTP edge.
struct MessagingBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "messaging",
        abstract: "SMS sends/s into the sandbox and webhook ingests/s through the HTTP edge; through the router.",
        discussion: """
            Needs a running stack from `caremesh up` (release build recommended), whose messaging sends to the \
            sandbox. It gives --numbers phone numbers consent (straight into messaging's ledger), registers an \
            admin at identity, then: sends: SendSms back to back from --concurrency callers for --duration \
            seconds (the call's latency and rate), and how fast the sender handed them all to the sandbox \
            (accepted by the provider, counted from the first send to the last acceptance), and how fast they \
            settled (each at its final status from the sandbox's two callbacks, which lag behind under load). Webhooks: Twilio \
            status callbacks, signed as Twilio signs them, posted to the edge by --concurrency HTTP clients; \
            each is logged, authenticated and checked for idempotency; half repeat a callback already applied \
            (duplicates), half are new (a status for a message id messaging does not know).
            """
    )

    @OptionGroup var router: RouterOptions
    @Option(help: "What to measure: sends, webhooks or both.") var part = "both"
    @Option(help: "Calls (or HTTP requests) in flight.") var concurrency = 64
    @Option(help: "Phone numbers with consent.") var numbers = 1_000
    @Option(help: "Warm-up seconds.") var warmup = 2.0
    @Option(help: "Measured seconds.") var duration = 10.0

    func validate() throws {
        if !["sends", "webhooks", "both"].contains(part) { throw ValidationError("--part must be sends, webhooks or both") }
        if concurrency < 1 || concurrency > 1_000 { throw ValidationError("--concurrency must be between 1 and 1000") }
        if numbers < 1 || numbers > 1_000_000 { throw ValidationError("--numbers must be between 1 and 1000000") }
        if !(warmup >= 0 && duration > 0) { throw ValidationError("--warmup must be at least 0 and --duration more than 0") }
    }

    static func phone(_ i: Int) -> String { "+3367" + String(format: "%07d", i) }

    func run() async throws {
        print(machineLine())
        let logger = cliLogger("caremesh.bench")
        let layout = StackLayout()
        let messagingDB = try LocalDatabase.url(for: MessagingService.name, layout: layout)
        let identityDB = try LocalDatabase.url(for: IdentityService.name, layout: layout)
        let client = RPCClient(configuration: try router.clientConfiguration(), logger: logger)
        defer { client.close() }
        try await Store.withSingleConnection(messagingDB, timeout: .seconds(30), logger: logger) { conn in
            try await conn.query("""
                INSERT INTO sms_consent (phone_number, consent_given, consent_method, evidence, created_by)
                SELECT '+3367' || lpad(i::text, 7, '0'), true, 'written', 'caremesh bench', 'bench'
                FROM generate_series(0, \(numbers - 1)) i
                WHERE NOT EXISTS (SELECT 1 FROM sms_consent c WHERE c.phone_number = '+3367' || lpad(i::text, 7, '0'))
                """, logger: logger)
            try await conn.query("VACUUM (ANALYZE) sms_consent, sms_messages, webhook_applied", logger: logger)
        }
        let run = UInt32.random(in: 0...UInt32.max)
        let email = "bench-messaging-\(run)@example.org", password = "bench passphrase \(run)"
        _ = try await registerBenchAccounts(client, emails: [email], password: password, concurrency: 1)
        try await Store.withSingleConnection(identityDB, timeout: .seconds(10), logger: logger) { conn in
            try await conn.query("UPDATE users SET role = 'admin' WHERE email = \(email)", logger: logger)
        }
        var login = Caremesh_Identity_V1_LoginRequest()
        login.email = email
        login.password = password
        let session = try await client.call(IdentityMethods.login, request: login, options: .init(timeout: .seconds(60))).session
        let admin = CallOptions(metadata: ["authorization": "Bearer \(session.accessToken)"])

        if part != "webhooks" { try await sends(client, admin: admin, run: run, messagingDB: messagingDB, logger: logger) }
        if part != "sends" { try await webhooks(layout: layout, messagingDB: messagingDB, logger: logger) }
    }

    func sends(_ client: RPCClient, admin: CallOptions, run: UInt32, messagingDB: DatabaseURL, logger: Logger) async throws {
        let processes = StackProcesses(layout: StackLayout(), names: ["router", "messaging", "sandbox"])
        let counter = Atomic<Int>(0)
        let started = Date()
        let result = await Load(concurrency: concurrency, warmup: warmup, duration: duration, processes: processes).run { _ in
            let n = counter.add(1, ordering: .relaxed).newValue
            var r = Caremesh_Messaging_V1_SendSmsRequest()
            r.to = Self.phone(n % numbers)
            r.text = "Reminder: your appointment is tomorrow at 10:00. Reply STOP to opt out."
            r.clientCorrelator = "bench-\(run)-\(n)"
            _ = try await client.call(MessagingMethods.sendSms, request: r, options: admin)
        }
        print(result.line("messaging SendSms (consent checked, recorded; closed loop)", "concurrency=\(concurrency) numbers=\(numbers)"))
        // Until every message of this run is with the provider (or 60 s), then until each has its
        // final status from the sandbox's callbacks (or 120 s more): under load the callbacks,
        // two per send through the edge, lag behind the sends, and the work they leave is part
        // of what a send costs.
        let prefix = "bench-\(run)-%"
        // The run's messages as a range of the primary key (ids are time-ordered; 1 s allowed for
        // the clocks, and older random ids fall in a day's range only by a chance of ~1 in 3
        // million), read once a second: a scan of the whole table four times a second, as this
        // did before, took PostgreSQL ~0.2 s each, most of a CPU while the callbacks settled.
        let first = UUID.timeOrderedFloor(started.addingTimeInterval(-1))
        let last = UUID.timeOrderedFloor(started.addingTimeInterval(86_400))
        func progress() async throws -> Progress {
            try await Store.withSingleConnection(messagingDB, timeout: .seconds(10), logger: logger) { conn in
                let rows = try await conn.query("""
                    SELECT count(*), count(*) FILTER (WHERE sent_at IS NOT NULL),
                           coalesce(extract(epoch FROM max(sent_at) - min(created_at)), 0)::float8,
                           count(*) FILTER (WHERE delivered_at IS NOT NULL OR failed_at IS NOT NULL),
                           coalesce(extract(epoch FROM max(coalesce(delivered_at, failed_at)) - min(created_at)), 0)::float8
                    FROM sms_messages
                    WHERE id >= \(first) AND id < \(last) AND client_correlator LIKE \(prefix) AND created_at >= \(started)
                    """, logger: logger)
                var out = Progress()
                for try await r in rows.decode((Int64, Int64, Double, Int64, Double).self) { out = Progress(r) }
                return out
            }
        }
        /// Reads the progress once a second until every message has come to `done` (or `limit` s).
        func until(_ done: KeyPath<Progress, Int64>, within limit: Double) async throws -> Progress {
            let deadline = Date().addingTimeInterval(limit)
            var now = Progress()
            while Date() < deadline {
                now = try await progress()
                if now.count > 0 && now.count == now[keyPath: done] { break }
                try await Task.sleep(for: .seconds(1))
            }
            return now
        }
        let handed = try await until(\.accepted, within: 60)
        print(String(format: "messaging sends handed to the sandbox (first send → last provider acceptance): count=%d accepted=%d seconds=%.2f per_s=%.0f",
                     handed.count, handed.accepted, handed.acceptedSeconds, Progress.rate(handed.accepted, handed.acceptedSeconds)))
        let settled = try await until(\.settled, within: 120)
        print(String(format: "messaging sends settled (first send → last final status from the callbacks): count=%d settled=%d seconds=%.2f per_s=%.0f",
                     settled.count, settled.settled, settled.settledSeconds, Progress.rate(settled.settled, settled.settledSeconds)))
    }

    /// How far a run's messages have come: with the provider, then at their final status.
    struct Progress {
        var count: Int64 = 0, accepted: Int64 = 0, acceptedSeconds = 0.0, settled: Int64 = 0, settledSeconds = 0.0

        init() {}
        init(_ r: (Int64, Int64, Double, Int64, Double)) {
            (count, accepted, acceptedSeconds, settled, settledSeconds) = r
        }

        static func rate(_ n: Int64, _ seconds: Double) -> Double { seconds > 0 ? Double(n) / seconds : 0 }
    }

    func webhooks(layout: StackLayout, messagingDB: DatabaseURL, logger: Logger) async throws {
        var env = ProcessInfo.processInfo.environment
        try layout.sandboxEnvironment(&env)
        guard let token = env["SANDBOX_TWILIO_AUTH_TOKEN"] else { throw ValidationError("no sandbox credentials") }
        // Messages to repeat callbacks for: the latest accepted by Twilio (the sandbox).
        let known = try await Store.withSingleConnection(messagingDB, timeout: .seconds(10), logger: logger) { conn in
            try await conn.query("""
                SELECT id, provider_message_id FROM sms_messages WHERE provider = 'twilio' AND provider_message_id IS NOT NULL
                ORDER BY created_at DESC LIMIT 10000
                """, logger: logger).collect().map { try $0.decode((UUID, String).self) }
        }
        // Every request made and signed before the clock starts (enough for the run at 8k/s;
        // beyond that they come round again, as repeats), sent by a lean HTTP/1.1 load.
        guard let address = env["CAREMESH_HTTP_ADDRESS"].map({ $0.split(separator: ":") }) ?? Optional(["127.0.0.1", "8080"]),
              address.count == 2, let port = Int(address[1]) else { throw ValidationError("CAREMESH_HTTP_ADDRESS is not host:port") }
        let host = String(address[0])
        let count = max(concurrency * 10, Int((warmup + duration) * 8_000))
        let requests = (0..<count).map { n -> ByteBuffer in
            let path: String
            var form: [(name: String, value: String)]
            if n % 2 == 0, !known.isEmpty {
                let (id, sid) = known[(n / 2) % known.count]
                path = "/webhooks/sms/twilio?m=\(id.uuidString.lowercased())"
                form = [("MessageSid", sid), ("MessageStatus", "delivered")]
            } else {
                path = "/webhooks/sms/twilio"
                form = [("MessageSid", "SMbench\(n)x\(UInt32.random(in: 0...UInt32.max))"), ("MessageStatus", "delivered")]
            }
            form += [("AccountSid", "AC00000000000000000000000000000000"), ("From", "+15005550006"), ("To", Self.phone(n % numbers))]
            let body = FormEncoding.encode(form)
            let signature = TwilioSignature.compute(authToken: token, url: "http://\(host):\(port)\(path)", params: form)
            return ByteBuffer(string: "POST \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\n"
                              + "Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: \(signature)\r\n"
                              + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)")
        }
        let processes = StackProcesses(layout: layout, names: ["router", "messaging"])
        let before = try await Self.inbox(messagingDB, logger: logger)
        let started = Date()
        let result = try await HTTPLoad(host: host, port: port, concurrency: concurrency, warmup: warmup, duration: duration,
                                        processes: processes).run(requests)
        print(result.line("messaging webhooks (signed Twilio status callbacks through the HTTP edge; half duplicates; closed loop)",
                          "concurrency=\(concurrency) known_messages=\(known.count)"))
        // Answered means logged; applying follows. Until every one logged is applied (or 60 s).
        var after = try await Self.inbox(messagingDB, logger: logger)
        let deadline = Date().addingTimeInterval(60)
        while after.waiting > 0, Date() < deadline {
            try await Task.sleep(for: .milliseconds(100))
            after = try await Self.inbox(messagingDB, logger: logger)
        }
        let seconds = Date().timeIntervalSince(started)
        let logged = after.last - before.last
        print(String(format: "messaging webhooks applied (first request → last applied, warm-up included): logged=%d waiting=%d seconds=%.2f per_s=%.0f",
                     logged, after.waiting, seconds, Double(logged - after.waiting) / seconds))
    }

    /// The webhook inbox: its latest arrival number (from its sequence: no scan of the log) and
    /// how many wait to be applied (read as the service: the log is under row-level security).
    static func inbox(_ url: DatabaseURL, logger: Logger) async throws -> (last: Int64, waiting: Int64) {
        try await Store.withSingleConnection(url, timeout: .seconds(10), logger: logger) { conn in
            try await Store.setActor(MessagingService.actorName, roles: ["service"], on: conn, local: false, logger: logger)
            let rows = try await conn.query("""
                SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('sms_webhook_logs', 'received_seq')::regclass), 0),
                       (SELECT count(*) FROM sms_webhook_logs WHERE NOT processed AND response_status = 200 AND attempts < \(Int32(Webhooks.maxAttempts)))
                """, logger: logger)
            var out: (Int64, Int64) = (0, 0)
            for try await r in rows.decode((Int64, Int64).self) { out = r }
            return out
        }
    }
}

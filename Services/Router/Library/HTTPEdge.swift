import CareMeshContracts
import CareMeshRPC
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import NIOSSL
import Logging
import NIOCore
import ServiceLifecycle
import SwiftProtobuf
import Synchronization

/// The router's HTTP/JSON edge (WIRE.md): `POST /v1/{service}/{Method}` with a JSON body in
/// protobuf's JSON mapping becomes the same RPC through the router (`Authorization`,
/// `Idempotency-Key` and `traceparent` go to metadata; the status code maps to HTTP as in
/// google/rpc/code.proto; errors are `{"code","message","details"}`); `POST
/// /webhooks/{kind}/{provider}` hands the request whole (headers, body, source address, the URL
/// the provider signed) to messaging; `GET /v1/notifications/stream`, a person's notifications as
/// Server-Sent Events (`HTTPEdge+NotificationStream`); `GET /healthz`; `GET /metrics` in
/// Prometheus' text format. Its settings: `HTTPEdge+Configuration`.
public final class HTTPEdge: Service, Sendable {
    /// Requests answered, by outcome, for `/metrics`.
    struct Counters {
        var rpc: [Int: Int] = [:]
        var webhooks: [Int: Int] = [:]
    }

    public let configuration: Configuration
    let router: Router
    /// The edge's client of the router, made once the router has bound its client socket.
    private let clientBox = Mutex<RPCClient?>(nil)
    var client: RPCClient { clientBox.withLock { $0! } }
    /// The edge's client signed in as the service "router" (nil without `ROUTER_SERVICE_SECRET`):
    /// it follows and replays notifications.
    private let serviceClientBox = Mutex<RPCClient?>(nil)
    var serviceClient: RPCClient? { serviceClientBox.withLock { $0 } }
    /// The notification streams open on this edge.
    let hub = NotificationHub()
    let logger: Logger
    private let counters = Mutex(Counters())
    private let bound = BoundPort()

    /// Methods by "service/Method" as the URL names them.
    let methods: [String: AnyRPCMethod]

    public init(configuration: Configuration, router: Router, logger: Logger) {
        self.configuration = configuration
        self.router = router
        self.logger = logger
        var byName: [String: AnyRPCMethod] = [:]
        for m in allRPCMethods {
            guard let service = m.serviceName else { continue }
            byName["\(service)/\(m.name)"] = m
        }
        methods = byName
    }

    /// The port it listens on, once running.
    public func port() async -> Int { await bound.wait() }

    struct Context: RequestContext, RemoteAddressRequestContext {
        var coreContext: CoreRequestContextStorage
        let remoteAddress: SocketAddress?

        init(source: ApplicationRequestContextSource) {
            coreContext = .init(source: source)
            remoteAddress = source.channel.remoteAddress
        }
    }

    public func run() async throws {
        // The router binds in its own run(): wait for its in-process endpoint (no TCP between
        // the edge and the router).
        while router.localClientEndpoint.isEmpty {
            try await Task.sleep(for: .milliseconds(10))
        }
        var config = ClientConfiguration(endpoint: router.localClientEndpoint)
        config.defaultTimeout = configuration.timeout
        let client = RPCClient(configuration: config, logger: logger)
        clientBox.withLock { $0 = client }
        let service = router.configuration.serviceSecret.map { secret in
            var config = config
            config.credentials = ServiceCredentials(service: "router", secret: secret)
            return RPCClient(configuration: config, logger: logger)
        }
        serviceClientBox.withLock { $0 = service }
        let routes = Hummingbird.Router(context: Context.self)
        routes.get("/healthz") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: #"{"status":"SERVING"}"#)))
        }
        routes.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(string: await self.metrics())))
        }
        routes.post("/v1/:service/:method") { request, context in try await self.rpc(request, context) }
        routes.post("/webhooks/:kind/:provider") { request, context in try await self.webhook(request, context) }
        routes.get("/v1/notifications/stream") { request, context in try await self.notificationStream(request, context) }
        let server: HTTPServerBuilder
        if let files = configuration.tls {
            let chain = try NIOSSLCertificate.fromPEMFile(files.certificateChain).map { NIOSSLCertificateSource.certificate($0) }
            let key = try NIOSSLPrivateKey(file: files.privateKey, format: .pem)
            server = try .tls(.http1(), tlsConfiguration: .makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key)))
        } else {
            server = .http1()
        }
        let host = configuration.host.hasPrefix("[") ? String(configuration.host.dropFirst().dropLast()) : configuration.host
        let app = Application(
            router: routes,
            server: server,
            configuration: .init(address: .hostname(host, port: configuration.port), serverName: "caremesh-router"),
            onServerRunning: { channel in self.bound.set(channel.localAddress?.port ?? 0) },
            logger: logger)
        defer {
            client.close()
            service?.close()
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.run() }
            if let service {
                group.addTask { await self.followNotifications(service) }
                group.addTask { await self.beatStreams() }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    // MARK: - JSON RPC

    func json(_ status: Int, _ text: String) -> Response {
        Response(status: .init(code: status), headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    func error(_ e: RPCError) -> Response {
        var object: [String: Any] = ["code": e.code.name, "message": e.message]
        object["details"] = e.details.compactMap { d -> Any? in
            guard let text = try? d.jsonString(), let data = text.data(using: .utf8) else { return nil }
            return try? JSONSerialization.jsonObject(with: data)
        }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        var response = json(e.code.httpStatus, String(decoding: data, as: UTF8.self))
        if let ms = e.retryAfterMs { response.headers[.retryAfter] = "\(max(1, (Int(ms) + 999) / 1000))" }
        return response
    }

    func count(_ keyPath: WritableKeyPath<Counters, [Int: Int]>, _ status: Int) {
        counters.withLock { $0[keyPath: keyPath][status, default: 0] += 1 }
    }

    func rpc(_ request: Request, _ context: Context) async throws -> Response {
        let response = await answer(request, context)
        count(\.rpc, Int(response.status.code))
        return response
    }

    static func header(_ request: Request, _ name: String) -> String? {
        request.headers.first { $0.name.canonicalName == name }?.value
    }

    func answer(_ request: Request, _ context: Context) async -> Response {
        let service = context.parameters.get("service") ?? "", name = context.parameters.get("method") ?? ""
        guard let method = methods["\(service)/\(name)"] else {
            return error(RPCError(.unimplemented, "no method \(name) in service \(service)"))
        }
        var body = request
        let data: Data
        do { data = Data(buffer: try await body.collectBody(upTo: configuration.maxBody)) } catch {
            return self.error(RPCError(.resourceExhausted, "the body is larger than \(configuration.maxBody) bytes"))
        }
        let message: any SwiftProtobuf.Message
        do {
            message = data.isEmpty ? method.requestType.init() : try method.requestType.init(jsonUTF8Data: data)
        } catch {
            return self.error(RPCError(.invalidArgument, "the body is not a valid \(method.requestType.protoMessageName) in protobuf's JSON mapping"))
        }
        var metadata: [String: String] = [:]
        if let auth = request.headers[.authorization] { metadata["authorization"] = auth }
        if let trace = Self.header(request, "traceparent") { metadata["traceparent"] = trace }
        let key = Self.header(request, "idempotency-key")
        do {
            let bytes = try await client.callRaw(service: service, method: method.path, idempotency: method.idempotency,
                                                 message: try message.serializedData(),
                                                 options: CallOptions(metadata: metadata, idempotencyKey: key))
            let reply = try method.responseType.init(serializedBytes: bytes)
            return json(200, try reply.jsonString())
        } catch let e as RPCError {
            return error(e)
        } catch {
            return self.error(RPCError(.internal, "the reply could not be read"))
        }
    }

    // MARK: - Webhooks

    func webhook(_ request: Request, _ context: Context) async throws -> Response {
        var w = Caremesh_Messaging_V1_WebhookRequest()
        w.kind = context.parameters.get("kind") ?? ""
        w.provider = context.parameters.get("provider") ?? ""
        let base = configuration.publicURL ?? "http://" + (request.head.authority ?? "\(configuration.host):\(configuration.port)")
        w.url = base + request.uri.description
        for field in request.headers { w.headers.append(.with { $0.name = field.name.canonicalName; $0.value = field.value }) }
        var body = request
        do { w.body = Data(buffer: try await body.collectBody(upTo: configuration.maxBody)) } catch {
            count(\.webhooks, 413)
            return Response(status: .contentTooLarge)
        }
        if let address = context.remoteAddress { w.sourceAddress = address.ipAddress ?? "\(address)" }
        w.receivedAt = Google_Protobuf_Timestamp(date: Date())
        do {
            let reply = try await client.call(MessagingMethods.handleWebhook, request: w)
            count(\.webhooks, Int(reply.status))
            var headers = HTTPFields()
            if !reply.contentType.isEmpty { headers[.contentType] = reply.contentType }
            return Response(status: .init(code: Int(reply.status)), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: reply.body)))
        } catch {
            // Not taken: the provider retries (nothing was applied, or it is applied once).
            let status = error.code == .resourceExhausted || error.code == .unavailable ? 503 : 500
            count(\.webhooks, status)
            return Response(status: .init(code: status))
        }
    }

    // MARK: - Metrics

    /// The router's counters, then every service's backlog (`metricsOfServices`).
    func metrics() async -> String {
        routerMetrics() + (await metricsOfServices())
    }

    func routerMetrics() -> String {
        let s = router.stats, io = router.ioCounters
        let c = counters.withLock { $0 }
        var out = ""
        func counter(_ name: String, _ help: String, _ value: Int) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) counter\n\(name) \(value)\n"
        }
        counter("caremesh_router_requests_total", "Requests received from clients.", s.requests)
        counter("caremesh_router_dispatched_total", "Requests handed to a worker.", s.dispatched)
        counter("caremesh_router_replies_total", "Replies relayed to clients.", s.replies)
        counter("caremesh_router_queue_full_total", "Requests refused with RESOURCE_EXHAUSTED (queue full).", s.queueFull)
        counter("caremesh_router_expired_in_queue_total", "Requests whose deadline passed while queued.", s.expiredInQueue)
        counter("caremesh_router_no_worker_total", "Requests for a service with no worker by their deadline.", s.noWorker)
        counter("caremesh_router_workers_lost_total", "Workers declared dead.", s.workersLost)
        counter("caremesh_router_calls_lost_total", "Calls answered UNAVAILABLE because their worker died.", s.callsLost)
        counter("caremesh_router_malformed_total", "Malformed messages dropped.", s.malformed)
        counter("caremesh_router_oversized_total", "Messages refused for their size.", s.oversized)
        counter("caremesh_router_unauthenticated_total", "Requests refused for a missing or invalid token.", s.unauthenticated)
        counter("caremesh_router_undeliverable_total", "Messages that could not be sent to a peer.", io.undeliverable)
        counter("caremesh_router_workers_registered_total", "Worker registrations accepted.", s.workersRegistered)
        counter("caremesh_router_workers_refused_total",
                "Worker READYs refused: a key not bound to the service, or a READY on the client endpoint.", s.workersRefused)
        let handshakes = router.handshakesRefused
        out += "# HELP caremesh_bus_handshakes_refused_total CurveZMQ handshakes refused by the ZAP handler, by endpoint.\n"
        out += "# TYPE caremesh_bus_handshakes_refused_total counter\n"
        out += "caremesh_bus_handshakes_refused_total{endpoint=\"workers\"} \(handshakes.workers)\n"
        out += "caremesh_bus_handshakes_refused_total{endpoint=\"clients\"} \(handshakes.clients)\n"
        out += "# HELP caremesh_http_requests_total HTTP requests answered by the edge, by route and status.\n"
        out += "# TYPE caremesh_http_requests_total counter\n"
        for (status, n) in c.rpc.sorted(by: { $0.key < $1.key }) { out += "caremesh_http_requests_total{route=\"rpc\",status=\"\(status)\"} \(n)\n" }
        for (status, n) in c.webhooks.sorted(by: { $0.key < $1.key }) {
            out += "caremesh_http_requests_total{route=\"webhook\",status=\"\(status)\"} \(n)\n"
        }
        return out
    }

    /// A sample of a gauge: its labels (name, value) and its value as written.
    typealias Sample = (labels: [(String, String)], value: String)

    /// Services that answered `Health/Backlog` once: one that stops answering is reported
    /// down (a bare worker, like the bench's, never answers and is left out).
    private let backlogServices = Mutex<Set<String>>([])

    /// Live workers by service (`caremesh_router_workers`), and the backlog of each service
    /// with a live worker, asked at once with a 1 s deadline: outbox heads, each consumer's
    /// cursor and its lag behind its source's head, due and failed jobs, the services' own
    /// queues. Positions and counts only.
    func metricsOfServices() async -> String {
        let workers = router.workersByService
        let backlogs = await withTaskGroup(of: (String, Caremesh_Health_V1_BacklogResponse?).self) { group in
            for (service, live) in workers where live > 0 {
                group.addTask {
                    (service, try? await self.client.call(HealthMethods.backlog, service: service, request: .init(),
                                                          options: .init(timeout: .seconds(1))))
                }
            }
            return await group.reduce(into: [String: Caremesh_Health_V1_BacklogResponse]()) { $0[$1.0] = $1.1 }
        }
        let known = backlogServices.withLock { seen in
            seen.formUnion(backlogs.keys)
            return seen
        }

        var out = ""
        /// One gauge family: its HELP and TYPE once, then each sample.
        func family(_ name: String, _ help: String, _ samples: [Sample]) {
            guard !samples.isEmpty else { return }
            out += "# HELP \(name) \(help)\n# TYPE \(name) gauge\n"
            for (labels, value) in samples {
                let text = labels.map { "\($0.0)=\"\(Self.escapeLabel($0.1))\"" }.joined(separator: ",")
                out += "\(name){\(text)} \(value)\n"
            }
        }
        let answered = backlogs.sorted { $0.key < $1.key }
        /// A family with one sample per service that answered.
        func perService(_ name: String, _ help: String, _ value: (Caremesh_Health_V1_BacklogResponse) -> String) {
            family(name, help, answered.map { ([("service", $0.key)], value($0.value)) })
        }
        family("caremesh_router_workers", "Live workers registered at the router, by service.",
               workers.sorted { $0.key < $1.key }.map { ([("service", $0.key)], "\($0.value)") })
        family("caremesh_backlog_up", "1 if the service answered Health/Backlog for this scrape, else 0.",
               known.sorted().map { ([("service", $0)], backlogs[$0] == nil ? "0" : "1") })
        perService("caremesh_outbox_head_seq", "The highest event seq in the service's outbox.") { "\($0.outboxHead)" }
        var cursors: [Sample] = [], lags: [Sample] = []
        for (service, backlog) in answered {
            for (source, position) in backlog.eventCursors.sorted(by: { $0.key < $1.key }) {
                let labels = [("service", service), ("source", source)]
                cursors.append((labels, "\(position)"))
                if let head = backlogs[source]?.outboxHead { lags.append((labels, "\(max(0, head - position))")) }
            }
        }
        family("caremesh_event_cursor_seq", "The last event seq of source the service has applied.", cursors)
        family("caremesh_event_consumer_lag", "Events of source the service has not applied yet (the source's head less its cursor).", lags)
        perService("caremesh_jobs_due", "Durable jobs whose time has come and that have not finished.") { "\($0.jobsDue)" }
        perService("caremesh_jobs_oldest_due_seconds", "How long the longest-waiting due job has been due.") {
            String(format: "%.3f", $0.oldestJobDueSeconds)
        }
        perService("caremesh_jobs_failed", "Jobs that failed for good and are still kept.") { "\($0.jobsFailed)" }
        family("caremesh_queue_waiting", "Items waiting in a service's own work queue.",
               answered.flatMap { service, backlog in
                   backlog.queues.sorted(by: { $0.key < $1.key }).map { ([("service", service), ("queue", $0.key)], "\($0.value)") }
               })
        return out
    }

    /// A Prometheus label value: backslash, double quote and line feed escaped.
    static func escapeLabel(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }
}

/// An HTTP edge setting that cannot be used.
public struct EdgeConfigurationError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

import ArgumentParser
import CareMeshContracts
import CareMeshRPC
import Foundation
import Logging

/// `caremesh bench-worker`: serves the no-op `caremesh.bench.v1.Bench` service (benchmarks,
/// and the bus's own failure tests that need a worker in another process).
struct BenchWorker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-worker",
        abstract: "Serve caremesh.bench.v1.Bench (Echo, Write) as MDP service 'bench'.",
        shouldDisplay: false
    )

    @Option(help: "The MDP service name to register.") var service = "bench"
    @Option(help: "The router's worker endpoint.") var endpoint: String?
    @Option(help: "Requests handled at once.") var capacity: Int?
    @Flag(help: "Speak strict 18/MDP framing instead of the delimited dialect.") var strict = false

    func run() async throws {
        ServiceRunner.bootstrapLogging()
        let logger = Logger(label: "caremesh.bench-worker")
        var config = try WorkerConfiguration(service: service, environment: ProcessInfo.processInfo.environment)
        if let endpoint { config.endpoint = endpoint }
        if let capacity { config.connection.capacity = capacity }
        if strict { config.dialect = .strict }
        let worker = ServiceWorker(configuration: config, handlers: Self.handlers(instanceID: config.instanceID),
                                   logger: logger)
        try await ServiceRunner.run([worker], logger: logger)
    }

    /// Echo and Write: return the payload, after `delay_ms` if asked.
    static func handlers(instanceID: String) -> RPCHandlers {
        var handlers = RPCHandlers()
        let echo: @Sendable (Caremesh_Bench_V1_EchoRequest, RPCContext) async throws -> Caremesh_Bench_V1_EchoResponse = { request, _ in
            if request.delayMs > 0 { try await Task.sleep(for: .milliseconds(Int64(request.delayMs))) }
            var reply = Caremesh_Bench_V1_EchoResponse()
            reply.payload = request.payload
            reply.instanceID = instanceID
            return reply
        }
        // No-ops that never block: they answer on the worker's I/O thread (a delay suspends).
        handlers.register(BenchMethods.echo, start: .inline, echo)
        handlers.register(BenchMethods.write, start: .inline, echo)
        return handlers
    }
}

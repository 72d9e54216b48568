import ArgumentParser
import CareMeshContracts
import CareMeshRPC
import Foundation
import SwiftProtobuf

/// `caremesh call SERVICE METHOD [JSON|-]`: JSON in and out through protobuf's JSON mapping.
struct Call: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Call a method with a JSON request; print the JSON reply.",
        discussion: """
        METHOD is the full name (/caremesh.health.v1.Health/Check) or a unique short form \
        (Health/Check). JSON is the request in protobuf's JSON mapping; '-' reads it from \
        standard input; omitted means '{}'. On error the exit status is non-zero and the \
        status code's name is printed, e.g. 'NOT_FOUND: …'.
        """
    )

    @Argument(help: "The service (identity, dispatch, alerts, messaging, …).") var service: String
    @Argument(help: "The method.") var method: String
    @Argument(help: "The request as JSON, or '-' for standard input.") var json: String?
    @Option(name: .customLong("idempotency-key"), help: "Makes a call with effects safe to retry.") var idempotencyKey: String?
    @Option(name: .customLong("metadata"), help: "Extra metadata, KEY=VALUE (repeatable).") var metadata: [String] = []
    @OptionGroup var router: RouterOptions

    func run() async throws {
        guard let m = AnyRPCMethod.find(method) else {
            writeError("INVALID_ARGUMENT: unknown method '\(method)'. Known: \(allRPCMethods.map(\.path).joined(separator: ", "))")
            throw ExitCode(Int32(StatusCode.invalidArgument.rawValue))
        }
        var text = json ?? "{}"
        if text == "-" {
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        }
        let request: any SwiftProtobuf.Message
        do { request = try m.requestType.init(jsonString: text) } catch {
            writeError("INVALID_ARGUMENT: the JSON is not a valid \(m.requestType.protoMessageName): \(error)")
            throw ExitCode(Int32(StatusCode.invalidArgument.rawValue))
        }
        var meta: [String: String] = [:]
        // An access token from the environment (never a command-line argument, which `ps` shows).
        if let token = ProcessInfo.processInfo.environment["CAREMESH_TOKEN"], !token.isEmpty {
            meta["authorization"] = "Bearer \(token)"
        }
        for kv in metadata {
            let parts = kv.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { meta[parts[0].lowercased()] = String(parts[1]) }
        }
        let client = RPCClient(configuration: try router.clientConfiguration())
        defer { client.close() }
        do {
            let body = try await client.callRaw(service: service, method: m.path, idempotency: m.idempotency,
                                                message: request.wireBytes(),
                                                options: CallOptions(metadata: meta, idempotencyKey: idempotencyKey))
            let reply = try m.responseType.init(serializedBytes: body)
            print(try reply.jsonString())
        } catch let error as RPCError {
            writeError("\(error.code.name): \(error.message)")
            throw ExitCode(Int32(error.code.rawValue))
        }
    }
}

/// `caremesh health`: every service's health through the router.
struct Health: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check every service's health through the router.")

    @Argument(help: "Services to check (default: identity dispatch alerts messaging).")
    var services: [String] = []
    @OptionGroup var router: RouterOptions

    func run() async throws {
        try await checkHealth(services, router: router)
    }
}

/// Prints each service's health; exits UNAVAILABLE (14) if any is not SERVING.
func checkHealth(_ services: [String], router: RouterOptions) async throws {
    let names = services.isEmpty ? StackLayout.services : services
    let client = RPCClient(configuration: try router.clientConfiguration())
    defer { client.close() }
    var healthy = true
    for name in names {
        let label = name.padding(toLength: 10, withPad: " ", startingAt: 0)
        do {
            let reply = try await client.call(HealthMethods.check, service: name, request: .init())
            print("\(label) \(reply.status == .serving ? "SERVING" : "\(reply.status)")  \(reply.instanceID)")
            if reply.status != .serving { healthy = false }
        } catch {
            print("\(label) \(error.code.name): \(error.message)")
            healthy = false
        }
    }
    if !healthy { throw ExitCode(Int32(StatusCode.unavailable.rawValue)) }
}

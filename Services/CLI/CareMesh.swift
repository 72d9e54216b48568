import ArgumentParser
import CareMeshContracts
import CareMeshRPC
import Foundation

/// `caremesh`: the command line for people and scripts.
@main
struct CareMesh: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "caremesh",
        abstract: "Run a local CareMesh stack, call any method with JSON, check health, migrate, benchmark.",
        version: CareMeshVersion.current,
        subcommands: [Call.self, Health.self, Up.self, Down.self, Status.self, Migrate.self, DB.self, IdentityAdmin.self, Keys.self, Bench.self, BenchWorker.self,
                      EventsProbe.self]
    )
}

/// Options every command that talks to the router shares.
struct RouterOptions: ParsableArguments {
    @Option(name: .customLong("router"), help: "The router's client endpoint (default: $CAREMESH_ROUTER or tcp://127.0.0.1:5555).")
    var endpoint: String?

    @Option(help: "Timeout per call, in milliseconds.")
    var timeoutMs: Int64 = 10_000

    /// From the environment (with the local stack's router key when none is given: see
    /// `StackLayout.clientEnvironment`).
    func clientConfiguration() throws -> ClientConfiguration {
        var c = try ClientConfiguration(environment: StackLayout.clientEnvironment())
        if let endpoint { c.endpoint = endpoint }
        c.defaultTimeout = .milliseconds(timeoutMs)
        return c
    }
}

/// Exit with the status code's name on stderr.
struct CallFailed: Error, CustomStringConvertible {
    let error: RPCError
    var description: String { "\(error.code.name): \(error.message)" }
}

func writeError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

import CareMeshRPC
import CareMeshRouter
import Foundation
import Logging
import ServiceLifecycle

ServiceRunner.bootstrapLogging()
let logger = Logger(label: "caremesh.router")
let environment = ProcessInfo.processInfo.environment
let configuration: RouterConfiguration
do { configuration = try RouterConfiguration(environment: environment) } catch {
    FileHandle.standardError.write(Data("router: \(error)\n".utf8))
    exit(1)
}
let router = Router(configuration: configuration, logger: logger)
// The HTTP/JSON edge runs beside the broker unless CAREMESH_HTTP_ADDRESS is "off".
var services: [any Service] = [router]
let edgeConfiguration: HTTPEdge.Configuration?
do { edgeConfiguration = try HTTPEdge.Configuration(environment: environment) } catch {
    FileHandle.standardError.write(Data("router: \(error)\n".utf8))
    exit(1)
}
if let edge = edgeConfiguration {
    services.append(HTTPEdge(configuration: edge, router: router, logger: logger))
}
try await ServiceRunner.run(services, logger: logger)

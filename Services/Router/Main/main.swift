import CareMeshRPC
import CareMeshRouter
import Foundation
import Logging

ServiceRunner.bootstrapLogging()
let logger = Logger(label: "caremesh.router")
let router = Router(configuration: RouterConfiguration(environment: ProcessInfo.processInfo.environment), logger: logger)
try await ServiceRunner.run([router], logger: logger)

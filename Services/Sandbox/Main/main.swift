import CareMeshRPC
import Foundation
import Logging
import ProviderSandbox

// The provider sandbox as a process (`caremesh up` runs it when no real provider is configured).
ServiceRunner.bootstrapLogging()
let logger = Logger(label: "caremesh.sandbox")
let sandbox = ProviderSandbox(configuration: .init(environment: ProcessInfo.processInfo.environment), logger: logger)
try await ServiceRunner.run([sandbox], logger: logger)

import CareMeshRPC
import IdentityService
import Logging

ServiceRunner.bootstrapLogging()
let logger = Logger(label: "caremesh.identity")
try await ServiceRunner.run([IdentityService.makeWorker(logger: logger)], logger: logger)

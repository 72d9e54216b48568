import CareMeshRPC
import MessagingService
import Logging

ServiceRunner.bootstrapLogging()
let logger = Logger(label: "caremesh.messaging")
try await ServiceRunner.run([MessagingService.makeWorker(logger: logger)], logger: logger)

import CareMeshRPC
import AlertsService
import Logging

ServiceRunner.bootstrapLogging()
let logger = Logger(label: "caremesh.alerts")
try await ServiceRunner.run([AlertsService.makeWorker(logger: logger)], logger: logger)

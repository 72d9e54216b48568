import CareMeshRPC
import DispatchService
import Logging

ServiceRunner.bootstrapLogging()
let logger = Logger(label: "caremesh.dispatch")
try await ServiceRunner.run([DispatchService.makeWorker(logger: logger)], logger: logger)

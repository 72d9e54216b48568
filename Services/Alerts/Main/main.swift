import CareMeshStore
import AlertsService

await ServiceHost.main("alerts") { try await AlertsService.make(logger: $0) }

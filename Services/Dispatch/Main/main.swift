import CareMeshStore
import DispatchService

await ServiceHost.main("dispatch") { try await DispatchService.make(logger: $0) }

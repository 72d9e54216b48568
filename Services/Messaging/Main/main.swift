import CareMeshStore
import MessagingService

await ServiceHost.main("messaging") { try await MessagingService.make(logger: $0) }

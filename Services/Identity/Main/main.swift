import CareMeshStore
import IdentityService

await ServiceHost.main("identity") { try await IdentityService.make(logger: $0) }

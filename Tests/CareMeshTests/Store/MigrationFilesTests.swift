import AlertsService
import CareMeshStore
import CareMeshTesting
import DispatchService
import Foundation
import IdentityService
import MessagingService
import Testing

/// The migrations compiled in are the .sql files in the tree (scripts/generate-migrations.py).
@Suite struct MigrationFilesTests {
    func files(_ folder: String) throws -> [Migration] {
        let dir = TestStack.packageRoot.appendingPathComponent(folder)
        guard FileManager.default.fileExists(atPath: dir.path) else { return [] }
        var found: [Int: Migration] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: dir.path) where name.hasSuffix(".up.sql") {
            let stem = String(name.dropLast(".up.sql".count))
            let version = try #require(Int(stem.prefix(4)))
            found[version] = Migration(
                version: version, name: String(stem.dropFirst(5)),
                up: try String(contentsOf: dir.appendingPathComponent(name), encoding: .utf8),
                down: try String(contentsOf: dir.appendingPathComponent("\(stem).down.sql"), encoding: .utf8))
        }
        return found.keys.sorted().map { found[$0]! }
    }

    @Test("embedded migrations match their files (else run scripts/generate-migrations.py)")
    func embeddedMatchFiles() throws {
        #expect(PlatformMigrations.all == (try files("Shared/Store/Migrations")))
        #expect(PlatformMigrations.all.allSatisfy { $0.version < 100 })
        let services: [(String, [Migration])] = [("Identity", IdentityService.migrations), ("Dispatch", DispatchService.migrations),
                                                 ("Alerts", AlertsService.migrations), ("Messaging", MessagingService.migrations)]
        for (name, embedded) in services {
            #expect(embedded == (try files("Services/\(name)/Migrations")), "\(name)")
            #expect(embedded.allSatisfy { $0.version >= 100 }, "\(name): service migrations start at 0100")
        }
    }
}

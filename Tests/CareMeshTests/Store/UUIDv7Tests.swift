import CareMeshStore
import Foundation
import Testing

@Suite struct UUIDv7Tests {
    /// RFC 9562 §5.7's layout: 48 bits of Unix milliseconds, version 7, variant 10.
    @Test func layoutAndOrder() {
        let at = Date(timeIntervalSince1970: 1_645_557_742.000)  // the RFC's example time, 0x017F22E279B0 ms
        let id = UUID.timeOrdered(now: at)
        #expect(id.uuidString.lowercased().hasPrefix("017f22e2-79b0-7"))
        let bytes = withUnsafeBytes(of: id.uuid) { Array($0) }
        #expect(bytes[6] >> 4 == 7)
        #expect(bytes[8] >> 6 == 0b10)
        // Later milliseconds sort later, byte for byte (as PostgreSQL compares uuid) and as text.
        // (2 ms apart: a Date's double may land a hair under its millisecond.)
        let ids = (0..<200).map { UUID.timeOrdered(now: at.addingTimeInterval(Double($0) * 0.002)) }
        #expect(ids.map { $0.uuidString }.sorted() == ids.map { $0.uuidString })
        // Within one millisecond, 74 random bits: no two alike.
        #expect(Set((0..<10_000).map { _ in UUID.timeOrdered(now: at) }).count == 10_000)
        // The floor of a millisecond: no greater than any id of it, greater than every id before.
        let floor = UUID.timeOrderedFloor(at).uuidString
        #expect(floor.lowercased() == "017f22e2-79b0-7000-8000-000000000000")
        #expect((0..<1_000).allSatisfy { _ in UUID.timeOrdered(now: at).uuidString >= floor })
        #expect(UUID.timeOrdered(now: at.addingTimeInterval(-0.002)).uuidString < floor)
    }
}

@testable import CareMeshRPC
import Logging
import Synchronization
import Testing

/// The services' log handler writes what `StreamLogHandler` writes, formatting metadata only
/// when a line goes out.
@Suite struct LogHandlerTests {
    final class Lines: TextOutputStream, @unchecked Sendable {
        private let lines = Mutex<[String]>([])
        func write(_ string: String) { lines.withLock { $0.append(string) } }
        /// The lines without their timestamp (everything up to the level).
        var text: [String] {
            lines.withLock { $0 }.map { line in
                guard let level = line.range(of: " info ") ?? line.range(of: " debug ") ?? line.range(of: " error ") else { return line }
                return String(line[level.lowerBound...])
            }
        }
    }

    @Test func linesMatchStreamLogHandlersWithMetadataSetAndGiven() {
        let plainOut = Lines(), lazyOut = Lines()
        var plain = Logger(label: "t") { StreamLogHandler(label: $0, stream: plainOut, metadataProvider: nil) }
        var lazy = Logger(label: "t") { LazyMetadataLogHandler(StreamLogHandler(label: $0, stream: lazyOut, metadataProvider: nil)) }
        plain.logLevel = .debug
        lazy.logLevel = .debug
        #expect(lazy.logLevel == .debug)
        plain.info("no metadata")
        lazy.info("no metadata")
        plain[metadataKey: "service"] = "messaging"
        lazy[metadataKey: "service"] = "messaging"
        plain[metadataKey: "a"] = "1"
        lazy[metadataKey: "a"] = "1"
        #expect(lazy[metadataKey: "service"] == "messaging")
        plain.debug("set", metadata: ["b": "2"])
        lazy.debug("set", metadata: ["b": "2"])
        // A line's own metadata wins over the logger's.
        plain.error("override", metadata: ["a": "x"])
        lazy.error("override", metadata: ["a": "x"])
        plain.trace("below the level")
        lazy.trace("below the level")
        #expect(lazyOut.text.count == 3)
        #expect(lazyOut.text == plainOut.text)
        #expect(lazyOut.text.last?.contains("a=x") == true && lazyOut.text.last?.contains("service=messaging") == true)
    }
}

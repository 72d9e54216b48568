import Synchronization

/// The port a server got when it bound (port 0: any free one), for whoever needs it once it
/// is listening: tests, and the endpoints a stack prints.
public final class BoundPort: Sendable {
    private let value = Mutex<Int?>(nil)

    public init() {}

    public func set(_ port: Int) { value.withLock { $0 = port } }

    /// The port once bound, or nil.
    public var current: Int? { value.withLock { $0 } }

    /// Waits until the server has bound.
    public func wait() async -> Int {
        while true {
            if let p = current { return p }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }
}

import ArgumentParser
import CareMeshContracts
import CareMeshRPC
import Foundation
import Synchronization

/// Starts the router and the services as child processes, restarts a child that crashes
/// (backoff 1 s doubling to 30 s, reset after a minute up), and stops them gracefully:
/// services first (SIGTERM, so they drain), the router last.
final class Supervisor: Sendable {
    struct Child: Sendable {
        var name: String
        var executable: URL
        var process: Process?
        var restarts = 0
        var startedAt = Date()
    }

    let layout: StackLayout
    let environment: [String: String]
    private let children = Mutex<[String: Child]>([:])
    private let stopping = Mutex(false)

    init(layout: StackLayout, environment: [String: String]) {
        self.layout = layout
        self.environment = environment
    }

    /// Starts one child and returns once it is spawned.
    func start(_ name: String) throws {
        let exe = StackLayout.binaries.appendingPathComponent(name)
        guard FileManager.default.isExecutableFile(atPath: exe.path) else {
            throw ValidationError("\(exe.path) is missing: build first (swift build)")
        }
        children.withLock { $0[name] = Child(name: name, executable: exe) }
        try spawn(name)
    }

    private func spawn(_ name: String) throws {
        guard var child = children.withLock({ $0[name] }) else { return }
        let log = layout.log(name)
        if !FileManager.default.fileExists(atPath: log.path) { _ = FileManager.default.createFile(atPath: log.path, contents: nil) }
        let handle = try FileHandle(forWritingTo: log)
        handle.seekToEndOfFile()
        let p = Process()
        p.executableURL = child.executable
        p.environment = environment
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        p.terminationHandler = { [self] proc in
            try? handle.close()
            self.exited(name, status: proc.terminationStatus)
        }
        try p.run()
        try? "\(p.processIdentifier)\n".write(to: layout.run.appendingPathComponent("\(name).pid"), atomically: true, encoding: .utf8)
        child.process = p
        child.startedAt = Date()
        children.withLock { $0[name] = child }
    }

    private func exited(_ name: String, status: Int32) {
        guard !stopping.withLock({ $0 }) else { return }
        let restarts = children.withLock { c -> Int in
            guard var child = c[name] else { return 0 }
            if Date().timeIntervalSince(child.startedAt) > 60 { child.restarts = 0 }
            child.restarts += 1
            c[name] = child
            return child.restarts
        }
        let delay = min(30.0, pow(2.0, Double(restarts - 1)))
        writeError("caremesh: \(name) exited (status \(status)); restarting in \(Int(delay)) s (see \(layout.log(name).path))")
        DispatchQueue.global().asyncAfter(deadline: .now() + delay) { [self] in
            guard !self.stopping.withLock({ $0 }) else { return }
            try? self.spawn(name)
        }
    }

    /// The running children's pids.
    var pids: [String: Int32] {
        children.withLock { $0.compactMapValues { $0.process?.isRunning == true ? $0.process?.processIdentifier : nil } }
    }

    /// SIGTERM to the services, wait for them (up to `grace`), then the other children (the
    /// provider sandbox), then the router; SIGKILL stragglers. Every child is stopped: one left
    /// running would outlive the stack and hold its port.
    func stopAll(grace: TimeInterval = 15) {
        stopping.withLock { $0 = true }
        let procs = children.withLock { $0 }
        let others = procs.keys.filter { !StackLayout.services.contains($0) && $0 != "router" }.sorted()
        for group in [StackLayout.services, others, ["router"]] {
            let running = group.compactMap { procs[$0]?.process }.filter(\.isRunning)
            for p in running { kill(p.processIdentifier, SIGTERM) }
            let until = Date().addingTimeInterval(grace)
            while running.contains(where: \.isRunning) && Date() < until { usleep(20_000) }
            for p in running where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        }
    }
}


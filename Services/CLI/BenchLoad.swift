import CareMeshContracts
import CareMeshRPC
import Foundation
import Histogram
import ZMQ

/// A closed-loop load: `concurrency` tasks each call `operation` back to back for a warm-up,
/// then for `duration`; the latency of every call that started after the warm-up and ended
/// before the end goes into one HdrHistogram.
struct Load {
    var concurrency: Int
    var warmup: Double
    var duration: Double
    /// The stack's processes whose CPU time is measured over the same window, if known.
    var processes: StackProcesses? = nil

    struct Result {
        var histogram: Histogram<UInt64>
        var errors: Int
        var duration: Double
        /// CPU seconds each process group spent in the measured window.
        var cpu: [CPUTime] = []

        var rate: Double { Double(histogram.totalCount) / duration }

        func us(_ percentile: Double) -> String {
            String(format: "%.1f", Double(histogram.valueAtPercentile(percentile)) / 1000)
        }

        /// `name: key=value …` for BENCHMARKS.md.
        func line(_ name: String, _ extra: String = "") -> String {
            "\(name): \(extra)\(extra.isEmpty ? "" : " ")duration_s=\(duration) count=\(histogram.totalCount) "
                + "per_s=\(Int(rate)) p50_us=\(us(50)) p90_us=\(us(90)) p99_us=\(us(99)) p999_us=\(us(99.9)) errors=\(errors)"
                + cpu.map { String(format: " cpu_s_%@=%.2f per_cpu_s_%@=%.0f", $0.name, $0.seconds, $0.name,
                                   $0.seconds > 0 ? Double(histogram.totalCount) / $0.seconds : 0) }.joined()
        }
    }

    /// An empty histogram of latencies in nanoseconds (up to a minute, 3 significant digits).
    static func histogram() -> Histogram<UInt64> {
        Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    }

    /// CPU time of the stack's processes between two monotonic instants (sampled then).
    static func cpu(of processes: StackProcesses?, from: UInt64, to: UInt64) -> Task<[CPUTime], Never> {
        Task {
            guard let processes else { return [] }
            try? await Task.sleep(for: .nanoseconds(Int64(from) - Int64(monotonicNanos())))
            let before = processes.cpuSeconds()
            try? await Task.sleep(for: .nanoseconds(Int64(to) - Int64(monotonicNanos())))
            let after = processes.cpuSeconds()
            return after.map { group in before.first { $0.name == group.name }.map { group - $0 } ?? group }
        }
    }

    /// `operation(task)` is called from task number `task` (0..<concurrency).
    func run(_ operation: @escaping @Sendable (Int) async throws -> Void) async -> Result {
        let measureFrom = monotonicNanos() + UInt64(warmup * 1e9)
        let end = measureFrom + UInt64(duration * 1e9)
        let cpu = Self.cpu(of: processes, from: measureFrom, to: end)
        let (histogram, errors) = await withTaskGroup(of: (Histogram<UInt64>, Int).self) { group in
            for task in 0..<concurrency {
                group.addTask {
                    var h = Load.histogram()
                    var errors = 0
                    while true {
                        let t0 = monotonicNanos()
                        if t0 >= end { break }
                        do {
                            try await operation(task)
                            let t1 = monotonicNanos()
                            if t0 >= measureFrom && t1 <= end { _ = h.record(t1 - t0) }
                        } catch {
                            errors += 1
                        }
                    }
                    return (h, errors)
                }
            }
            var all = Load.histogram()
            var errors = 0
            for await (h, e) in group { all.add(h); errors += e }
            return (all, errors)
        }
        return Result(histogram: histogram, errors: errors, duration: duration, cpu: await cpu.value)
    }
}

/// CPU seconds of a process or a group of them (user + system), and the user part.
struct CPUTime {
    var name: String
    var seconds: Double
    var user: Double

    /// Field by field, keeping the left operand's name: a group's sum, or a group's time between
    /// two samples.
    static func + (a: CPUTime, b: CPUTime) -> CPUTime { CPUTime(name: a.name, seconds: a.seconds + b.seconds, user: a.user + b.user) }
    static func - (a: CPUTime, b: CPUTime) -> CPUTime { CPUTime(name: a.name, seconds: a.seconds - b.seconds, user: a.user - b.user) }
}

/// A local stack's processes (from `caremesh up`'s pid files and PostgreSQL's
/// `postmaster.pid`), for charging CPU time to each: the figure to compare with sizing guides
/// that count a server's own cores, not its database's or its load generator's.
struct StackProcesses {
    /// Our processes by name; PostgreSQL's backends are found at each sample, as the
    /// postmaster's children.
    var processes: [(name: String, pid: Int32)]
    var postmaster: Int32?

    /// Processes known by pid (several may share a name: their times are summed).
    init(processes: [(name: String, pid: Int32)]) {
        self.processes = processes
        postmaster = nil
    }

    init?(layout: StackLayout, names: [String]) {
        processes = names.compactMap { name in
            guard let text = try? String(contentsOf: layout.run.appendingPathComponent("\(name).pid"), encoding: .utf8),
                  let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { return nil }
            return (name, pid)
        }
        let pidFile = layout.home.appendingPathComponent("pg/data/postmaster.pid")
        postmaster = (try? String(contentsOf: pidFile, encoding: .utf8))?.split(separator: "\n").first.flatMap { Int32($0) }
        if processes.isEmpty && postmaster == nil { return nil }
    }

    /// utime + stime of each group, in seconds (in the order of first appearance).
    func cpuSeconds() -> [CPUTime] {
        var out: [CPUTime] = []
        func add(_ name: String, _ s: (parent: Int32, cpu: Double, user: Double)?) {
            let time = CPUTime(name: name, seconds: s?.cpu ?? 0, user: s?.user ?? 0)
            if let i = out.firstIndex(where: { $0.name == name }) { out[i] = out[i] + time } else { out.append(time) }
        }
        for (name, pid) in processes { add(name, Self.stat(pid)) }
        if let postmaster {
            add("postgres", nil)
            for pid in ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init) {
                if let s = Self.stat(pid), pid == postmaster || s.parent == postmaster { add("postgres", s) }
            }
        }
        return out
    }

    /// Parent pid, CPU seconds (user + system) and user seconds from `/proc/PID/stat` (fields
    /// 4, 14 and 15; the command name in field 2 may hold spaces, so fields are counted after
    /// its closing parenthesis).
    static func stat(_ pid: Int32) -> (parent: Int32, cpu: Double, user: Double)? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (state).
        guard fields.count > 12, let parent = Int32(fields[1]), let user = Double(fields[11]), let system = Double(fields[12])
        else { return nil }
        return (parent, (user + system) / tick, user / tick)
    }

    /// Clock ticks per second, the unit of `/proc/PID/stat`'s times.
    private static let tick = Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// Registers one account per email (each with a distinct phone), at most `concurrency` at a
/// time (each costs identity a password hash); returns their sessions in order.
func registerBenchAccounts(_ client: RPCClient, emails: [String], password: String, concurrency: Int,
                           role: @escaping @Sendable (Int) -> Caremesh_Identity_V1_Role = { _ in .user }) async throws
    -> [Caremesh_Identity_V1_Session]
{
    let run = Int.random(in: 0..<9_000)
    var sessions = [Caremesh_Identity_V1_Session](repeating: .init(), count: emails.count)
    for batch in stride(from: 0, to: emails.count, by: concurrency) {
        try await withThrowingTaskGroup(of: (Int, Caremesh_Identity_V1_Session).self) { group in
            for i in batch..<min(emails.count, batch + concurrency) {
                group.addTask {
                    var r = Caremesh_Identity_V1_RegisterRequest()
                    r.email = emails[i]
                    r.password = password
                    r.name = "Bench \(i)"
                    r.phone = "+4479\(String(format: "%08d", (run * 10_000 + i) % 100_000_000))"
                    r.role = role(i)
                    let response = try await client.call(IdentityMethods.register, request: r, options: .init(timeout: .seconds(300)))
                    return (i, response.session)
                }
            }
            for try await (i, session) in group { sessions[i] = session }
        }
    }
    return sessions
}

/// The machine, for the record.
func machineLine() -> String {
    let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    let model = info.split(separator: "\n").first { $0.hasPrefix("model name") }.map(String.init) ?? ""
    return "machine: nproc=\(ProcessInfo.processInfo.activeProcessorCount) \(model)"
}

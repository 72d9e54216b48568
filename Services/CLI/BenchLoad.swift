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

    struct Result {
        var histogram: Histogram<UInt64>
        var errors: Int
        var duration: Double

        var rate: Double { Double(histogram.totalCount) / duration }

        func us(_ percentile: Double) -> String {
            String(format: "%.1f", Double(histogram.valueAtPercentile(percentile)) / 1000)
        }

        /// `name: key=value …` for BENCHMARKS.md.
        func line(_ name: String, _ extra: String = "") -> String {
            "\(name): \(extra)\(extra.isEmpty ? "" : " ")duration_s=\(duration) count=\(histogram.totalCount) "
                + "per_s=\(Int(rate)) p50_us=\(us(50)) p90_us=\(us(90)) p99_us=\(us(99)) p999_us=\(us(99.9)) errors=\(errors)"
        }
    }

    /// `operation(task)` is called from task number `task` (0..<concurrency).
    func run(_ operation: @escaping @Sendable (Int) async throws -> Void) async -> Result {
        let measureFrom = monotonicNanos() + UInt64(warmup * 1e9)
        let end = measureFrom + UInt64(duration * 1e9)
        let (histogram, errors) = await withTaskGroup(of: (Histogram<UInt64>, Int).self) { group in
            for task in 0..<concurrency {
                group.addTask {
                    var h = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
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
            var all = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
            var errors = 0
            for await (h, e) in group { all.add(h); errors += e }
            return (all, errors)
        }
        return Result(histogram: histogram, errors: errors, duration: duration)
    }
}

/// The machine, for the record.
func machineLine() -> String {
    let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    let model = info.split(separator: "\n").first { $0.hasPrefix("model name") }.map(String.init) ?? ""
    return "machine: nproc=\(ProcessInfo.processInfo.activeProcessorCount) \(model)"
}

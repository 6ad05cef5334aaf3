import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The process's own CPU time, memory and file descriptors, read from Linux's `/proc/self` at each scrape, for the
/// metrics every Prometheus client exports under the same names (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, …), so dashboards and alerts written for other services read them unchanged.
/// swift-metrics has no collector for these on Linux; this reads four small files and nothing else.
package struct ProcessStats: Sendable, Equatable {
    /// User plus system CPU time.
    package var cpuSeconds: Double
    /// Memory in RAM (resident set size).
    package var residentBytes: Double
    /// Address space reserved, mapped or not.
    package var virtualBytes: Double
    /// Open files and sockets.
    package var openFileDescriptors: Double
    /// The soft limit on open files; nil when unknown.
    package var maxFileDescriptors: Double?
    /// Seconds since the Unix epoch.
    package var startTime: Double

    /// Now, for this process; nil where there is no `/proc` (macOS) or it cannot be read.
    package static func current() -> ProcessStats? {
        #if os(Linux)
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let system = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) else { return nil }
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        let limits = try? String(contentsOfFile: "/proc/self/limits", encoding: .utf8)
        return parse(stat: stat, system: system, limits: limits, openFileDescriptors: descriptors,
                     ticksPerSecond: Double(sysconf(Int32(_SC_CLK_TCK))), pageSize: Double(sysconf(Int32(_SC_PAGESIZE))))
        #else
        return nil
        #endif
    }

    /// From the text of `/proc/self/stat`, `/proc/stat` and `/proc/self/limits` (see proc(5)).
    package static func parse(stat: String, system: String, limits: String?, openFileDescriptors: Int,
                              ticksPerSecond: Double, pageSize: Double) -> ProcessStats? {
        // The command name (field 2) is in parentheses and may hold spaces and parentheses: fields 3 on follow
        // the last ")".
        guard ticksPerSecond > 0, let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        // Field n of proc(5) is fields[n - 3].
        func field(_ n: Int) -> Double? { n - 3 < fields.count ? Double(fields[n - 3]) : nil }
        guard let user = field(14), let kernel = field(15), let started = field(22), let virtual = field(23),
              let pages = field(24) else { return nil }
        guard let bootLine = system.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }),
              let boot = Double(bootLine.dropFirst("btime ".count).trimmingCharacters(in: .whitespaces)) else { return nil }
        var maxFiles: Double?
        if let line = limits?.split(separator: "\n").first(where: { $0.hasPrefix("Max open files") }) {
            // "Max open files            1048576              1048576              files"
            maxFiles = line.dropFirst("Max open files".count).split(separator: " ").first.flatMap { Double($0) }
        }
        return ProcessStats(cpuSeconds: (user + kernel) / ticksPerSecond, residentBytes: pages * pageSize, virtualBytes: virtual,
                            openFileDescriptors: Double(openFileDescriptors), maxFileDescriptors: maxFiles,
                            startTime: boot + started / ticksPerSecond)
    }
}

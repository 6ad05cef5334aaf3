import Testing
@testable import KoalaDelivery

@Suite("Process metrics from /proc")
struct ProcessStatsTests {
    // proc(5): pid (comm) state ppid … utime(14) stime(15) … starttime(22) vsize(23) rss(24) …
    static let stat = "4242 (koala) (router x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 50 0 0 20 0 9 0 123400 "
        + "734003200 12000 18446744073709551615 1 1 0 0 0 0 0 4096 17638 0 0 0 17 1 0 0 0 0 0\n"
    static let system = "cpu  1 2 3 4\nintr 0\nbtime 1796000000\nprocesses 10\n"
    static let limits = """
        Limit                     Soft Limit           Hard Limit           Units
        Max cpu time              unlimited            unlimited            seconds
        Max open files            1048576              1048576              files
        """

    @Test func readsTheFieldsAfterACommandNameWithSpacesAndParentheses() throws {
        let stats = try #require(ProcessStats.parse(stat: Self.stat, system: Self.system, limits: Self.limits, openFileDescriptors: 17,
                                                    ticksPerSecond: 100, pageSize: 4096))
        #expect(stats.cpuSeconds == 3.0)
        #expect(stats.residentBytes == 12000 * 4096)
        #expect(stats.virtualBytes == 734_003_200)
        #expect(stats.openFileDescriptors == 17)
        #expect(stats.maxFileDescriptors == 1_048_576)
        #expect(stats.startTime == 1_796_000_000 + 1234)
    }

    @Test func truncatedOrForeignTextGivesNothing() {
        let short = String(Self.stat.prefix(60))
        #expect(ProcessStats.parse(stat: short, system: Self.system, limits: nil, openFileDescriptors: 1, ticksPerSecond: 100, pageSize: 4096) == nil)
        #expect(ProcessStats.parse(stat: Self.stat, system: "cpu 1\n", limits: nil, openFileDescriptors: 1, ticksPerSecond: 100, pageSize: 4096) == nil)
        #expect(ProcessStats.parse(stat: "no parenthesis", system: Self.system, limits: nil, openFileDescriptors: 1, ticksPerSecond: 100, pageSize: 4096) == nil)
        #expect(ProcessStats.parse(stat: Self.stat, system: Self.system, limits: nil, openFileDescriptors: 1, ticksPerSecond: 0, pageSize: 4096) == nil)
    }

    @Test func thisProcessReadsOnLinux() throws {
        #if os(Linux)
        let stats = try #require(ProcessStats.current())
        #expect(stats.residentBytes > 1_000_000 && stats.openFileDescriptors >= 3 && stats.startTime > 1_600_000_000)
        #endif
    }
}

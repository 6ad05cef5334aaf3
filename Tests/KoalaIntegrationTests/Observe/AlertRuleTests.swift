import Foundation
import Testing
import KoalaTestSupport

/// The shipped Prometheus alerts (`deploy/prometheus/alerts.yaml`) load in Prometheus's own checker and are proven to
/// fire, and to stay quiet, by `promtool test rules` over `deploy/prometheus/alerts.test.yaml` (Debian's
/// `prometheus` package, installed by scripts/test).
@Suite("Prometheus alerts")
struct AlertRuleTests {
    static let folder = repositoryRoot + "/deploy/prometheus"

    static func promtool(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let path = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let promtool = try #require(path, "promtool is not installed: run scripts/setup prometheus (scripts/test does)")
        return try runProgram(promtool, arguments, environment: ["PATH": "/usr/bin:/bin"], in: folder)
    }

    @Test func theRulesLoadInPrometheusesChecker() throws {
        let (status, output) = try Self.promtool(["check", "rules", "alerts.yaml"])
        #expect(status == 0, "\(output)")
        #expect(output.contains("SUCCESS: 7 rules found"), "\(output)")
    }

    @Test func everyAlertFiresAndStaysQuietWhenItShould() throws {
        let (status, output) = try Self.promtool(["test", "rules", "alerts.test.yaml"])
        #expect(status == 0, "\(output)")
        #expect(output.contains("SUCCESS"), "\(output)")
    }

    /// Each alert has a case where it fires and one where it must not; each metric it reads is one the router exports.
    @Test func everyAlertIsTestedBothWaysOnRealMetrics() throws {
        let alerts = try String(contentsOfFile: Self.folder + "/alerts.yaml", encoding: .utf8)
        let tests = try String(contentsOfFile: Self.folder + "/alerts.test.yaml", encoding: .utf8)
        let names = alerts.split(separator: "\n").compactMap { line -> String? in
            let text = line.trimmingCharacters(in: .whitespaces)
            return text.hasPrefix("- alert: ") ? String(text.dropFirst("- alert: ".count)) : nil
        }
        #expect(names.count == 7)
        // Each `alertname:` line and whether the expectation after it is empty (quiet) or lists alerts (fires).
        let lines = tests.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        var fires: Set<String> = [], quiet: Set<String> = []
        for (index, line) in lines.enumerated() where line.hasPrefix("alertname: ") && index + 1 < lines.count {
            let name = String(line.dropFirst("alertname: ".count))
            if lines[index + 1] == "exp_alerts: []" { quiet.insert(name) } else if lines[index + 1] == "exp_alerts:" { fires.insert(name) }
        }
        for name in names {
            #expect(fires.contains(name), "\(name) has no case where it fires")
            #expect(quiet.contains(name), "\(name) has no case where it stays quiet")
        }
        let exported = try String(contentsOfFile: repositoryRoot + "/Sources/KoalaDelivery/Observe/RouterMetrics.swift", encoding: .utf8)
        let pattern = try NSRegularExpression(pattern: "koala_router_[a-z_]+")
        let used = Set(pattern.matches(in: alerts, range: NSRange(alerts.startIndex..., in: alerts)).map { String(alerts[Range($0.range, in: alerts)!]) })
        #expect(used.count >= 5)
        for metric in used {
            #expect(exported.contains("\"\(metric)\""), "\(metric) is read by an alert but the router exports no such metric")
        }
    }
}

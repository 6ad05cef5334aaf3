import AsyncHTTPClient
import Foundation
import NIOCore
import Testing
@testable import KoalaCore
import KoalaTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The shipped Grafana dashboard (`deploy/grafana/koala-router.json`): importable as it is, and every query on it
/// answered by a real Prometheus (Debian's `prometheus`, installed by scripts/test) that scraped the real binary
/// under a little load: signed webhooks, refused ones, a Koala outage, a dead letter, a refused rule reload.
@Suite("Grafana dashboard", .serialized)
struct DashboardTests {
    static let path = repositoryRoot + "/deploy/grafana/koala-router.json"

    /// A panel's query as written in the dashboard.
    struct Query {
        let panel: String
        let refID: String
        let expression: String
        let legend: String
    }

    static func dashboard() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    static func panels() throws -> [[String: Any]] {
        try #require(try dashboard()["panels"] as? [[String: Any]])
    }

    static func queries() throws -> [Query] {
        try panels().flatMap { panel -> [Query] in
            let targets = panel["targets"] as? [[String: Any]] ?? []
            return targets.map { Query(panel: panel["title"] as? String ?? "", refID: $0["refId"] as? String ?? "",
                                       expression: $0["expr"] as? String ?? "", legend: $0["legendFormat"] as? String ?? "") }
        }
    }

    /// A query as Grafana sends it, with the dashboard's variables in: every instance, a rate window of ten scrapes.
    static func substituted(_ expression: String) -> String {
        expression.replacingOccurrences(of: "$__rate_interval", with: "10s").replacingOccurrences(of: "$instance", with: ".*")
    }

    /// What the dashboard shows, against what the router exports.
    static let exportedElsewhere: [String: String] = [
        "koala_router_reconcile_objects_total": "reconcile runs on a schedule only where configured; `koala-router reconcile` prints its figures",
        "koala_router_reconcile_corrections_total": "as above",
        "process_virtual_memory_bytes": "address space, not memory used: resident memory is on the dashboard",
        "process_start_time_seconds": "restarts show as gaps and resets on every panel",
    ]

    static func metricNames(in text: String) throws -> Set<String> {
        let pattern = try NSRegularExpression(pattern: #"\b(?:koala_router|process)_[a-z_]+"#)
        return Set(pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)).map { String(text[Range($0.range, in: text)!]) })
    }

    @Test func itImportsWithADatasourceVariableAndReadsOnlyExportedMetrics() throws {
        let dashboard = try Self.dashboard()
        let variables = try #require((dashboard["templating"] as? [String: Any])?["list"] as? [[String: Any]])
        let datasource = try #require(variables.first { $0["name"] as? String == "datasource" })
        #expect(datasource["type"] as? String == "datasource" && datasource["query"] as? String == "prometheus")
        #expect(dashboard["uid"] as? String == "koala-router")
        let panels = try Self.panels()
        let ids = panels.compactMap { $0["id"] as? Int }
        #expect(ids.count == panels.count && Set(ids).count == ids.count, "every panel has an id of its own")
        // No two panels overlap on Grafana's 24-column grid.
        var cells: Set<[Int]> = []
        for panel in panels {
            let grid = try #require(panel["gridPos"] as? [String: Int], "\(panel["title"] ?? "")")
            #expect(grid["x"]! + grid["w"]! <= 24)
            for x in grid["x"]!..<(grid["x"]! + grid["w"]!) {
                for y in grid["y"]!..<(grid["y"]! + grid["h"]!) {
                    #expect(cells.insert([x, y]).inserted, "\(panel["title"] ?? "") overlaps another panel at \(x),\(y)")
                }
            }
        }
        for panel in panels where panel["type"] as? String != "row" {
            let title = panel["title"] as? String ?? ""
            #expect((panel["datasource"] as? [String: String])?["uid"] == "${datasource}", "\(title) reads the chosen Prometheus")
            let targets = panel["targets"] as? [[String: Any]] ?? []
            #expect(!targets.isEmpty, "\(title) has no query")
            for target in targets {
                #expect((target["datasource"] as? [String: String])?["uid"] == "${datasource}", "\(title)")
                #expect((target["expr"] as? String ?? "").contains(#"instance=~"$instance""#), "\(title) follows the instance picker")
            }
        }
        // Every metric a panel reads is one the router exports, and every one it exports is on a panel or said
        // above to be elsewhere.
        let exported = try Self.metricNames(in: String(contentsOfFile: repositoryRoot + "/Sources/KoalaDelivery/Observe/RouterMetrics.swift", encoding: .utf8))
            .filter { !$0.hasSuffix("_") }
        let shown = try Set(Self.queries().flatMap { try Self.metricNames(in: $0.expression) })
            .map { $0.hasSuffix("_bucket") ? String($0.dropLast("_bucket".count)) : $0 }
        for metric in shown { #expect(exported.contains(metric), "the dashboard reads \(metric), which the router does not export") }
        for metric in exported where !shown.contains(metric) {
            #expect(Self.exportedElsewhere[metric] != nil, "\(metric) is exported but on no panel")
        }
    }

    // MARK: - A real Prometheus scraping the real binary

    /// Debian's Prometheus server, scraping one router every second, storing in a folder of the test's.
    final class PrometheusServer: @unchecked Sendable {
        let process = Process()
        let port: Int

        init(scraping target: String) throws {
            let binary = try #require(["/usr/bin/prometheus", "/usr/local/bin/prometheus"].first { FileManager.default.isExecutableFile(atPath: $0) },
                                      "prometheus is not installed: run scripts/setup prometheus (scripts/test does)")
            let folder = temporaryDirectory()
            let config = """
                global: { scrape_interval: 1s, evaluation_interval: 1s }
                scrape_configs:
                  - job_name: koala-router
                    static_configs: [{ targets: ["\(target)"] }]
                """
            try config.write(toFile: folder + "/prometheus.yml", atomically: true, encoding: .utf8)
            port = CrashTests.freePort()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = ["--config.file=\(folder)/prometheus.yml", "--storage.tsdb.path=\(folder)/data",
                                 "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn"]
            process.standardOutput = FileHandle.nullDevice
            FileManager.default.createFile(atPath: folder + "/prometheus.log", contents: nil)
            process.standardError = FileHandle(forWritingAtPath: folder + "/prometheus.log")
            try process.run()
        }

        deinit {
            if process.isRunning {
                process.terminate()
                process.waitUntilExit()
            }
        }

        /// Prometheus's HTTP API: the JSON answer to `path` with `query` parameters.
        func api(_ path: String, _ parameters: [(String, String)]) async throws -> [String: Any] {
            let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))
            let query = parameters.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: allowed)!)" }.joined(separator: "&")
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)?\(query)")
            request.method = .GET
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            let body = try await response.body.collect(upTo: 16 << 20)
            return try #require(try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any])
        }

        /// The series of an instant query, as label sets and values.
        func instant(_ expression: String) async throws -> [(labels: [String: String], value: Double)] {
            let answer = try await api("/api/v1/query", [("query", expression)])
            let result = ((answer["data"] as? [String: Any])?["result"] as? [[String: Any]]) ?? []
            return result.map { series in
                let value = ((series["value"] as? [Any])?.last as? String).flatMap(Double.init) ?? .nan
                return (series["metric"] as? [String: String] ?? [:], value)
            }
        }
    }

    /// One query's answer over the run: its status and, per series, the legend and the (time, value) points.
    struct Answer: Codable {
        let panel: String
        let refID: String
        let expression: String
        let status: String
        let error: String?
        let series: [Series]

        struct Series: Codable {
            let legend: String
            let points: [[Double]]
        }

        var hasData: Bool { series.contains { !$0.points.isEmpty } }
    }

    func post(_ body: [UInt8], source: String = "stripe", secret: String = testSecret, port: Int) async {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/webhooks/\(source)")
        request.method = .POST
        for field in stripeHeaders(body, secret: secret) { request.headers.add(name: field.name.rawName, value: field.value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        _ = try? await HTTPClient.shared.execute(request, timeout: .seconds(8))
    }

    /// Signed Stripe webhooks, a few refused and a duplicate each second, for `seconds`.
    func load(seconds: Int, from start: Int, port: Int) async {
        for second in 0..<seconds {
            let began = Date()
            for i in 0..<4 {
                let id = "evt_dash_\(start + second)_\(i)"
                await post(invoicePaid(id: id, email: "person\(i)@acme-\(start + second).io"), port: port)
            }
            let again = invoicePaid(id: "evt_dash_\(start + second)_0", email: "person0@acme-\(start + second).io")
            await post(again, port: port)                                            // duplicate
            await post(again, secret: "whsec_someone_else", port: port)              // signature_mismatch
            let rest = 1 - Date().timeIntervalSince(began)
            if rest > 0 { try? await Task.sleep(nanoseconds: UInt64(rest * 1e9)) }
        }
    }

    static let signupRules = """
        source: signup
        verify: { scheme: stripe, secrets: [SIGNUP_WEBHOOK_SECRET] }
        id: body.id
        type: body.type
        routes:
          - name: signup
            when: { type: customer.created }
            person: { email: body.data.object.email, profile_id: body.data.object.metadata.ko_id }
            track: { event: Signed Up }
        """

    @Test func everyPanelsQueryReturnsDataFromARealPrometheus() async throws {
        let binary = try #require(CrashTests.binary, "build the koala-router executable first (swift build --build-tests)")
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        // The shipped rules, and one source more whose signups carry an unusable profile_id beside an email.
        let routes = temporaryDirectory() + "/routes"
        try FileManager.default.copyItem(atPath: repositoryRoot + "/routes", toPath: routes)
        try Self.signupRules.write(toFile: routes + "/signup.yaml", atomically: true, encoding: .utf8)
        let metricsPort = CrashTests.freePort()
        let router = try CrashTests.Router(binary: binary, database: temporaryDirectory() + "/db.sqlite", koala: koala, extra: [
            "KOALA_ROUTER_ROUTES": routes, "SIGNUP_WEBHOOK_SECRET": "whsec_signup_tests",
            "KOALA_ROUTER_METRICS_ADDRESS": "127.0.0.1:\(metricsPort)",
            "KOALA_ROUTER_HEADER_TIMEOUT_S": "2", "KOALA_ROUTER_MAX_CONNECTIONS_PER_CLIENT": "3",
        ])
        defer { router.kill9() }
        #expect(await router.ready(), "the router did not become ready")
        let prometheus = try PrometheusServer(scraping: "127.0.0.1:\(metricsPort)")
        #expect(await eventually(timeout: 30) {
            (try? await prometheus.instant(#"up{job="koala-router"}"#))?.first?.value == 1
        }, "Prometheus did not scrape the router")
        let start = Date()

        // Ingest, delivered at once; a rule reload that works; a slow client; one address holding too many connections.
        await load(seconds: 4, from: 0, port: router.port)
        kill(router.process.processIdentifier, SIGHUP)
        let slow = RawConnection(port: router.port)
        slow?.send("POST /webhooks/stripe HTTP/1.1\r\nHost: koala-router\r\n")
        let held = (0..<5).map { _ in RawConnection(port: router.port, from: "127.0.0.7") }
        // A series appears with its first event, which `increase` cannot see: the second signup shows on the panel.
        for i in 0..<2 {
            let signup = stripeEvent(id: "evt_dash_signup_\(i)", type: "customer.created", object: [
                "object": "customer", "email": .string("ada\(i)@acme-corp.io"), "metadata": ["ko_id": "not-a-uuid"],
            ])
            await post(signup, source: "signup", secret: "whsec_signup_tests", port: router.port)
            if i == 0 { await load(seconds: 2, from: 4, port: router.port) }
        }
        await load(seconds: 1, from: 6, port: router.port)

        // Koala down: messages wait, the circuit opens, the oldest pending message ages.
        koala.down(.status(503))
        await load(seconds: 8, from: 7, port: router.port)
        // Koala back, refusing one request (a wrong key, for the circuit and the refusal panel) and rejecting one
        // batch for good (a dead letter).
        koala.script([.status(401, body: "invalid key"), .status(400, body: "bad request")])
        koala.up()
        await load(seconds: 4, from: 15, port: router.port)

        // A broken rule file: the reload is refused, the old rules keep serving.
        try "routes: [".write(toFile: routes + "/broken.yaml", atomically: true, encoding: .utf8)
        kill(router.process.processIdentifier, SIGHUP)
        await load(seconds: 5, from: 19, port: router.port)
        withExtendedLifetime((slow, held)) {}
        // Everything drains; Prometheus scrapes the last of it.
        #expect(await eventually(timeout: 30) {
            (try? await prometheus.instant(#"koala_router_queue_messages{state="pending"}"#))?.first?.value == 0
        }, "the queue did not drain")
        try await Task.sleep(nanoseconds: 3_000_000_000)
        let end = Date()

        var answers: [Answer] = []
        for query in try Self.queries() {
            let answer = try await prometheus.api("/api/v1/query_range", [
                ("query", Self.substituted(query.expression)), ("start", String(start.timeIntervalSince1970)),
                ("end", String(end.timeIntervalSince1970)), ("step", "1"),
            ])
            let result = ((answer["data"] as? [String: Any])?["result"] as? [[String: Any]]) ?? []
            let series = result.map { series -> Answer.Series in
                let labels = series["metric"] as? [String: String] ?? [:]
                var legend = query.legend
                for (name, value) in labels { legend = legend.replacingOccurrences(of: "{{\(name)}}", with: value) }
                let points = (series["values"] as? [[Any]] ?? []).compactMap { pair -> [Double]? in
                    // NaN (a quantile over no deliveries) is a gap in the graph.
                    guard let time = pair.first as? Double, let text = pair.last as? String, let value = Double(text), value.isFinite else { return nil }
                    return [time, value]
                }
                return Answer.Series(legend: legend, points: points)
            }
            answers.append(Answer(panel: query.panel, refID: query.refID, expression: query.expression,
                                  status: answer["status"] as? String ?? "", error: answer["error"] as? String, series: series))
        }
        for answer in answers {
            #expect(answer.status == "success", "\(answer.panel) \(answer.refID): \(answer.error ?? "") in \(answer.expression)")
            #expect(answer.hasData, "\(answer.panel) \(answer.refID) returned no data: \(answer.expression)")
        }
        // What the load did shows where it should.
        func values(_ panel: String, _ legend: String) -> [Double] {
            answers.filter { $0.panel == panel }.flatMap(\.series).filter { $0.legend == legend }.flatMap { $0.points.map { $0[1] } }
        }
        #expect(values("Circuit and failure streak", "koala circuit open").contains(1), "the outage opened the circuit")
        #expect(values("Circuit and failure streak", "koala circuit open").last == 0, "and it closed again")
        #expect((values("Oldest pending message", "oldest pending").max() ?? 0) >= 5, "messages waited through the outage")
        #expect((values("Dead letters", "in the store").last ?? 0) >= 1, "the rejected request's messages are dead letters")
        // The first dead letter and the first refusal of the process show (their series start at 0).
        #expect(values("Dead letters", "koala dead-lettered").contains { $0 > 0 })
        #expect(values("Destination refusing every request", "koala").contains { $0 > 0 })
        #expect(values("Rule reloads", "failure").contains { $0 > 0 })
        #expect(values("Rule reloads", "success").contains { $0 > 0 })
        #expect(values("Identity fields dropped", "signup signup person.profile_id").contains { $0 > 0 })
        #expect(values("Refused, by reason", "connection client_cap").contains { $0 > 0 })
        #expect(values("Refused, by reason", "connection timed out: headers").contains { $0 > 0 })
        #expect(values("Refused, by reason", "stripe signature_mismatch").contains { $0 > 0 })
        #expect(koala.violations.isEmpty, "\(koala.violations)")

        // The data behind README's picture of the dashboard (scripts/plot-dashboard draws it).
        if let file = ProcessInfo.processInfo.environment["KOALA_ROUTER_DASHBOARD_DATA"] {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(answers).write(to: URL(fileURLWithPath: file))
        }
    }
}

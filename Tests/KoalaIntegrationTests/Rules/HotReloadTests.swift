import AsyncHTTPClient
import Foundation
import GRDB
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

@Suite("Hot reload")
struct HotReloadTests {
    static func rules(event: String) -> String {
        """
        source: stripe
        verify: { scheme: stripe, secrets: [STRIPE_WEBHOOK_SECRET] }
        routes:
          - name: paid
            when: { type: invoice.paid }
            person: { email: body.data.object.customer_email }
            track: { event: \(event) }
        """
    }

    func write(_ text: String, to dir: String) throws {
        // Write then rename, as editors and ConfigMap updates do, so a reader never sees half a file.
        try text.write(toFile: dir + "/.stripe.yaml.tmp", atomically: false, encoding: .utf8)
        guard rename(dir + "/.stripe.yaml.tmp", dir + "/stripe.yaml") == 0 else { throw CocoaError(.fileWriteUnknown) }
    }

    @Test func aChangedFileIsPickedUpAndABrokenOneIsRefused() async throws {
        let routes = temporaryDirectory()
        try Self.rules(event: "Version A").write(toFile: routes + "/stripe.yaml", atomically: true, encoding: .utf8)
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        var config = testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala, routes: routes)
        config.rulesPollInterval = 0.05
        let (app, components) = try await buildApplication(config, logger: quietLogger)
        try await app.test(.live) { client in
            func send(_ id: String) async throws -> HTTPResponse.Status {
                let body = invoicePaid(id: id, email: "a@acme.io")
                return try await client.executeRequest(uri: "/webhooks/stripe", method: .post, headers: stripeHeaders(body), body: ByteBuffer(bytes: body)).status
            }
            let v1 = components.rules.table.version
            #expect(try await send("evt_r1") == .ok)
            #expect(await eventually { koala.received.count == 1 })

            try write(Self.rules(event: "Version B"), to: routes)
            #expect(await eventually { components.rules.table.version != v1 })
            let v2 = components.rules.table.version
            #expect(try await send("evt_r2") == .ok)
            #expect(await eventually { koala.received.count == 2 })

            try write(Self.rules(event: "Version C").replacingOccurrences(of: "person:", with: "persn:"), to: routes)
            #expect(await eventually { components.rules.lastReloadError != nil })
            #expect(components.rules.table.version == v2)
            #expect(try await send("evt_r3") == .ok)
            #expect(await eventually { koala.received.count == 3 })
            let ready = try await client.executeRequest(uri: "/readyz", method: .get, headers: readinessDetails, body: nil)
            #expect(ready.status == .ok)
            #expect(String(buffer: ready.body).contains("unknown key 'persn'"))
            let metrics = components.metrics.exposition()
            #expect(metrics.contains(#"koala_router_rules_reloads_total{result="failure"} 1"#))
            #expect(metrics.contains(#"koala_router_rules_info{version="\#(v2)"} 1"#))

            // SIGHUP and the watcher call the same reload; a fixed file clears the error.
            try write(Self.rules(event: "Version D"), to: routes)
            #expect(components.reloader.reload())
            #expect(components.rules.lastReloadError == nil)
        }
        #expect(koala.received.compactMap { $0.events.first?["event"]?.stringValue } == ["Version A", "Version B", "Version B"])
    }

    /// Issue 16: a reload logs a source's "disabled" warning when its state changes, not every time, so the
    /// reload line is not buried.
    @Test func reloadsLogDisabledSourcesOnlyWhenThatChanges() throws {
        let routes = temporaryDirectory()
        try Self.rules(event: "A").write(toFile: routes + "/stripe.yaml", atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(atPath: repositoryRoot + "/routes/paddle.yaml", toPath: routes + "/paddle.yaml")
        let environment = ["STRIPE_WEBHOOK_SECRET": testSecret]
        let table = try RuleLoader(environment: environment).load(directory: routes)
        let capture = CapturingLogHandler()
        let holder = RulesHolder(table)
        func reloader(_ environment: [String: String]) -> RulesReloader {
            RulesReloader(holder: holder, directory: routes, environment: environment, pollInterval: 0, metrics: RouterMetrics(),
                          logger: Logger(label: "t") { _ in capture }, handleSignals: false)
        }
        #expect(reloader(environment).reload())
        #expect(reloader(environment).reload())
        var lines = capture.lines
        #expect(!lines.contains { $0.contains("paddle' is disabled") }, "\(lines)")   // as before: said at start-up
        #expect(lines.filter { $0.contains("rules reloaded") }.count == 2)
        // The secret is set: the change is said once.
        #expect(reloader(environment.merging(["PADDLE_WEBHOOK_SECRET": "pdl_ntfset_reload_test"]) { $1 }).reload())
        lines = capture.lines
        #expect(lines.contains("info source 'paddle' is enabled now"), "\(lines)")
        // And unset again: the warning comes back, once.
        #expect(reloader(environment).reload())
        #expect(reloader(environment).reload())
        lines = capture.lines
        #expect(lines.filter { $0.contains("source 'paddle' is disabled") }.count == 1, "\(lines)")
    }

    @Test func reloadsUnderLoadRouteEachWebhookByExactlyOneVersion() async throws {
        let routes = temporaryDirectory()
        try Self.rules(event: "A").write(toFile: routes + "/stripe.yaml", atomically: true, encoding: .utf8)
        let (app, components) = try await buildApplication(
            testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: nil, routes: routes), logger: quietLogger)
        let total = 200
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let completed = CrashTests.Acknowledged()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    // Flips spread over the traffic by progress, not by the clock: one every 10 webhooks.
                    for i in 0..<20 {
                        while completed.ids.count < i * 10 { try await Task.sleep(nanoseconds: 1_000_000) }
                        try write(Self.rules(event: i % 2 == 0 ? "B" : "A"), to: routes)
                        components.reloader.reload()
                    }
                }
                for worker in 0..<8 {
                    group.addTask {
                        for i in stride(from: worker, to: total, by: 8) {
                            let body = invoicePaid(id: "evt_load_\(i)", email: "p\(i)@acme.io")
                            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/webhooks/stripe")
                            request.method = .POST
                            for field in stripeHeaders(body) { request.headers.add(name: field.name.rawName, value: field.value) }
                            request.body = .bytes(ByteBuffer(bytes: body))
                            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
                            #expect(response.status.code == 200)
                            completed.add("evt_load_\(i)")
                        }
                    }
                }
                try await group.waitForAll()
            }
            let store = try #require(components.store as? SQLiteStore)
            let rows = try await store.pool.read { db in
                try Row.fetchAll(db, sql: """
                    SELECT w.rules_version AS version, COUNT(o.seq) AS messages, GROUP_CONCAT(DISTINCT json_extract(o.item, '$.event')) AS events
                    FROM webhooks w LEFT JOIN outbox o ON o.source = w.source AND o.webhook_id = w.webhook_id
                    GROUP BY w.webhook_id
                    """)
            }
            #expect(rows.count == total)
            #expect(rows.allSatisfy { ($0["messages"] as Int) == 1 })
            // Every webhook routed under one version carries that version's event, never a mix.
            var eventByVersion: [String: String] = [:]
            for row in rows {
                let version: String = row["version"], event: String = row["events"]
                if let seen = eventByVersion[version] { #expect(seen == event) } else { eventByVersion[version] = event }
            }
            #expect(Set(eventByVersion.values) == ["A", "B"])
        }
    }
}

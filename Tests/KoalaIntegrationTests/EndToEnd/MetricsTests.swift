import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

@Suite("Metrics")
struct MetricsTests {
    func metric(_ text: String, _ name: String, _ labels: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + "{") {
            let parts = line.split(separator: " ")
            let labelPart = parts[0].dropFirst(name.count)
            let wanted = labels.split(separator: ",").map(String.init)
            if wanted.allSatisfy({ labelPart.contains($0) }) { return Double(parts.last!) }
        }
        return nil
    }

    @Test func verificationOutcomesAndSecretLabelsAreCounted() async throws {
        var config = testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: nil)
        config.environment = ["STRIPE_WEBHOOK_SECRET": "whsec_new_secret_rotated", "STRIPE_WEBHOOK_SECRET_PREVIOUS": testSecret]
        let (app, _) = try await buildApplication(config, logger: quietLogger)
        try await app.test(.live) { client in
            func post(_ body: [UInt8], _ headers: HTTPFields) async throws {
                _ = try await client.executeRequest(uri: "/webhooks/stripe", method: .post, headers: headers, body: ByteBuffer(bytes: body))
            }
            let a = invoicePaid(id: "evt_m1", email: "a@acme.io")
            try await post(a, stripeHeaders(a, secret: testSecret))          // verified by the previous secret
            try await post(a, stripeHeaders(a, secret: testSecret))          // duplicate
            let b = invoicePaid(id: "evt_m2", email: "b@acme.io")
            try await post(b, stripeHeaders(b, secret: "whsec_new_secret_rotated"))         // verified by the current secret
            try await post(b, stripeHeaders(b, secret: "whsec_attacker"))    // mismatch
            try await post(b, [.contentType: "application/json"])            // missing header
            _ = try await client.executeRequest(uri: "/webhooks/nosuch", method: .post, headers: [:], body: ByteBuffer(bytes: b))

            let response = try await client.executeRequest(uri: "/metrics", method: .get, headers: [:], body: nil)
            #expect(response.status == .ok)
            let text = String(buffer: response.body)
            #expect(metric(text, "koala_router_webhooks_received_total", #"source="stripe",outcome="accepted""#) == 2)
            #expect(metric(text, "koala_router_webhooks_received_total", #"source="stripe",outcome="duplicate""#) == 1)
            #expect(metric(text, "koala_router_webhooks_received_total", #"source="stripe",outcome="signature_mismatch""#) == 1)
            #expect(metric(text, "koala_router_webhooks_received_total", #"source="stripe",outcome="missing_header""#) == 1)
            #expect(metric(text, "koala_router_webhooks_received_total", #"source="unknown",outcome="unknown_source""#) == 1)
            #expect(metric(text, "koala_router_webhook_secret_verified_total", #"secret="STRIPE_WEBHOOK_SECRET_PREVIOUS""#) == 2)
            #expect(metric(text, "koala_router_webhook_secret_verified_total", #"secret="STRIPE_WEBHOOK_SECRET""#) == 1)
            #expect(metric(text, "koala_router_messages_queued_total", #"route="payment-succeeded""#) == 2)
            // Secrets never appear, by value.
            #expect(!text.contains("whsec_new_secret_rotated") && !text.contains(testSecret) && !text.contains("whsec_attacker"))
        }
    }
}

@Suite("Every metric moves when its event happens")
struct EveryMetricTests {
    func value(_ text: String, _ name: String, _ labels: [String] = []) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(name) && !line.hasPrefix("#") {
            let head = line.split(separator: " ").first.map(String.init) ?? ""
            guard head == name || head.hasPrefix(name + "{") else { continue }
            if labels.allSatisfy({ head.contains($0) }) { return Double(line.split(separator: " ").last!) }
        }
        return nil
    }

    @Test func scrapeAfterEachEvent() async throws {
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        koala.down(.status(503))
        var config = testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala)
        config.maxBodyBytes = 4096
        let (app, components) = try await buildApplication(config, logger: quietLogger)
        try await app.test(.live) { client in
            func scrape() async throws -> String {
                String(buffer: try await client.executeRequest(uri: "/metrics", method: .get, headers: [:], body: nil).body)
            }
            func post(_ body: [UInt8], _ headers: HTTPFields? = nil) async throws {
                _ = try await client.executeRequest(uri: "/webhooks/stripe", method: .post, headers: headers ?? stripeHeaders(body), body: ByteBuffer(bytes: body))
            }
            let first = invoicePaid(id: "evt_metrics_1", email: "a@acme.io")
            try await post(first)
            try await post(first)
            try await post(first, stripeHeaders(first, secret: "whsec_other"))
            try await post(Array(repeating: 0x20, count: 5000))
            try await post(Array("{nope".utf8))
            #expect(await eventually { koala.attempts >= 1 })
            try await Task.sleep(nanoseconds: 100_000_000)

            var text = try await scrape()
            for outcome in ["accepted", "duplicate", "signature_mismatch", "too_large", "invalid_json"] {
                #expect(value(text, "koala_router_webhooks_received_total", [#"outcome="\#(outcome)""#]) == 1, "\(outcome)")
            }
            #expect(value(text, "koala_router_webhook_secret_verified_total", [#"secret="STRIPE_WEBHOOK_SECRET""#]) == 3)
            #expect(value(text, "koala_router_messages_queued_total", [#"route="payment-succeeded""#]) == 1)
            #expect((value(text, "koala_router_messages_total", [#"endpoint="person""#, #"outcome="retried""#]) ?? 0) >= 1)
            // Outcomes not yet seen exist at 0, so the first dead letter shows as an increase to alerts and dashboards.
            #expect(value(text, "koala_router_messages_total", [#"endpoint="account""#, #"outcome="dead_lettered""#]) == 0)
            #expect(value(text, "koala_router_koala_refusals_total", [#"destination="koala""#]) == 0)
            #expect((value(text, "koala_router_koala_responses_total", [#"status="503""#]) ?? 0) >= 1)
            #expect(value(text, "koala_router_queue_messages", [#"state="pending""#]) == 1)
            #expect((value(text, "koala_router_queue_oldest_pending_age_seconds") ?? 0) > 0)
            #expect(value(text, "koala_router_rules_info", [#"version="\#(components.rules.table.version)""#]) == 1)
            // Five failures in a row open it.
            #expect(await eventually { koala.attempts >= 5 })
            try await Task.sleep(nanoseconds: 100_000_000)
            text = try await scrape()
            #expect(value(text, "koala_router_circuit_open", [#"destination="koala""#]) == 1)
            #expect((value(text, "koala_router_delivery_consecutive_failures", [#"destination="koala""#]) ?? 0) >= 5)
            // The process's own figures, under the names every Prometheus client uses.
            #expect((value(text, "process_cpu_seconds_total") ?? 0) > 0)
            #expect((value(text, "process_resident_memory_bytes") ?? 0) > 10_000_000)
            #expect((value(text, "process_open_fds") ?? 0) > 3)
            #expect(abs((value(text, "process_start_time_seconds") ?? 0) - Date().timeIntervalSince1970) < 24 * 3600)

            koala.up()
            #expect(await eventually { koala.deliveredMessageIDs.count == 1 })
            try await Task.sleep(nanoseconds: 100_000_000)
            text = try await scrape()
            #expect(value(text, "koala_router_messages_total", [#"endpoint="person""#, #"outcome="delivered""#]) == 1)
            #expect(value(text, "koala_router_koala_responses_total", [#"status="200""#]) == 1)
            #expect(value(text, "koala_router_delivery_latency_seconds_count", [#"endpoint="person""#]) == 1)
            #expect(value(text, "koala_router_queue_messages", [#"state="pending""#]) == 0)
            #expect(value(text, "koala_router_queue_oldest_pending_age_seconds") == 0)
            #expect(value(text, "koala_router_circuit_open", [#"destination="koala""#]) == 0, "a success closes it")
            #expect(value(text, "koala_router_delivery_consecutive_failures", [#"destination="koala""#]) == 0)

            koala.script([.status(400, body: "bad")])
            try await post(invoicePaid(id: "evt_metrics_2", email: "b@acme.io"))
            #expect(await eventually { (try? await components.store.counts().dead) == 1 })
            text = try await scrape()
            #expect(value(text, "koala_router_messages_total", [#"endpoint="person""#, #"outcome="dead_lettered""#]) == 1)
            #expect(value(text, "koala_router_queue_messages", [#"state="dead""#]) == 1)

            components.reloader.reload()
            text = try await scrape()
            #expect(value(text, "koala_router_rules_reloads_total", [#"result="success""#]) == 1)
        }
    }
}

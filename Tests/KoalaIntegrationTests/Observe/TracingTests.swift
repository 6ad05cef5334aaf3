import AsyncHTTPClient
import Foundation
import GRDB
import NIOCore
import Testing
@testable import KoalaCore
@testable import KoalaDelivery
import KoalaTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// OpenTelemetry traces from the real binary (swift-otel, OTLP/HTTP) to a loopback collector: one webhook's trace
/// from the provider's `traceparent` through verify, route and store to Koala's answer, across a crash and a restart.
@Suite("Traces", .serialized)
struct TracingTests {
    static let providerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
    static let providerSpan = "00f067aa0ba902b7"

    func post(_ body: [UInt8], port: Int, traceparent: String?) async throws -> Int {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/webhooks/stripe")
        request.method = .POST
        for field in stripeHeaders(body) { request.headers.add(name: field.name.rawName, value: field.value) }
        if let traceparent { request.headers.add(name: "traceparent", value: traceparent) }
        request.body = .bytes(ByteBuffer(bytes: body))
        return Int(try await HTTPClient.shared.execute(request, timeout: .seconds(10)).status.code)
    }

    @Test func oneWebhooksTraceRunsFromTheProviderToKoalasAnswerAcrossARestart() async throws {
        let binary = try #require(CrashTests.binary, "build the koala-router executable first (swift build --build-tests)")
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let collector = try await FakeCollector.start()
        defer { collector.stop() }
        let database = temporaryDirectory() + "/db.sqlite"
        let log = temporaryDirectory() + "/router.log"
        let tracing = [
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            "OTEL_BSP_SCHEDULE_DELAY": "100", "LOG_LEVEL": "info", "LOG_FORMAT": "text",
        ]
        // Koala is down: the first request fails, and the router dies before the message is delivered.
        koala.down(.status(503))
        let first = try CrashTests.Router(binary: binary, database: database, koala: koala, extra: tracing, log: log)
        #expect(await first.ready())
        let body = invoicePaid(id: "evt_traced", email: "ada@acme.io")
        #expect(try await post(body, port: first.port, traceparent: "00-\(Self.providerTrace)-\(Self.providerSpan)-01") == 200)
        #expect(await eventually(timeout: 40) { collector.spans.contains { $0.name == "koala.send" && $0.attributes["koala.answer"] == "503" } },
                "the failed request's span was not exported: \(collector.spans)")
        first.kill9()

        // Restarted on the same database, Koala back: the message goes out, and its span joins the webhook's trace.
        // (Generous waits: the heavy round runs this beside thousands of hostile connections in the same process.)
        koala.up()
        let second = try CrashTests.Router(binary: binary, database: database, koala: koala, extra: tracing, log: log + ".2")
        defer { second.kill9() }
        #expect(await second.ready())
        // Set: the request in flight when the router was killed can reach Koala after `up()` and be answered 200 to a
        // dead client; the restarted router then sends it again (Koala keeps one per message_id).
        if !(await eventually(timeout: 60) { Set(koala.deliveredMessageIDs).count == 1 && collector.spans.contains { $0.attributes["koala.answer"] == "200" } }) {
            let outbox = (try? await DatabaseQueue(path: database).read { db in
                try Row.fetchAll(db, sql: "SELECT seq, status, attempts, next_attempt_at, lease_until, last_error, lane FROM outbox").map { "\($0)" }
            }) ?? []
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(second.port)/metrics")
            request.method = .GET
            let metrics = (try? await HTTPClient.shared.execute(request, timeout: .seconds(5)).body.collect(upTo: 1 << 20)).map { String(buffer: $0) } ?? ""
            Issue.record("""
                not delivered after the restart (router running: \(second.process.isRunning), now \(Date().timeIntervalSince1970)); Koala saw \(koala.attempts) requests
                outbox: \(outbox)
                spans: \(collector.spans.map(\.name))
                metrics: \(metrics.split(separator: "\n").filter { !$0.hasPrefix("#") && ($0.contains("queue") || $0.contains("circuit") || $0.contains("messages_total") || $0.contains("responses")) })
                first router: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
                restarted router: \((try? String(contentsOfFile: log + ".2", encoding: .utf8)) ?? "")
                """)
        }
        #expect(await eventually(timeout: 40) { collector.spans.contains { $0.name == "koala.send" && $0.attributes["koala.answer"] == "200" } },
                "the delivered request's span was not exported: \(collector.spans)")

        let trace = collector.spans.filter { $0.traceID == Self.providerTrace }.sorted { $0.start < $1.start }
        let receive = try #require(trace.first { $0.name == "webhook.receive" }, "\(collector.spans)")
        // The provider's context is honoured: the webhook's span is a child of the span that sent it.
        #expect(receive.parentSpanID == Self.providerSpan)
        #expect(receive.kind == 2, "a server span")
        #expect(receive.attributes["koala.source"] == "stripe" && receive.attributes["koala.webhook_id"] == "evt_traced")
        #expect(receive.attributes["koala.event_type"] == "invoice.paid" && receive.attributes["koala.outcome"] == "accepted")
        #expect(receive.attributes["http.response.status_code"] == "200")
        for name in ["webhook.verify", "webhook.route", "webhook.store"] {
            let span = try #require(trace.first { $0.name == name }, "no \(name) span in \(trace)")
            #expect(span.parentSpanID == receive.spanID, "\(name) is a child of webhook.receive")
            #expect(span.start >= receive.start && span.end <= receive.end, "\(name) lies within webhook.receive")
        }
        #expect(trace.first { $0.name == "webhook.verify" }?.attributes["koala.secret"] == "STRIPE_WEBHOOK_SECRET")
        #expect(trace.first { $0.name == "webhook.route" }?.attributes["koala.routes"] == "payment-succeeded")
        #expect(trace.first { $0.name == "webhook.store" }?.attributes["koala.outcome"] == "accepted")
        // Across the outbox: a claim and a request per attempt, before the crash and after the restart.
        let claims = trace.filter { $0.name == "outbox.claim" }, sends = trace.filter { $0.name == "koala.send" }
        #expect(claims.count >= 2 && sends.count >= 2, "\(trace)")
        for span in claims + sends {
            #expect(span.parentSpanID == receive.spanID, "\(span.name) joins the webhook's trace under webhook.receive")
            // (A claim can begin while the answer is still on its way out: the message is due once committed.)
            #expect(span.start > receive.start, "\(span.name) comes after the webhook arrived")
        }
        for send in sends { #expect(claims.contains { $0.end <= send.start }, "each request follows a claim") }
        let messageID = try #require(koala.deliveredMessageIDs.first)
        let failed = try #require(sends.first)
        #expect(failed.attributes["koala.answer"] == "503" && failed.statusCode == 2)
        let delivered = try #require(sends.last)
        #expect(delivered.kind == 3, "a client span")
        #expect(delivered.attributes["koala.answer"] == "200" && delivered.attributes["http.response.status_code"] == "200")
        #expect(delivered.attributes["koala.message_ids"] == messageID && delivered.attributes["koala.webhook_ids"] == "evt_traced")
        #expect(delivered.attributes["koala.endpoint"] == "person" && delivered.statusCode != 2)
        #expect(collector.contentTypes == ["application/json"])

        // The log lines about the webhook and its message carry the trace id.
        let before = try String(contentsOfFile: log, encoding: .utf8), after = try String(contentsOfFile: log + ".2", encoding: .utf8)
        let accepted = try #require(before.split(separator: "\n").first { $0.contains("webhook accepted") })
        #expect(accepted.contains("trace_id=\(Self.providerTrace)") && accepted.contains("webhook_id=evt_traced"))
        let retried = try #require(before.split(separator: "\n").first { $0.contains("delivery will be retried") }, "\(before)")
        #expect(retried.contains("trace_id=\(Self.providerTrace)"))
        #expect(!after.contains("trace_id=") || after.contains("trace_id=\(Self.providerTrace)"))

        // The trace, for README and the closing note.
        let artifacts = repositoryRoot + "/test-artifacts"
        try? FileManager.default.createDirectory(atPath: artifacts, withIntermediateDirectories: true)
        try? (trace.map(\.description).joined(separator: "\n") + "\n").write(toFile: artifacts + "/trace.txt", atomically: true, encoding: .utf8)
        #expect(koala.violations.isEmpty, "\(koala.violations)")
    }

    @Test func aWebhookWithoutATraceparentStartsATraceOfItsOwnAndARefusedOneEndsInError() async throws {
        let binary = try #require(CrashTests.binary, "build the koala-router executable first (swift build --build-tests)")
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let collector = try await FakeCollector.start()
        defer { collector.stop() }
        let router = try CrashTests.Router(binary: binary, database: temporaryDirectory() + "/db.sqlite", koala: koala, extra: [
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_BSP_SCHEDULE_DELAY": "100",
        ])
        defer { router.kill9() }
        #expect(await router.ready())
        #expect(try await post(invoicePaid(id: "evt_untraced", email: "bo@acme.io"), port: router.port, traceparent: nil) == 200)
        let forged = invoicePaid(id: "evt_forged", email: "eve@acme.io")
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(router.port)/webhooks/stripe")
        request.method = .POST
        for field in stripeHeaders(forged, secret: "whsec_not_the_secret") { request.headers.add(name: field.name.rawName, value: field.value) }
        request.body = .bytes(ByteBuffer(bytes: forged))
        #expect(try await HTTPClient.shared.execute(request, timeout: .seconds(10)).status.code == 401)
        #expect(await eventually(timeout: 40) { collector.spans.contains { $0.name == "koala.send" } && collector.spans.filter { $0.name == "webhook.receive" }.count == 2 })
        let receives = collector.spans.filter { $0.name == "webhook.receive" }
        let accepted = try #require(receives.first { $0.attributes["koala.webhook_id"] == "evt_untraced" })
        #expect(accepted.parentSpanID == nil, "a root span")
        #expect(collector.spans.first { $0.name == "koala.send" }?.traceID == accepted.traceID)
        let refused = try #require(receives.first { $0.attributes["http.response.status_code"] == "401" })
        #expect(refused.statusCode == 2 && refused.attributes["koala.webhook_id"] == nil, "an unverified id is not trusted")
        let verify = try #require(collector.spans.first { $0.name == "webhook.verify" && $0.parentSpanID == refused.spanID })
        #expect(verify.statusCode == 2 && verify.attributes["koala.outcome"] == "signature_mismatch")
        // Nothing of the payload or the secret in any span.
        for span in collector.spans {
            #expect(!span.description.contains("eve@acme.io") && !span.description.contains(testSecret) && !span.description.contains("whsec_not_the_secret"))
        }
    }
}

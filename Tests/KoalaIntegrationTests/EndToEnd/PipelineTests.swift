import Foundation
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

/// Signed webhooks in through the real HTTP server, Koala requests out to the strict fake on loopback.
@Suite("End to end")
struct PipelineTests {
    func post(_ client: some TestClientProtocol, _ body: [UInt8], headers: HTTPFields? = nil, source: String = "stripe") async throws -> (HTTPResponse.Status, JSONValue?) {
        let response = try await client.executeRequest(uri: "/webhooks/\(source)", method: .post, headers: headers ?? stripeHeaders(body),
                                                       body: ByteBuffer(bytes: body))
        return (response.status, try? JSONValue.parse(Array(buffer: response.body)))
    }

    @Test func signedWebhookBecomesTheExpectedKoalaRequest() async throws {
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let (app, _) = try await buildApplication(testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala), logger: quietLogger)
        try await app.test(.live) { client in
            let (status, answer) = try await post(client, invoicePaid(id: "evt_e2e_1", email: "Ada@Analytical-Engines.io", amount: 4900))
            #expect(status == .ok)
            #expect(answer?["status"] == "accepted")
            #expect(answer?["messages"] == 1)
            #expect(await eventually { koala.received.count == 1 })
        }
        let request = try #require(koala.received.first)
        let id = MessageID.derive(source: "stripe", webhookID: "evt_e2e_1", route: "payment-succeeded", output: .track)
        #expect(request.endpoint == .person)
        #expect(request.userAgent == "koala-router/\(KoalaRouterVersion.string)")
        #expect(request.body == [
            "email": "ada@analytical-engines.io",
            "events": [[
                "message_id": .string(id), "type": "track", "event": "Payment Succeeded", "sent_at": "2024-11-29T09:12:00.000Z",
                "properties": ["amount": 49, "currency": "USD", "invoice_id": "in_evt_e2e_1", "invoice_number": "INV-1",
                               "billing_reason": "subscription_create", "stripe_customer_id": "cus_1", "billing_provider": "stripe"],
            ]],
        ])
        #expect(koala.violations.isEmpty)
    }

    @Test func theSameWebhookTwiceGivesOneSetOfMessageIDs() async throws {
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let (app, components) = try await buildApplication(testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala), logger: quietLogger)
        let body = stripeEvent(id: "evt_dup", type: "checkout.session.completed", object: [
            "id": "cs_1", "amount_total": 900, "currency": "usd", "customer_details": ["email": "grace@hopper.dev", "name": "Grace"],
        ])
        try await app.test(.live) { client in
            let (s1, a1) = try await post(client, body)
            #expect(s1 == .ok && a1?["status"] == "accepted" && a1?["messages"] == 2)
            #expect(await eventually { koala.deliveredMessageIDs.count == 2 })
            // A provider retry of the same event, re-signed later, after delivery.
            let (s2, a2) = try await post(client, body, headers: stripeHeaders(body, timestamp: Int64(Date().timeIntervalSince1970) + 1))
            #expect(s2 == .ok && a2?["status"] == "duplicate")
            try await Task.sleep(nanoseconds: 200_000_000)
            #expect(try await components.store.counts().webhooks == 1)
        }
        #expect(koala.deliveredMessageIDs.count == 2)
        #expect(Set(koala.deliveredMessageIDs).count == 2)
    }

    @Test func aBadSignatureIsRefusedAndNothingIsStoredOrSent() async throws {
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let (app, components) = try await buildApplication(testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala), logger: quietLogger)
        let body = invoicePaid(id: "evt_bad", email: "a@b.io")
        try await app.test(.live) { client in
            let (s1, a1) = try await post(client, body, headers: stripeHeaders(body, secret: "whsec_wrong"))
            #expect(s1 == .unauthorized)
            #expect(a1 == ["error": "signature mismatch"])
            var tampered = body
            tampered[tampered.count - 3] ^= 1
            let (s2, _) = try await post(client, tampered, headers: stripeHeaders(body))
            #expect(s2 == .unauthorized)
            let (s3, a3) = try await post(client, body, headers: [.contentType: "application/json"])
            #expect(s3 == .unauthorized)
            #expect(a3 == ["error": "missing header Stripe-Signature"])
            let (s4, a4) = try await post(client, body, headers: stripeHeaders(body, timestamp: Int64(Date().timeIntervalSince1970) - 3600))
            #expect(s4 == .unauthorized)
            #expect(a4 == ["error": "timestamp outside tolerance"])
            try await Task.sleep(nanoseconds: 200_000_000)
            #expect(try await components.store.counts() == OutboxCounts(pending: 0, delivered: 0, dead: 0, webhooks: 0))
        }
        #expect(koala.attempts == 0)
    }

    @Test func badInputGetsAClearAnswer() async throws {
        var config = testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: nil)
        config.maxBodyBytes = 2048
        let (app, components) = try await buildApplication(config, logger: quietLogger)
        try await app.test(.live) { client in
            let big = Array(repeating: UInt8(ascii: "x"), count: 4096)
            let (s1, a1) = try await post(client, big)
            #expect(s1 == .contentTooLarge)
            #expect(a1 == ["error": "body is larger than 2048 bytes"])

            let notJSON = Array("{\"id\": \"evt_1\", oops".utf8)
            let (s2, a2) = try await post(client, notJSON)
            #expect(s2 == .badRequest)
            #expect(a2?["error"]?.stringValue?.hasPrefix("body is not valid JSON") == true)

            let noID = Array(#"{"type":"invoice.paid"}"#.utf8)
            let (s3, a3) = try await post(client, noID)
            #expect(s3 == .badRequest)
            #expect(a3 == ["error": "webhook id not found at body.id"])

            let (s4, a4) = try await post(client, invoicePaid(id: "e", email: "a@b.io"), source: "nosuch")
            #expect(s4 == .notFound)
            #expect(a4?["error"] == "unknown source 'nosuch'")
            #expect(try await components.store.counts().webhooks == 0)
        }
    }

    @Test func aSourceWithoutItsSecretAnswers503() async throws {
        var config = testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: nil)
        config.environment = [:]
        let (app, _) = try await buildApplication(config, logger: quietLogger)
        try await app.test(.live) { client in
            let (status, answer) = try await post(client, invoicePaid(id: "e", email: "a@b.io"))
            #expect(status == .serviceUnavailable)
            #expect(answer?["error"]?.stringValue?.contains("set STRIPE_WEBHOOK_SECRET") == true)
            let ready = try await client.executeRequest(uri: "/readyz", method: .get, headers: readinessDetails, body: nil)
            #expect(ready.status == .ok)
            #expect(String(buffer: ready.body).contains("is disabled: set STRIPE_WEBHOOK_SECRET"))
        }
    }

    @Test func aStoreThatCannotWriteAnswers503() async throws {
        let (app, components) = try await buildApplication(testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: nil), logger: quietLogger)
        try await app.test(.live) { client in
            // The database goes away under the running service.
            try #require(components.store as? SQLiteStore).pool.close()
            let (status, answer) = try await post(client, invoicePaid(id: "evt_503", email: "a@b.io"))
            #expect(status == .serviceUnavailable)
            #expect(answer == ["error": "storage unavailable, retry later"])
            let ready = try await client.executeRequest(uri: "/readyz", method: .get, headers: readinessDetails, body: nil)
            #expect(ready.status == .serviceUnavailable)
        }
    }

    @Test func seventyFiveEventsDuringAnOutageArriveInBatchesOfThirty() async throws {
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        koala.down(.status(503))
        let (app, components) = try await buildApplication(testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala), logger: quietLogger)
        try await app.test(.live) { client in
            for i in 0..<75 {
                let (status, _) = try await post(client, invoicePaid(id: "evt_burst_\(i)", email: "burst@acme.io", amount: Int64(100 + i), created: 1_700_000_000 + i))
                #expect(status == .ok)
            }
            #expect(await eventually { koala.attempts >= 2 })
            #expect(try await components.store.counts().pending == 75)
            koala.up()
            #expect(await eventually { koala.deliveredMessageIDs.count >= 75 })
        }
        #expect(koala.violations.isEmpty)
        #expect(koala.concurrentPersonViolations == 0)
        #expect(koala.received.allSatisfy { $0.events.count <= 30 })
        // At least 3 requests (75 / 30); more only if some messages arrived after an earlier request left.
        #expect(koala.received.count >= 3, "request sizes: \(koala.received.map(\.events.count))")
        #expect(Set(koala.deliveredMessageIDs).count == 75)
        // In event-time order across the requests.
        let amounts = koala.received.flatMap(\.events).compactMap { $0["properties"]?["amount"]?.doubleValue }
        #expect(amounts == amounts.sorted())
    }

    @Test func undeliveredMessagesSurviveARestart() async throws {
        let database = temporaryDirectory() + "/db.sqlite"
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        koala.down(.status(500))
        do {
            let (app, components) = try await buildApplication(testConfiguration(database: database, koala: koala), logger: quietLogger)
            try await app.test(.live) { client in
                for i in 0..<5 {
                    let (status, _) = try await post(client, invoicePaid(id: "evt_restart_\(i)", email: "p\(i)@acme.io"))
                    #expect(status == .ok)
                }
                #expect(await eventually { koala.attempts >= 5 })
            }
            #expect(koala.received.isEmpty)
            _ = components
        }
        koala.up()
        let (app, components) = try await buildApplication(testConfiguration(database: database, koala: koala), logger: quietLogger)
        try await app.test(.live) { _ in
            #expect(await eventually { koala.deliveredMessageIDs.count == 5 })
            #expect(await eventually { (try? await components.store.counts().delivered) == 5 })
        }
        #expect(koala.violations.isEmpty)
    }

    @Test func aKoala400IsDeadLetteredWithItsBody() async throws {
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        koala.script([.status(400, body: #"{"error":"Invalid request","message":"nope"}"#)])
        let capture = CapturingLogHandler()
        let logger = Logger(label: "pipeline", factory: { _ in capture })
        let (app, components) = try await buildApplication(testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala), logger: logger)
        try await app.test(.live) { client in
            _ = try await post(client, invoicePaid(id: "evt_400", email: "a@acme.io"))
            #expect(await eventually { (try? await components.store.counts().dead) == 1 })
            let dead = try await components.store.deadLetters(limit: 10)
            #expect(dead.first?.reason == "koala rejected (400)")
            #expect(dead.first?.detail == #"{"error":"Invalid request","message":"nope"}"#)
        }
        // The lines about this webhook and its message, at ingest and at delivery, name the webhook (log correlation).
        let lines = capture.lines.filter { $0.contains("webhook accepted") || $0.contains("dead-lettering") }
        #expect(lines.count == 2, "\(capture.lines)")
        for line in lines {
            #expect(line.contains("source=stripe") && line.contains("webhook_id=evt_400"), "\(line)")
        }
        #expect(koala.attempts == 1)
    }

    @Test func a429WithRetryAfterIsHonoured() async throws {
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        koala.script([.status(429, retryAfter: "1")])
        let (app, _) = try await buildApplication(testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala), logger: quietLogger)
        try await app.test(.live) { client in
            _ = try await post(client, invoicePaid(id: "evt_429", email: "a@acme.io"))
            #expect(await eventually { koala.deliveredMessageIDs.count == 1 })
        }
        let times = koala.attemptTimes
        #expect(times.count == 2)
        #expect(times[1].timeIntervalSince(times[0]) >= 0.95)
    }

    @Test func aTimeoutIsRetriedAndKoalaSeesTheSameMessageID() async throws {
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        koala.script([.delay(seconds: 1.5)])
        var config = testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala)
        config.delivery.requestTimeout = 0.3
        let (app, components) = try await buildApplication(config, logger: quietLogger)
        try await app.test(.live) { client in
            _ = try await post(client, invoicePaid(id: "evt_slow", email: "a@acme.io"))
            #expect(await eventually { (try? await components.store.counts().delivered) == 1 })
        }
        #expect(koala.attempts >= 2)
        #expect(Set(koala.deliveredMessageIDs) == [MessageID.derive(source: "stripe", webhookID: "evt_slow", route: "payment-succeeded", output: .track)])
    }
}

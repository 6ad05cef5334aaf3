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

@Suite("Circuit breaker and Koala health")
struct CircuitBreakerTests {
    @Test func refusalsAreRecognised() {
        #expect(DeliveryHealth.isRefusal(status: 400, body: #"{"error": "Koala ingest suspended"}"#))
        #expect(DeliveryHealth.isRefusal(status: 401, body: ""))
        #expect(DeliveryHealth.isRefusal(status: 404, body: "Not Found"))
        #expect(!DeliveryHealth.isRefusal(status: 400, body: #"{"error":"Invalid request"}"#))
    }

    @Test func anOutageIsNotHammeredAndHealsByItself() async throws {
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        koala.down(.status(500))
        let (app, components) = try await buildApplication(testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala), logger: quietLogger)
        try await app.test(.live) { client in
            for i in 0..<20 {
                let body = invoicePaid(id: "evt_cb_\(i)", email: "p\(i)@acme.io")
                let response = try await client.executeRequest(uri: "/webhooks/stripe", method: .post, headers: stripeHeaders(body), body: ByteBuffer(bytes: body))
                #expect(response.status == .ok)  // ingest keeps accepting during the outage
            }
            #expect(await eventually { components.sender.health.snapshot.isOpen })
            let opened = koala.attempts
            try await Task.sleep(nanoseconds: 1_500_000_000)
            // Without the breaker 20 people × 50 ms backoff would be hundreds of attempts; open, it probes.
            #expect(koala.attempts - opened <= 3, "attempts while open: \(koala.attempts - opened)")
            let ready = try await client.executeRequest(uri: "/readyz", method: .get, headers: readinessDetails, body: nil)
            #expect(String(buffer: ready.body).contains(#""circuit":"open""#))
            koala.up()
            #expect(await eventually(timeout: 15) { koala.deliveredMessageIDs.count == 20 })
            #expect(!components.sender.health.snapshot.isOpen)
        }
        #expect(koala.violations.isEmpty)
    }

    @Test func suspendedIngestIsLoudAndNotRetried() async throws {
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        koala.down(.status(400, body: #"{"error": "Koala ingest suspended"}"#))
        let (app, components) = try await buildApplication(testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala), logger: quietLogger)
        try await app.test(.live) { client in
            let body = invoicePaid(id: "evt_suspended", email: "a@acme.io")
            _ = try await client.executeRequest(uri: "/webhooks/stripe", method: .post, headers: stripeHeaders(body), body: ByteBuffer(bytes: body))
            #expect(await eventually { (try? await components.store.counts().dead) == 1 })
            try await Task.sleep(nanoseconds: 300_000_000)
            #expect(koala.attempts == 1)
            let ready = try await client.executeRequest(uri: "/readyz", method: .get, headers: readinessDetails, body: nil)
            #expect(String(buffer: ready.body).contains("Koala ingest suspended"))
            #expect(components.metrics.exposition().contains(#"koala_router_koala_refusals_total{destination="koala"} 1"#))
        }
    }
}

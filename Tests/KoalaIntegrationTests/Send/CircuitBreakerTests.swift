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
    @Test func opensAfterAStreakProbesSlowerAndCloses() {
        let health = DeliveryHealth(failureThreshold: 3, firstProbeInterval: 1, maxProbeInterval: 4)
        let t0 = Date(timeIntervalSince1970: 1000)
        #expect(health.mayProceed(now: t0) == (true, false))
        #expect(!health.recordFailure("503", now: t0))
        #expect(!health.recordFailure("503", now: t0))
        #expect(health.recordFailure("503", now: t0))
        #expect(health.mayProceed(now: t0.addingTimeInterval(0.5)) == (false, false))
        #expect(health.mayProceed(now: t0.addingTimeInterval(1)) == (true, true))
        #expect(health.mayProceed(now: t0.addingTimeInterval(1.1)) == (false, false))  // one probe per interval
        // A request of the round that opened it: counted, and not a second opening to log.
        #expect(!health.recordFailure("503", now: t0.addingTimeInterval(1.1)))
        #expect(health.snapshot.probeInterval == 1)
        health.recordFailure("503", now: t0.addingTimeInterval(1.2), probe: true)
        #expect(health.snapshot.probeInterval == 2)
        health.recordFailure("503", now: t0.addingTimeInterval(3.2), probe: true)
        health.recordFailure("503", now: t0.addingTimeInterval(7.2), probe: true)
        #expect(health.snapshot.probeInterval == 4)  // capped
        health.recordSuccess(now: t0.addingTimeInterval(12))
        #expect(health.snapshot == DeliveryHealth.Snapshot(lastError: "503", lastSuccess: t0.addingTimeInterval(12)))
        #expect(health.mayProceed(now: t0.addingTimeInterval(12)) == (true, false))
    }

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
            #expect(await eventually { components.sender.health.snapshot.circuitOpen })
            let opened = koala.attempts
            try await Task.sleep(nanoseconds: 1_500_000_000)
            // Without the breaker 20 people × 50 ms backoff would be hundreds of attempts; open, it probes.
            #expect(koala.attempts - opened <= 3, "attempts while open: \(koala.attempts - opened)")
            let ready = try await client.executeRequest(uri: "/readyz", method: .get, headers: readinessDetails, body: nil)
            #expect(String(buffer: ready.body).contains(#""circuit":"open""#))
            koala.up()
            #expect(await eventually(timeout: 15) { koala.deliveredMessageIDs.count == 20 })
            #expect(!components.sender.health.snapshot.circuitOpen)
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

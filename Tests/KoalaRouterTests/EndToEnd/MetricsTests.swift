import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
@testable import KoalaRouter

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
        config.environment = ["STRIPE_WEBHOOK_SECRET": "whsec_new", "STRIPE_WEBHOOK_SECRET_PREVIOUS": testSecret]
        let (app, _) = try await buildApplication(config, logger: quietLogger)
        try await app.test(.live) { client in
            func post(_ body: [UInt8], _ headers: HTTPFields) async throws {
                _ = try await client.executeRequest(uri: "/webhooks/stripe", method: .post, headers: headers, body: ByteBuffer(bytes: body))
            }
            let a = invoicePaid(id: "evt_m1", email: "a@acme.io")
            try await post(a, stripeHeaders(a, secret: testSecret))          // verified by the previous secret
            try await post(a, stripeHeaders(a, secret: testSecret))          // duplicate
            let b = invoicePaid(id: "evt_m2", email: "b@acme.io")
            try await post(b, stripeHeaders(b, secret: "whsec_new"))         // verified by the current secret
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
            #expect(metric(text, "koala_router_messages_queued_total", #"route="invoice-paid""#) == 2)
            // Secrets never appear, by value.
            #expect(!text.contains("whsec_new") && !text.contains(testSecret) && !text.contains("whsec_attacker"))
        }
    }
}

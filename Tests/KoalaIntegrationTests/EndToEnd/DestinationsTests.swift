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

/// Issue 15: one signed webhook reaches Koala and a Segment-compatible API with the right calls, each
/// destination with its own retries: one being down never delays the other, and it catches up when back.
@Suite("Destinations end to end")
struct DestinationsTests {
    @Test func aWebhookReachesKoalaAndSegmentAndADownDestinationCatchesUp() async throws {
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let segment = try await FakeSegment.start()
        defer { segment.stop() }
        // Segment is down for its first requests.
        segment.script(Array(repeating: (status: 503, body: ""), count: 3))
        var config = testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala)
        config.segmentWriteKey = segment.writeKey
        config.segmentURL = segment.baseURL
        let (app, components) = try await buildApplication(config, logger: quietLogger)
        try await app.test(.live) { client in
            let body = invoicePaid(id: "evt_dest_1", email: "Ada@Acme.io")
            let response = try await client.executeRequest(uri: "/webhooks/stripe", method: .post, headers: stripeHeaders(body), body: ByteBuffer(bytes: body))
            #expect(response.status == .ok)
            // Koala gets it at once, whatever Segment does.
            #expect(await eventually { koala.deliveredMessageIDs.count == 1 })
            let id = try #require(koala.deliveredMessageIDs.first)
            // Segment gets the same message id once it answers again.
            #expect(await eventually { segment.calls.count == 1 })
            #expect(segment.requests >= 4)
            let call = try #require(segment.calls.first)
            #expect(call["messageId"] == .string(id))
            #expect(call["type"] == "track")
            #expect(call["event"] == "Payment Succeeded")
            #expect(call["userId"] == "ada@acme.io")
            #expect(call["properties"]?["amount"] == 49)
            #expect(segment.violations.isEmpty, "\(segment.violations)")
            #expect(koala.violations.isEmpty, "\(koala.violations)")
            // /readyz shows each destination.
            let ready = try await client.executeRequest(uri: "/readyz", method: .get, headers: readinessDetails, body: nil)
            let readyBody = try JSONValue.parse(Array(buffer: ready.body))
            #expect(readyBody["destinations"]?["segment"] != nil)
            #expect(readyBody["destinations"]?["koala"] != nil)
            #expect(components.destinationSenders.map(\.destination) == [.segment])
        }
    }

    /// Issue 26, finding 10: a billing customer's account traits reach a Segment-compatible API as a group call
    /// of the customer's person into the billing customer's group, the domain a trait (no invented user), while
    /// Koala's /accounts/batch names the domain alone. Account traits with no person stay Koala's.
    @Test func accountTraitsAreAGroupCallOfTheirPerson() async throws {
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let segment = try await FakeSegment.start()
        defer { segment.stop() }
        var config = testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala)
        config.segmentWriteKey = segment.writeKey
        config.segmentURL = segment.baseURL
        let (app, _) = try await buildApplication(config, logger: quietLogger)
        try await app.test(.live) { client in
            for body in [IdentityMemoryTests.customerCreated(id: "evt_grp_cus", customer: "cus_7", email: "katherine@nasa-langley.io"),
                         IdentityMemoryTests.subscriptionCreated(id: "evt_grp_sub", customer: "cus_7")] {
                let response = try await client.executeRequest(uri: "/webhooks/stripe", method: .post, headers: stripeHeaders(body), body: ByteBuffer(bytes: body))
                #expect(response.status == .ok)
            }
            // identify + Subscription Started + MRR Changed + the account: four calls each.
            #expect(await eventually { koala.deliveredMessageIDs.count == 4 && segment.calls.count == 4 })
            let group = try #require(segment.calls.first { $0["type"] == "group" })
            #expect(group["userId"] == "katherine@nasa-langley.io")
            #expect(group["anonymousId"] == nil)
            #expect(group["groupId"] == "cus_7")
            #expect(group["traits"]?["domain"] == "nasa-langley.io")
            #expect(group["traits"]?["mrr"] == 49)
            #expect(koala.received.compactMap(\.domain) == ["nasa-langley.io"])
            #expect(segment.violations.isEmpty, "\(segment.violations)")
            #expect(koala.violations.isEmpty, "\(koala.violations)")
        }
    }

    /// A revoked write key is loud and final for that destination only: its messages are dead letters that
    /// say so, Koala's are delivered.
    @Test func aRevokedWriteKeyDeadLettersThatDestinationOnly() async throws {
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let segment = try await FakeSegment.start()
        defer { segment.stop() }
        var config = testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala)
        config.segmentWriteKey = "wk_revoked"
        config.segmentURL = segment.baseURL
        let (app, components) = try await buildApplication(config, logger: quietLogger)
        try await app.test(.live) { client in
            let body = invoicePaid(id: "evt_dest_2", email: "grace@acme.io")
            _ = try await client.executeRequest(uri: "/webhooks/stripe", method: .post, headers: stripeHeaders(body), body: ByteBuffer(bytes: body))
            #expect(await eventually { koala.deliveredMessageIDs.count == 1 })
            #expect(await eventually { (try? await components.store.deadLetters(matching: DeadLetterFilter(destination: .segment), limit: 10).count) == 1 })
            let dead = try await components.store.deadLetters(matching: DeadLetterFilter(destination: .segment), limit: 10)
            #expect(dead.first?.reason == "segment rejected (401)")
            #expect(try await components.store.deadLetters(matching: DeadLetterFilter(destination: .koala), limit: 10).isEmpty)
            #expect(components.destinationSenders.first?.health.snapshot.refusing != nil)
            #expect(segment.calls.isEmpty)
        }
    }

    @Test func aHalfConfiguredDestinationIsAnError() throws {
        var config = RouterConfiguration(environment: [:])
        config.rudderstackWriteKey = "wk"
        #expect(throws: KoalaRouterError.self) { try config.segmentDestinations() }
        config.rudderstackDataPlaneURL = "https://acme.dataplane.rudderstack.com"
        #expect(try config.segmentDestinations().map(\.destination) == [.rudderstack])
    }
}

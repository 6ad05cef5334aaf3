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

/// Issue 14, part 9: what happens to an unusable identity field beside a usable one, decided once and kept by
/// the router, the metrics and Koala's requests alike.
@Suite("Identity consistency")
struct IdentityConsistencyTests {
    static let rules = """
        source: stripe
        verify: { scheme: stripe, secrets: [STRIPE_WEBHOOK_SECRET] }
        routes:
          - name: signup
            when: { type: customer.created }
            person: { email: body.data.object.email, profile_id: body.data.object.metadata.ko_id }
            track: { event: Signed Up }
            account: { domain: person.email | email_domain, account_id: body.data.object.metadata.account }
        """

    func routed(_ object: String) throws -> [KoalaMessage] {
        let table = try RuleLoader(environment: ["STRIPE_WEBHOOK_SECRET": testSecret]).load(files: [("routes/stripe.yaml", Self.rules)])
        let body = Array(#"{"id":"evt_id","type":"customer.created","created":1732871520,"data":{"object":\#(object)}}"#.utf8)
        let webhook = VerifiedWebhook(source: "stripe", webhookID: "evt_id", eventType: "customer.created", eventTime: Date(timeIntervalSince1970: 1_732_871_520),
                                      receivedAt: Date(), headers: [:], body: body, json: try JSONTape.parse(body), secretLabel: "S", rulesVersion: "t")
        return WebhookRouter(source: try #require(table.sources["stripe"])).route(webhook)
    }

    @Test func anInvalidProfileIDBesideAValidEmailIsLeftOutAndSaid() throws {
        let messages = try routed(#"{"email":"ada@acme-corp.io","metadata":{"ko_id":"not-a-uuid"}}"#)
        let track = try #require(messages.first { $0.output == .track })
        #expect(track.problem == nil)
        #expect(track.identity == KoalaIdentity(email: "ada@acme-corp.io"))
        #expect(track.droppedFields == [.init(field: "person.profile_id",
                                              reason: "← body.data.object.metadata.ko_id: \"not-a-uuid\" (text), not a UUID (Koala profile ids are the ko_id cookie's UUID)")])
    }

    @Test func anInvalidEmailBesideAValidProfileIDIsLeftOutAndSaid() throws {
        let messages = try routed(#"{"email":"not an email","metadata":{"ko_id":"6F1C2E0A-9B7D-4C1E-8A55-0D3B7E9F1A22"}}"#)
        let track = try #require(messages.first { $0.output == .track })
        #expect(track.problem == nil)
        #expect(track.identity == KoalaIdentity(profileID: "6f1c2e0a-9b7d-4c1e-8a55-0d3b7e9f1a22"))
        #expect(track.droppedFields == [.init(field: "person.email", reason: "← body.data.object.email: \"not an email\" (text), not an email address (no '@')")])
    }

    @Test func withNoUsableFieldTheMessageIsADeadLetter() throws {
        let messages = try routed(#"{"email":"not an email","metadata":{"ko_id":"nope"}}"#)
        let track = try #require(messages.first { $0.output == .track })
        #expect(track.problem == "person.email ← body.data.object.email: \"not an email\" (text), not an email address (no '@')")
        #expect(track.droppedFields.isEmpty)
    }

    @Test func anUnusableAccountIDBesideADomainIsLeftOutAndSaid() throws {
        let messages = try routed(#"{"email":"ada@acme-corp.io","metadata":{"account":"acct\u0001"}}"#)
        let account = try #require(messages.first { $0.output == .account })
        #expect(account.problem == nil)
        #expect(account.identity.koala == KoalaIdentity(domain: "acme-corp.io"))
        #expect(account.droppedFields.map(\.field) == ["account.account_id"])
    }

    /// Through the service: the request Koala gets carries the email only, and the metric counts the field.
    @Test func theServiceSendsByEmailAndCountsTheDroppedField() async throws {
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let routes = temporaryDirectory()
        try Self.rules.write(toFile: routes + "/stripe.yaml", atomically: true, encoding: .utf8)
        let config = testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala, routes: routes)
        let (app, _) = try await buildApplication(config, logger: quietLogger)
        try await app.test(.live) { client in
            let body = Array(#"{"id":"evt_ko","object":"event","type":"customer.created","created":1732871520,"data":{"object":{"email":"ada@acme-corp.io","metadata":{"ko_id":"ko-123"}}}}"#.utf8)
            let response = try await client.executeRequest(uri: "/webhooks/stripe", method: .post, headers: stripeHeaders(body), body: ByteBuffer(bytes: body))
            #expect(response.status == .ok)
            #expect(await eventually { koala.received.count == 2 })
            let person = try #require(koala.received.first { $0.endpoint == .person })
            #expect(person.email == "ada@acme-corp.io")
            #expect(person.body["profile_id"] == nil)
            let metrics = String(buffer: try await client.executeRequest(uri: "/metrics", method: .get, headers: [:], body: nil).body)
            #expect(metrics.contains(#"koala_router_identity_fields_dropped_total{field="person.profile_id",route="signup",source="stripe"} 1"#)
                    || metrics.contains(#"koala_router_identity_fields_dropped_total{source="stripe",route="signup",field="person.profile_id"} 1"#),
                    "\(metrics.split(separator: "\n").filter { $0.contains("identity_fields") })")
        }
        #expect(koala.violations.isEmpty)
    }
}

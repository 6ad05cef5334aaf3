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

/// Stripe subscription events carry only the customer id: the shipped routes remember the email from
/// customer / checkout / invoice events and recall it for subscriptions.
@Suite("Identity memory")
struct IdentityMemoryTests {
    static let environment = ["STRIPE_WEBHOOK_SECRET": testSecret]

    func table() throws -> RuleTable {
        try RuleLoader(environment: Self.environment).load(directory: repositoryRoot + "/routes")
    }

    static func subscriptionCreated(id: String, customer: String, status: String = "active") -> [UInt8] {
        stripeEvent(id: id, type: "customer.subscription.created", object: [
            "id": "sub_1", "object": "subscription", "customer": .string(customer), "status": .string(status), "currency": "usd",
            "items": ["data": [["price": ["nickname": "Pro", "unit_amount": 4900, "recurring": ["interval": "month"]]]]],
        ])
    }

    static func customerCreated(id: String, customer: String, email: String) -> [UInt8] {
        stripeEvent(id: id, type: "customer.created", object: ["id": .string(customer), "object": "customer", "email": .string(email), "name": "Ada"])
    }

    func webhook(_ body: [UInt8], id: String, type: String) throws -> VerifiedWebhook {
        VerifiedWebhook(source: "stripe", webhookID: id, eventType: type, eventTime: Date(timeIntervalSince1970: 1_732_871_520),
                        receivedAt: Date(), headers: [:], body: body, json: try JSONTape.parse(body), secretLabel: "S", rulesVersion: "v")
    }

    /// A `recall` in `when.where` is looked up before routing like any other: the shipped Clerk route that
    /// names an organization's account only once its verified domain is remembered must see that memory.
    @Test func aRecallInWhereIsLookedUpBeforeRouting() throws {
        let table = try RuleLoader(environment: ["CLERK_WEBHOOK_SECRET": "whsec_" + Data(repeating: 7, count: 24).base64EncodedString()])
            .load(directory: repositoryRoot + "/routes")
        let router = WebhookRouter(source: try #require(table.sources["clerk"]))
        let body = Array(#"{"type":"organization.updated","timestamp":1732871800000,"data":{"id":"org_1","name":"Hut 8","object":"organization"}}"#.utf8)
        let webhook = VerifiedWebhook(source: "clerk", webhookID: "msg_1", eventType: "organization.updated", eventTime: Date(timeIntervalSince1970: 1_732_871_800),
                                      receivedAt: Date(), headers: [:], body: body, json: try JSONTape.parse(body), secretLabel: "S", rulesVersion: "v")
        let key = MemoryKey(namespace: "clerk_organization", key: "org_1")
        #expect(router.recallKeys(webhook) == [MemoryKey(namespace: "clerk_organization_profile", key: "org_1"), key])
        #expect(router.route(webhook).isEmpty)
        let routed = router.route(webhook, memory: [key: KoalaIdentity(domain: "hut8.io")])
        #expect(routed.map(\.identity.koala) == [KoalaIdentity(domain: "hut8.io")])
    }

    @Test func routesRememberAndRecall() throws {
        let router = WebhookRouter(source: try #require(try table().sources["stripe"]))
        let customer = router.routing(try webhook(Self.customerCreated(id: "evt_c", customer: "cus_9", email: "Ada@Acme.io"), id: "evt_c", type: "customer.created"))
        #expect(customer.remembers == [Remembered(key: MemoryKey(namespace: "stripe_customer", key: "cus_9"),
                                                  identity: KoalaIdentity(email: "ada@acme.io", domain: "acme.io"))])

        let subscription = try webhook(Self.subscriptionCreated(id: "evt_s", customer: "cus_9"), id: "evt_s", type: "customer.subscription.created")
        #expect(router.recallKeys(subscription) == [MemoryKey(namespace: "stripe_customer", key: "cus_9"), MemoryKey(namespace: "billing_ledger", key: "cus_9")])
        // Without memory: the messages wait for the customer (the start, the account's state, its MRR movement).
        let waiting = router.route(subscription)
        #expect(waiting.count == 3)
        #expect(waiting.allSatisfy { $0.waitingFor == MemoryKey(namespace: "stripe_customer", key: "cus_9") && $0.problem == nil })
        // With memory: resolved, including the account domain derived from the recalled email.
        let resolved = router.route(subscription, memory: [MemoryKey(namespace: "stripe_customer", key: "cus_9"): KoalaIdentity(email: "ada@acme.io", domain: "acme.io")])
        #expect(resolved.map(\.identity) == [KoalaIdentity(email: "ada@acme.io"), KoalaIdentity(email: "ada@acme.io", domain: "acme.io"), KoalaIdentity(email: "ada@acme.io")])
        #expect(resolved.map(\.identity.koala) == [KoalaIdentity(email: "ada@acme.io"), KoalaIdentity(domain: "acme.io"), KoalaIdentity(email: "ada@acme.io")])
        #expect(resolved.allSatisfy { $0.waitingFor == nil && $0.problem == nil })
        #expect(resolved.map(\.messageID) == waiting.map(\.messageID))
        // A status outside the condition produces nothing.
        let incomplete = try webhook(Self.subscriptionCreated(id: "evt_i", customer: "cus_9", status: "incomplete"), id: "evt_i", type: "customer.subscription.created")
        #expect(router.route(incomplete).isEmpty)
    }

    @Test(arguments: Backend.configured) func aWaitingMessageIsReleasedWhenTheIdentityArrives(_ backend: Backend) async throws {
        let table = try table()
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let holder = RulesHolder(table)
            let ingest = Ingest(rules: holder, store: store, linger: 0, identityWait: 600, logger: quietLogger)
            let resolver = IdentityResolver(store: store, rules: holder, linger: 0, logger: quietLogger)

            let sub = Self.subscriptionCreated(id: "evt_sub_first", customer: "cus_42")
            let first = await ingest.handle(source: "stripe", headers: stripeHeaders(sub), body: sub)
            #expect(first.status == .ok)
            #expect(first.body["waiting_for_identity"] == 3)
            #expect(try await store.counts().waiting == 3)
            #expect(try await resolver.runOnce() == false)  // nothing to settle yet
            #expect(try await store.claimDue(now: Date().addingTimeInterval(1), limit: 10, lease: 60).isEmpty)

            let customer = Self.customerCreated(id: "evt_cus", customer: "cus_42", email: "grace@hopper.dev")
            _ = await ingest.handle(source: "stripe", headers: stripeHeaders(customer), body: customer)
            #expect(try await resolver.runOnce() == true)
            let counts = try await store.counts()
            #expect(counts.waiting == 0)
            let due = try await store.claimDue(now: Date().addingTimeInterval(1), limit: 10, lease: 60)
            let track = try #require(due.first { $0.route == "subscription-started" && $0.kind == .track })
            #expect(track.identity == KoalaIdentity(email: "grace@hopper.dev"))
            let account = try #require(due.first { $0.endpoint == .account })
            #expect(account.identity == KoalaIdentity(email: "grace@hopper.dev", domain: "hopper.dev"))   // the person rides along for Segment's group call
            #expect(account.itemJSON.contains(#""is_paying_customer":true"#))
            #expect(account.itemJSON.contains(#""billing_status":"active""#))
        }
    }

    @Test(arguments: Backend.configured) func aWaitThatRunsOutIsDeadLetteredAsIdentityUnresolved(_ backend: Backend) async throws {
        let table = try table()
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let holder = RulesHolder(table)
            let ingest = Ingest(rules: holder, store: store, linger: 0, identityWait: 0, logger: quietLogger)
            let resolver = IdentityResolver(store: store, rules: holder, linger: 0, logger: quietLogger)
            let sub = Self.subscriptionCreated(id: "evt_sub_orphan", customer: "cus_unknown")
            _ = await ingest.handle(source: "stripe", headers: stripeHeaders(sub), body: sub)
            #expect(try await resolver.runOnce(now: Date().addingTimeInterval(1)) == true)
            let dead = try await store.deadLetters(limit: 10)
            #expect(dead.count == 3)
            #expect(dead.allSatisfy { $0.reason == "identity unresolved: nothing remembered under stripe_customer 'cus_unknown'" })
        }
    }

    @Test(arguments: Backend.configured) func memoryKeepsKnownFieldsAndIsPerSource(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            func accept(_ id: String, source: String, _ identity: KoalaIdentity) async throws {
                let body = Array(#"{"id":"\#(id)"}"#.utf8)
                let w = VerifiedWebhook(source: source, webhookID: id, eventType: "t", eventTime: Date(), receivedAt: Date(), headers: [:],
                                        body: body, json: try JSONTape.parse(body), secretLabel: "S", rulesVersion: "v")
                _ = try await store.accept(w, messages: [], remembers: [Remembered(key: MemoryKey(namespace: "c", key: "k1"), identity: identity)],
                                           linger: 0, identityWait: 0)
            }
            try await accept("w1", source: "stripe", KoalaIdentity(email: "a@acme.io", domain: "acme.io"))
            try await accept("w2", source: "stripe", KoalaIdentity(profileID: "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"))
            let key = MemoryKey(namespace: "c", key: "k1")
            #expect(try await store.recall(source: "stripe", keys: [key])[key]?.identity
                    == KoalaIdentity(email: "a@acme.io", profileID: "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba", domain: "acme.io"))
            #expect(try await store.recall(source: "paddle", keys: [key]).isEmpty)
        }
    }

    @Test func endToEndASubscriptionBeforeItsCustomerReachesKoalaOnce() async throws {
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let (app, _) = try await buildApplication(testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala), logger: quietLogger)
        try await app.test(.live) { client in
            for body in [Self.subscriptionCreated(id: "evt_e2e_sub", customer: "cus_7"),
                         Self.customerCreated(id: "evt_e2e_cus", customer: "cus_7", email: "katherine@nasa-langley.io")] {
                let response = try await client.executeRequest(uri: "/webhooks/stripe", method: .post, headers: stripeHeaders(body), body: ByteBuffer(bytes: body))
                #expect(response.status == .ok)
            }
            // identify (customer) + track (subscription) + MRR Changed to /batch, account traits to /accounts/batch.
            #expect(await eventually { koala.deliveredMessageIDs.count == 4 })
        }
        #expect(koala.violations.isEmpty)
        #expect(Set(koala.received.compactMap(\.email)) == ["katherine@nasa-langley.io"])
        #expect(koala.received.compactMap(\.domain) == ["nasa-langley.io"])
    }
}

import Foundation
import Testing
@testable import KoalaCore
@testable import KoalaRuleTools
import KoalaTestSupport

@Suite("Routing webhooks to Koala messages")
struct WebhookRouterTests {
    func stripeSource() throws -> SourceDefinition {
        let table = try RuleLoader(environment: ["STRIPE_WEBHOOK_SECRET": testSecret]).load(directory: repositoryRoot + "/routes")
        return try #require(table.sources["stripe"])
    }

    func webhook(_ body: [UInt8], type: String, id: String) throws -> VerifiedWebhook {
        VerifiedWebhook(source: "stripe", webhookID: id, eventType: type, eventTime: Date(timeIntervalSince1970: 1_732_871_520),
                        receivedAt: Date(), headers: [:], body: body, json: try JSONTape.parse(body),
                        secretLabel: "STRIPE_WEBHOOK_SECRET", rulesVersion: "test")
    }

    @Test func invoicePaidBecomesOneTrackEvent() throws {
        let router = WebhookRouter(source: try stripeSource())
        let messages = router.route(try webhook(invoicePaid(id: "evt_1", email: " Ada@Analytical-Engines.io", amount: 4999), type: "invoice.paid", id: "evt_1"))
        #expect(messages.count == 1)
        let m = try #require(messages.first)
        #expect(m.endpoint == .person)
        #expect(m.kind == .track)
        #expect(m.identity == KoalaIdentity(email: "ada@analytical-engines.io"))
        #expect(m.problem == nil)
        #expect(m.messageID == MessageID.derive(source: "stripe", webhookID: "evt_1", route: "payment-succeeded", output: .track))
        #expect(m.item == [
            "type": "track", "event": "Payment Succeeded", "message_id": .string(m.messageID), "sent_at": "2024-11-29T09:12:00.000Z",
            "properties": ["amount": .double(49.99), "currency": "USD", "invoice_id": "in_evt_1", "invoice_number": "INV-1",
                           "billing_reason": "subscription_create", "stripe_customer_id": "cus_1", "billing_provider": "stripe"],
        ])
    }

    @Test func checkoutBecomesTrackAndIdentify() throws {
        let body = stripeEvent(id: "evt_2", type: "checkout.session.completed", object: [
            "id": "cs_1", "amount_total": 4900, "currency": "eur", "mode": "subscription", "customer": "cus_9",
            "customer_email": nil, "customer_details": ["email": "Grace@Hopper.dev", "name": "Grace Hopper"],
        ])
        let messages = WebhookRouter(source: try stripeSource()).route(try webhook(body, type: "checkout.session.completed", id: "evt_2"))
        #expect(messages.map(\.output) == [.track, .identify])
        #expect(messages.allSatisfy { $0.identity == KoalaIdentity(email: "grace@hopper.dev") })
        #expect(messages[1].item["traits"] == ["email": "grace@hopper.dev", "name": "Grace Hopper", "stripe_customer_id": "cus_9", "is_customer": true])
        #expect(Set(messages.map(\.messageID)).count == 2)
    }

    @Test func missingEmailIsAProblemNotASilentDrop() throws {
        let body = stripeEvent(id: "evt_3", type: "invoice.paid", object: ["id": "in_3", "customer_email": nil, "amount_paid": 100])
        let messages = WebhookRouter(source: try stripeSource()).route(try webhook(body, type: "invoice.paid", id: "evt_3"))
        #expect(messages.count == 1)
        #expect(messages[0].problem == "identity missing: person.email ← body.data.object.customer_email is null in this webhook")
    }

    @Test func invalidEmailIsAProblem() throws {
        let body = stripeEvent(id: "evt_4", type: "invoice.paid", object: ["id": "in_4", "customer_email": "not an email", "amount_paid": 100])
        let messages = WebhookRouter(source: try stripeSource()).route(try webhook(body, type: "invoice.paid", id: "evt_4"))
        #expect(messages[0].problem == "person.email ← body.data.object.customer_email: \"not an email\" (text), not an email address (no '@')")
    }

    /// Issue 16, part 3: an identity problem names the rule field, the path it read, the value's type and an
    /// excerpt; an account without a domain says why (no email, free mail, invalid email, not a domain).
    @Test func identityReasonsPointAtTheCause() throws {
        let rules = """
            source: shop
            verify: { scheme: stripe, secrets: [S] }
            routes:
              - name: paid
                when: { type: checkout.session.completed }
                person: { email: body.data.object.amount_total }
                track: { event: Checkout Completed }
                account: { domain: person.email | email_domain }
              - name: org
                when: { type: org.updated }
                account: { domain: body.data.domain, account_id: body.data.account }
              - name: who
                when: { type: customer.created }
                person: { email: body.data.object.email, profile_id: body.data.object.metadata.ko_id }
                track: { event: Signed Up }
                account: { domain: person.email | email_domain }
            """
        let source = try #require(try RuleLoader(environment: ["S": "x"]).load(files: [("routes/shop.yaml", rules)]).sources["shop"])
        func problems(_ type: String, _ object: JSONValue) throws -> [String?] {
            let body: JSONValue = ["id": "evt_r", "type": .string(type), "created": 1_732_871_520, "data": ["object": object]]
            return WebhookRouter(source: source).route(try webhook(Array(body.encoded().utf8), type: type, id: "evt_r")).map(\.problem)
        }
        #expect(try problems("checkout.session.completed", ["amount_total": 129_900]) == [
            "person.email ← body.data.object.amount_total: 129900 (a number), not an email address",
            "identity missing: account.domain ← person.email | email_domain is empty, because person.email ← body.data.object.amount_total: 129900 (a number), not an email address",
        ])
        #expect(try problems("customer.created", ["email": "ada@gmail.com"]) == [
            nil,
            "identity missing: account.domain ← person.email | email_domain is empty: person.email is \"ada@gmail.com\" (text), at a free-mail domain (gmail.com); Koala accounts are companies",
        ])
        #expect(try problems("customer.created", ["metadata": ["ko_id": "nope"]]) == [
            "person.profile_id ← body.data.object.metadata.ko_id: \"nope\" (text), not a UUID (Koala profile ids are the ko_id cookie's UUID)",
            "identity missing: account.domain ← person.email | email_domain is empty, because person.profile_id ← body.data.object.metadata.ko_id: \"nope\" (text), not a UUID (Koala profile ids are the ko_id cookie's UUID)",
        ].map { Optional($0) })
        #expect(try problems("customer.created", [:]) == [
            "identity missing: person.email ← body.data.object.email is missing and person.profile_id ← body.data.object.metadata.ko_id is missing in this webhook",
            "identity missing: account.domain ← person.email | email_domain is empty, because person.email ← body.data.object.email is missing and person.profile_id ← body.data.object.metadata.ko_id is missing in this webhook",
        ].map { Optional($0) })
        #expect(try problems("customer.created", ["email": "ada@acme..io"]) == [
            "person.email ← body.data.object.email: \"ada@acme..io\" (text), not an email address ('acme..io' is not a domain)",
            "identity missing: account.domain ← person.email | email_domain is empty, because person.email ← body.data.object.email: \"ada@acme..io\" (text), not an email address ('acme..io' is not a domain)",
        ].map { Optional($0) })
        #expect(try problems("customer.created", ["email": "ada\u{202E}@acme.io"]).first == "person.email ← body.data.object.email: \"ada\\u{202E}@acme.io\" (text), not an email address (it holds a control or invisible formatting character)")
        let org: JSONValue = ["domain": "Acme Inc", "account": nil]
        let body: JSONValue = ["id": "evt_o", "type": "org.updated", "data": org]
        #expect(WebhookRouter(source: source).route(try webhook(Array(body.encoded().utf8), type: "org.updated", id: "evt_o")).map(\.problem) == [
            "identity missing: account.domain ← body.data.domain: \"Acme Inc\" (text), not a domain; account.account_id ← body.data.account is null",
        ])
        let freeMail: JSONValue = ["id": "evt_o", "type": "org.updated", "data": ["domain": "gmail.com", "account": ["id": 1]]]
        #expect(WebhookRouter(source: source).route(try webhook(Array(freeMail.encoded().utf8), type: "org.updated", id: "evt_o")).map(\.problem) == [
            "identity missing: account.domain ← body.data.domain: \"gmail.com\" (text) is a free-mail domain (gmail.com); Koala accounts are companies; account.account_id ← body.data.account is an object with keys id",
        ])
    }

    /// Ingest routes without building explanations; what it sends and remembers must be exactly what explained
    /// routing (simulate, tests) says, for every webhook of every shipped rule test.
    @Test func routingWithoutExplanationsSendsTheSame() throws {
        let table = try RuleLoader(environment: [:]).load(directory: repositoryRoot + "/routes")
        var compared = 0
        for name in try FileManager.default.contentsOfDirectory(atPath: repositoryRoot + "/routes/tests") where name.hasSuffix(".yaml") {
            let path = repositoryRoot + "/routes/tests/" + name
            var file = TestFile(path: path, text: try String(contentsOfFile: path, encoding: .utf8), table: table)
            let found = file.samples()
            let (sourceName, samples) = try #require(found)
            let source = try #require(table.sources[sourceName])
            for sample in samples {
                let json = try JSONTape.parse(sample.body)
                guard case .success(let w) = source.webhook(body: sample.body, json: json, headers: sample.headers, receivedAt: Date(timeIntervalSince1970: 0),
                                                            secretLabel: "t", rulesVersion: "t") else { continue }
                let explained = WebhookRouter(source: source).routing(w, memory: sample.memory)
                let quick = WebhookRouter(source: source).routing(w, memory: sample.memory, explaining: false)
                #expect(quick.messages.map { $0.item.encoded() } == explained.messages.map { $0.item.encoded() }, "\(sample.name)")
                #expect(quick.messages.map(\.problem) == explained.messages.map(\.problem), "\(sample.name)")
                #expect(quick.remembers.map(\.key) == explained.remembers.map(\.key), "\(sample.name)")
                #expect(quick.results.filter(\.matched).map(\.route) == explained.results.filter(\.matched).map(\.route))
                compared += 1
            }
        }
        #expect(compared > 100)
    }

    @Test func unmatchedTypeProducesNothingAndExplainsWhy() throws {
        let router = WebhookRouter(source: try stripeSource())
        let w = try webhook(stripeEvent(id: "evt_5", type: "charge.dispute.created", object: [:]), type: "charge.dispute.created", id: "evt_5")
        #expect(router.route(w).isEmpty)
        let invoice = try #require(router.explain(w).first { $0.route == "payment-succeeded" })
        #expect(!invoice.matched)
        #expect(invoice.reason == "type 'charge.dispute.created' is not invoice.paid")
    }

    @Test func messageIDsAreStableAndDistinct() {
        let a = MessageID.derive(source: "stripe", webhookID: "evt_1", route: "r", output: .track)
        #expect(a == MessageID.derive(source: "stripe", webhookID: "evt_1", route: "r", output: .track))
        #expect(a != MessageID.derive(source: "stripe", webhookID: "evt_1", route: "r", output: .identify))
        // Length-prefixing keeps boundaries unambiguous.
        #expect(MessageID.derive(source: "ab", webhookID: "c", route: "r", output: .track) != MessageID.derive(source: "a", webhookID: "bc", route: "r", output: .track))
        #expect(UUID(uuidString: a) != nil)
        // Pinned: the derivation is a public contract (README); changing it would double-count replays.
        #expect(MessageID.derive(source: "stripe", webhookID: "evt_1QkoalaInvoicePaid0001", route: "invoice-paid", output: .track)
                == "f8e4a02d-451a-890e-af93-77781b7d4fdf")
    }

    @Test func accountOutputKeysByCompanyDomain() throws {
        let table = try RuleLoader(environment: ["S": "x"]).load(files: [("t.yaml", """
            source: shop
            verify: { scheme: stripe, secrets: [S] }
            routes:
              - name: plan
                when: { type: plan.changed }
                person: { email: body.email }
                account:
                  domain: person.email | email_domain
                  group_id: body.workspace
                  traits: { billing_plan: body.plan, is_current_customer: true }
            """)])
        let router = WebhookRouter(source: try #require(table.sources["shop"]))
        func run(_ email: String) throws -> KoalaMessage {
            let body = Array(JSONValue.object(["email": .string(email), "plan": "pro", "workspace": "dev"]).encoded().utf8)
            let w = VerifiedWebhook(source: "shop", webhookID: "w1", eventType: "plan.changed", eventTime: Date(timeIntervalSince1970: 0),
                                    receivedAt: Date(), headers: [:], body: body, json: try JSONTape.parse(body), secretLabel: "S", rulesVersion: "v")
            return try #require(router.route(w).first)
        }
        let company = try run("ops@Acme.io")
        #expect(company.endpoint == .account)
        // The account, and the person its traits came with (for Segment's group call; Koala's request names the domain alone).
        #expect(company.identity == KoalaIdentity(email: "ops@acme.io", domain: "acme.io"))
        #expect(company.identity.topLevel.map(\.0) == ["domain"])
        #expect(company.item["traits"] == ["billing_plan": "pro", "is_current_customer": true, "group_id": "dev"])
        let free = try run("someone@gmail.com")
        #expect(free.problem?.contains("free-mail") == true)
    }
}

/// Issue 14, part 1: a missing, null or blank value never reaches Koala, where it would overwrite a good trait.
@Suite("No nulls, no blanks, no half templates")
struct NoNullsTests {
    static let rules = """
        source: shop
        verify: { scheme: stripe, secrets: [STRIPE_WEBHOOK_SECRET] }
        routes:
          - name: customer
            when: { type: customer.created }
            person: { email: body.data.object.email }
            identify:
              traits:
                name: "{{ body.data.object.first_name }} {{ body.data.object.last_name }}"
                company: body.data.object.company
                phone: body.data.object.phone
                address: body.data.object.address
                tags: body.data.object.tags
                plan: body.data.object.plan
                seats: body.data.object.seats
                trial_ends_at: null
        """

    func traits(_ object: String) throws -> JSONValue? {
        let table = try RuleLoader(environment: ["STRIPE_WEBHOOK_SECRET": testSecret]).load(files: [("routes/shop.yaml", Self.rules)])
        let source = try #require(table.sources["shop"])
        let body = Array(#"{"id":"evt_n","type":"customer.created","data":{"object":\#(object)}}"#.utf8)
        let webhook = VerifiedWebhook(source: "shop", webhookID: "evt_n", eventType: "customer.created", eventTime: Date(timeIntervalSince1970: 0),
                                      receivedAt: Date(), headers: [:], body: body, json: try JSONTape.parse(body), secretLabel: "S", rulesVersion: "t")
        let messages = WebhookRouter(source: source).route(webhook)
        #expect(messages.count == 1 && messages[0].problem == nil)
        return messages.first?.item["traits"]
    }

    @Test func nullsAndBlanksAreLeftOut() throws {
        let traits = try self.traits("""
            {"email":"ada@acme-corp.io","first_name":"Ada","last_name":null,"company":"","phone":"   ","plan":"pro","seats":0,
             "address":{"line1":null,"city":"London","country":""},"tags":[null,"vip",""]}
            """)
        #expect(traits == [
            "name": "Ada", "plan": "pro", "seats": 0, "address": ["city": "London"], "tags": ["vip"],
            // Written as `null` in the rule itself: clearing a trait on purpose is the one null sent.
            "trial_ends_at": .null,
        ])
    }

    @Test func aTemplateWithNothingInItIsLeftOut() throws {
        let traits = try self.traits(#"{"email":"ada@acme-corp.io","first_name":null,"address":{"line1":null}}"#)
        #expect(traits == ["trial_ends_at": .null])
    }

    @Test func aCompleteTemplateKeepsItsSpacing() throws {
        let traits = try self.traits(#"{"email":"ada@acme-corp.io","first_name":"Ada","last_name":"Lovelace"}"#)
        #expect(traits?["name"] == "Ada Lovelace")
        let middle = try self.traits(#"{"email":"ada@acme-corp.io","first_name":null,"last_name":"Lovelace"}"#)
        #expect(middle?["name"] == "Lovelace")
    }
}

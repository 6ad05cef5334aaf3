import Foundation
import Testing
@testable import KoalaCore
import KoalaTestSupport

@Suite("Rule files")
struct RuleLoaderTests {
    let env = ["STRIPE_WEBHOOK_SECRET": "whsec_rule_tests_x"]

    func load(_ text: String, env: [String: String]? = nil) throws(RuleTableErrors) -> RuleTable {
        try RuleLoader(environment: env ?? self.env).load(files: [("routes/test.yaml", text)])
    }

    func errors(_ text: String) -> [String] {
        do {
            _ = try load(text)
            return []
        } catch {
            return error.errors.map(\.description)
        }
    }

    static let minimal = """
        source: shop
        verify: { scheme: stripe, secrets: [STRIPE_WEBHOOK_SECRET] }
        routes:
          - name: paid
            when: { type: invoice.paid }
            person: { email: body.data.object.customer_email }
            track: { event: Invoice Paid }
        """

    @Test func shippedRoutesLoad() throws {
        let table = try RuleLoader(environment: env).load(directory: repositoryRoot + "/routes")
        let stripe = try #require(table.sources["stripe"])
        #expect(stripe.verifier != nil)
        #expect(stripe.routes.map(\.name).contains("payment-succeeded"))
        #expect(stripe.routes.map(\.name).contains("checkout-completed"))
        #expect(table.version.count == 12)
    }

    /// State memory: `remember: { name: { key, values } }`; mistakes name the line and say what to write.
    @Test func rememberedStateIsCheckedWhenLoaded() throws {
        func file(_ remember: String) -> String {
            """
            source: shop
            verify: { scheme: stripe, secrets: [STRIPE_WEBHOOK_SECRET] }
            routes:
              - name: sub
                when: { type: customer.subscription.updated }
                account: { domain: body.data.object.domain, traits: { plan: body.plan } }
                remember:
            \(remember)
            """
        }
        let table = try load(file("      shop_subscription: { key: body.data.object.id, values: { mrr: stripe_mrr(body.data.object), status: body.data.object.status } }"))
        let spec = try #require(table.sources["shop"]?.routes.first?.remember.first)
        #expect(spec.name == "shop_subscription")
        #expect(spec.values.map(\.name) == ["mrr", "status"])

        let noValues = errors(file("      shop_subscription: { key: body.data.object.id }"))
        #expect(noValues.count == 1)
        #expect(noValues.first?.contains("routes/test.yaml:8:") == true)
        #expect(noValues.first?.contains("remember.shop_subscription has a key but no 'values'") == true)
        let reserved = errors(file("      shop_subscription: { key: body.data.object.id, values: { email: body.email } }"))
        #expect(reserved.first?.contains("'email' is reserved") == true)
        let unknownKey = errors(file("      shop_subscription: { id: body.data.object.id, values: { mrr: body.mrr } }"))
        #expect(!unknownKey.isEmpty)
        // State alone needs no person or account; an identity does.
        let stateOnly = """
            source: shop
            verify: { scheme: stripe, secrets: [STRIPE_WEBHOOK_SECRET] }
            routes:
              - name: sub
                when: { type: customer.subscription.updated }
                account: { domain: body.domain }
                remember: { shop_subscription: body.id, other: { key: body.id, values: { status: body.status } } }
            """
        #expect(errors(stateOnly).isEmpty)
    }

    /// Issue 15: a route can limit itself to some destinations; a typo is an error with a suggestion.
    @Test func aRouteCanLimitItsDestinations() throws {
        let text = """
            source: shop
            verify: { scheme: stripe, secrets: [STRIPE_WEBHOOK_SECRET] }
            routes:
              - name: koala-only
                when: { type: invoice.paid }
                destinations: [koala]
                person: { email: body.email }
                track: { event: Payment Succeeded }
              - name: segment-only
                when: { type: invoice.paid }
                destinations: [segment]
                person: { email: body.email }
                track: { event: Invoice Paid }
              - name: everywhere
                when: { type: invoice.paid }
                person: { email: body.email }
                identify: { traits: { email: person.email } }
              - name: per-output
                when: { type: invoice.paid }
                person: { email: body.email }
                track: { event: Invoice Paid, destinations: [segment] }
                identify: { traits: { paid: true } }
            """
        let table = try load(text)
        let source = try #require(table.sources["shop"])
        let body = Array(#"{"id":"evt_1","type":"invoice.paid","created":1732871520,"email":"ada@acme.io"}"#.utf8)
        let webhook = VerifiedWebhook(source: "shop", webhookID: "evt_1", eventType: "invoice.paid", eventTime: Date(), receivedAt: Date(),
                                      headers: [:], body: body, json: try JSONTape.parse(body), secretLabel: "S", rulesVersion: "v")
        let both = WebhookRouter(source: source).routing(webhook, destinations: [.koala, .segment])
        #expect(both.messages.map { "\($0.route)/\($0.output.rawValue):\($0.destinations.map(\.rawValue).joined(separator: "+"))" }
                == ["koala-only/track:koala", "segment-only/track:segment", "everywhere/identify:koala+segment",
                    "per-output/track:segment", "per-output/identify:koala+segment"])
        // Segment not configured: the route limited to it sends nothing, and says why.
        let koalaOnly = WebhookRouter(source: source).routing(webhook, destinations: [.koala])
        #expect(koalaOnly.messages.map(\.route) == ["koala-only", "everywhere", "per-output"])
        #expect(koalaOnly.messages.last?.output == .identify)
        #expect(koalaOnly.results.first { $0.route == "segment-only" }?.reason == "matched, but track sends only to segment, not configured here; nothing is sent")

        let typo = errors(text.replacingOccurrences(of: "destinations: [segment]", with: "destinations: [segmnet]"))
        #expect(typo.count == 2)      // the route's and the track's
        #expect(typo.allSatisfy { $0.contains("unknown destination 'segmnet'") && $0.contains("did you mean 'segment'?") })
    }

    /// `person.user_id`: the id Segment-compatible destinations get as userId; an unusable one is left out.
    @Test func personUserIDIsReadAndBounded() throws {
        let table = try load("""
            source: shop
            verify: { scheme: stripe, secrets: [STRIPE_WEBHOOK_SECRET] }
            routes:
              - name: paid
                when: { type: invoice.paid }
                person: { email: body.email, user_id: body.customer }
                track: { event: Payment Succeeded }
            """)
        let source = try #require(table.sources["shop"])
        func route(_ customer: JSONValue) throws -> [KoalaMessage] {
            let json: JSONValue = ["id": "evt_1", "type": "invoice.paid", "email": "ada@acme.io", "customer": customer]
            let body = Array(json.encoded().utf8)
            let webhook = VerifiedWebhook(source: "shop", webhookID: "evt_1", eventType: "invoice.paid", eventTime: Date(), receivedAt: Date(),
                                          headers: [:], body: body, json: try JSONTape.parse(body), secretLabel: "S", rulesVersion: "v")
            return WebhookRouter(source: source).route(webhook)
        }
        #expect(try route("cus_42").first?.identity == KoalaIdentity(email: "ada@acme.io", userID: "cus_42"))
        let bad = try #require(try route("cus\u{0}42").first)
        #expect(bad.identity == KoalaIdentity(email: "ada@acme.io"))
        #expect(bad.droppedFields.map(\.field) == ["person.user_id"])
    }

    @Test func minimalFileUsesSchemeDefaults() throws {
        let table = try load(Self.minimal)
        let source = try #require(table.sources["shop"])
        #expect(source.webhookID.description == "body.id")
        #expect(source.eventType.description == "body.type")
        #expect(source.eventTime?.description == "body.created | unix_seconds")
    }

    @Test func missingSecretDisablesTheSourceWithAWarning() throws {
        let table = try load(Self.minimal, env: [:])
        #expect(table.sources["shop"]?.verifier == nil)
        #expect(table.sources["shop"]?.disabledReason?.contains("set STRIPE_WEBHOOK_SECRET") == true)
        #expect(table.warnings.count == 1)
    }

    @Test func secretFromFile() throws {
        let dir = temporaryDirectory()
        let file = dir + "/secret"
        try "whsec_from_a_file\n".write(toFile: file, atomically: true, encoding: .utf8)
        let table = try load(Self.minimal, env: ["STRIPE_WEBHOOK_SECRET_FILE": file])
        let verifier = try #require(table.sources["shop"]?.verifier as? TimestampedHeaderVerifier)
        #expect(verifier.secrets.first?.key == Array("whsec_from_a_file".utf8))
    }

    /// An empty or guessable HMAC key authenticates anyone who tries it: a secret whose key is under 16 bytes
    /// is refused, naming the setting, whatever its encoding (`whsec_`, `v1,whsec_` and `====` decode to nothing).
    @Test(arguments: [
        ("stripe", "whsec_", "is 6 bytes long"),
        ("stripe", "short-secret", "is 12 bytes long"),
        ("standard-webhooks", "whsec_", "is 0 bytes long"),
        ("standard-webhooks", "v1,whsec_", "is 0 bytes long"),
        ("standard-webhooks", "====", "is 1 byte long"),
        ("standard-webhooks", "whsec_" + Data(repeating: 1, count: 15).base64EncodedString(), "is 15 bytes long"),
        ("standard-webhooks", "whsec_%%%", "is not a valid base64 secret"),
        ("bearer-token", "tok", "is 3 bytes long"),
    ])
    func aSecretUnder16BytesIsRefusedNamingTheSetting(scheme: String, value: String, problem: String) throws {
        let text = Self.minimal.replacingOccurrences(of: "scheme: stripe", with: "scheme: \(scheme)")
        let table = try load(text, env: ["STRIPE_WEBHOOK_SECRET": value])
        #expect(table.sources["shop"]?.verifier == nil, "a short key must not verify anything")
        #expect(table.sources["shop"]?.disabledReason?.contains("STRIPE_WEBHOOK_SECRET is not a usable") == true,
                "\(String(describing: table.sources["shop"]?.disabledReason))")
        #expect(table.secretErrors.count == 1)
        let error = try #require(table.secretErrors.first)
        #expect(error.contains(problem) && error.contains("STRIPE_WEBHOOK_SECRET "), "\(error)")
        #expect(table.secretErrors.first?.hasPrefix("routes/test.yaml: source 'shop': ") == true)
        // 16 bytes is enough.
        let long = scheme == "standard-webhooks" ? "whsec_" + Data(repeating: 1, count: 16).base64EncodedString() : "sixteen-bytes-ok"
        let good = try load(text, env: ["STRIPE_WEBHOOK_SECRET": long])
        #expect(good.sources["shop"]?.verifier != nil && good.secretErrors.isEmpty)
    }

    /// A short previous secret beside a good current one: the source serves with the good one, and the bad
    /// setting is still an error (check fails on it).
    @Test func aShortSecretBesideAGoodOneIsStillAnError() throws {
        let text = Self.minimal.replacingOccurrences(of: "secrets: [STRIPE_WEBHOOK_SECRET]", with: "secrets: [STRIPE_WEBHOOK_SECRET, STRIPE_WEBHOOK_SECRET_PREVIOUS]")
        let table = try load(text, env: ["STRIPE_WEBHOOK_SECRET": "whsec_current_secret", "STRIPE_WEBHOOK_SECRET_PREVIOUS": "whsec_"])
        let verifier = try #require(table.sources["shop"]?.verifier as? TimestampedHeaderVerifier)
        #expect(verifier.secrets.map(\.label) == ["STRIPE_WEBHOOK_SECRET"])
        #expect(table.secretErrors.count == 1 && table.secretErrors[0].contains("STRIPE_WEBHOOK_SECRET_PREVIOUS is set but its key is 6 bytes long"))
    }

    /// The same `_FILE` rule as the service's settings: an unreadable file is said, never taken for "not set".
    @Test func unreadableSecretFileDisablesTheSourceSayingWhy() throws {
        let table = try load(Self.minimal, env: ["STRIPE_WEBHOOK_SECRET_FILE": "/nonexistent/secret"])
        #expect(table.sources["shop"]?.verifier == nil)
        #expect(table.sources["shop"]?.disabledReason == "source 'shop' is disabled: STRIPE_WEBHOOK_SECRET_FILE names '/nonexistent/secret', which cannot be read; mount the secret there or unset STRIPE_WEBHOOK_SECRET_FILE")
    }

    @Test func unknownKeyIsReportedWithPositionAndSuggestion() {
        let text = Self.minimal.replacingOccurrences(of: "    person:", with: "    persn:")
        #expect(errors(text).first == "routes/test.yaml:6:5: unknown key 'persn' in a route; did you mean 'person'? allowed keys: name, description, when, person, track, identify, account, billing, remember, destinations")
    }

    @Test func unknownFilterPointsAtTheFilter() {
        let text = Self.minimal.replacingOccurrences(of: "customer_email }", with: "customer_email | lowr }")
        #expect(errors(text) == ["routes/test.yaml:6:56: in person.email: unknown filter 'lowr'; did you mean 'lower'? filters: cents, count, default, email, email_domain, first, iso8601, join, lower, map, money, number, round, string, timestamp, trim, unix_millis, unix_seconds, upper"])
    }

    @Test func inlineSecretIsRefused() {
        let text = Self.minimal.replacingOccurrences(of: "secrets: [STRIPE_WEBHOOK_SECRET]", with: "secrets: [whsec_abc123]")
        #expect(errors(text) == ["routes/test.yaml:2:37: secrets are referenced by environment variable name, never written inline; put the secret in an environment variable (e.g. SHOP_WEBHOOK_SECRET) and write its name here"])
    }

    @Test func unknownSchemeIsReported() {
        let text = Self.minimal.replacingOccurrences(of: "scheme: stripe", with: "scheme: strpe")
        #expect(errors(text).first?.hasPrefix("routes/test.yaml:2:19: unknown signature scheme 'strpe'; did you mean 'stripe'?") == true)
    }

    @Test func brokenYAMLIsReportedWithPosition() {
        let e = errors("source: shop\nverify: [unclosed\n")
        #expect(e.count == 1)
        #expect(e.first?.hasPrefix("routes/test.yaml:3:1: invalid YAML:") == true)
    }

    @Test func duplicateRouteNames() {
        let text = Self.minimal + """

              - name: paid
                when: { type: invoice.created }
                person: { email: body.x }
                track: { event: X }
            """
        #expect(errors(text) == ["routes/test.yaml:8:5: route name 'paid' is used twice (first at line 4); route names are part of every message id: make each unique within the source"])
    }

    @Test func visitorOutputWithoutPerson() {
        let text = Self.minimal.replacingOccurrences(of: "    person: { email: body.data.object.customer_email }\n", with: "")
        #expect(errors(text) == ["routes/test.yaml:4:5: route 'paid' sends visitor data but has no 'person'; add 'person: { email: … }' so Koala knows whose event or traits these are"])
    }

    @Test func routeWithoutOutputAndMissingKeys() {
        let e = errors("""
            source: shop
            verify: { scheme: stripe, secrets: [STRIPE_WEBHOOK_SECRET] }
            routes:
              - name: nothing
                when: { type: a }
              - when: { type: b }
                track: { event: X }
            """)
        #expect(e.contains("routes/test.yaml:4:5: route 'nothing' has no output; add at least one of 'track', 'identify', 'account' or 'billing' (or remember values for later routes)"))
        #expect(e.contains("routes/test.yaml:6:5: missing 'name'; give the route a unique name, e.g. 'name: invoice-paid'"))
    }

    @Test func badExpressionSyntax() {
        let text = """
            source: shop
            verify: { scheme: stripe, secrets: [STRIPE_WEBHOOK_SECRET] }
            routes:
              - name: paid
                when: { type: invoice.paid }
                person:
                  email: body.data.object.lines[x].email
                track: { event: Invoice Paid }
            """
        #expect(errors(text) == ["routes/test.yaml:7:38: in person.email: expected '==' or '!=' in the selection; select an element with [field == value], e.g. email_addresses[id == body.data.primary_email_address_id]"])
    }

    /// Issue 16's first silent mistake: a mistyped path root used to be sent to Koala as the text itself.
    @Test func textShapedLikeAPathWithAnUnknownRootIsAnError() throws {
        func file(_ value: String, person: String = "body.data.object.customer_email") -> String {
            Self.minimal
                .replacingOccurrences(of: "person: { email: body.data.object.customer_email }", with: "person: { email: \(person) }")
                .replacingOccurrences(of: "track: { event: Invoice Paid }", with: "track: { event: Invoice Paid, properties: { mode: \(value) } }")
        }
        #expect(errors(file("bdy.data.object.mode")) == [
            "routes/test.yaml:7:55: in track.properties.mode: 'bdy.data.object.mode' looks like a path, but 'bdy' is not a path root; did you mean 'body'? a path starts with body, headers, person, webhook; to send this text as-is, write !literal \"bdy.data.object.mode\"",
        ])
        #expect(errors(file("x", person: "bdy.data.object.email")) == [
            "routes/test.yaml:6:22: in person.email: 'bdy.data.object.email' looks like a path, but 'bdy' is not a path root; did you mean 'body'? a path starts with body, headers, person, webhook; to send this text as-is, write !literal \"bdy.data.object.email\"",
        ])
        #expect(errors(file("\"items[0].price\"")).first?.contains("'items' is not a path root; a path starts with") == true)
        #expect(errors(file("'data.object'")).first?.contains("routes/test.yaml:7:56: in track.properties.mode: 'data.object' looks like a path") == true)
        #expect(errors(file("\"coalese(body.a, body.b)\"")) == [
            "routes/test.yaml:7:56: in track.properties.mode: 'coalese(' looks like a call, but 'coalese' is not a function; did you mean 'coalesce'? to send this text as-is, write !literal \"coalese(body.a, body.b)\"",
        ])
        // Text that merely contains dots stays literal; a dotted name meant as text is written !literal.
        for literal in ["v1.2", "2.0.1", "Plan A.1", "'Pro (annual)'", "Dr. Who", "!literal acme.io", "!literal \"bdy.data\""] {
            #expect(errors(file(literal)) == [], "\(literal)")
        }
        let table = try load(file("!literal acme.io"))
        let route = try #require(table.sources["shop"]?.routes.first)
        let body: JSONValue = ["data": ["object": ["customer_email": "ada@acme.io"]]]
        let sent = try #require(route.track?.properties.first)
        #expect(sent.0 == "mode")
        #expect(sent.1.evaluate(in: EvaluationContext(body: body, headers: [:], webhook: [:])) == "acme.io")
    }

    @Test func everyErrorIsReportedNotJustTheFirst() {
        let text = Self.minimal
            .replacingOccurrences(of: "scheme: stripe", with: "scheme: nope")
            .replacingOccurrences(of: "    person:", with: "    persn:")
        #expect(errors(text).count >= 3)
    }

    @Test func duplicateSourceAcrossFiles() {
        do {
            _ = try RuleLoader(environment: env).load(files: [("a.yaml", Self.minimal), ("b.yaml", Self.minimal)])
            Issue.record("expected an error")
        } catch {
            #expect(error.errors.map(\.description) == ["b.yaml:1:1: source 'shop' is already defined in a.yaml; give each source its own name; one file per source"])
        }
    }

    @Test func emptyDirectoryIsAnError() {
        do {
            _ = try RuleLoader(environment: env).load(directory: temporaryDirectory())
            Issue.record("expected an error")
        } catch {
            #expect(error.errors.first?.message == "no rule files (*.yaml) found")
        }
    }
}

extension RuleLoaderTests {
    /// Issue 28: an unknown filter close to a real one by prefix gets a did-you-mean, like a typo does.
    @Test func anUnknownFilterNamesTheRealOneItStartsWith() {
        let text = Self.minimal.replacingOccurrences(of: "track: { event: Invoice Paid }",
                                                     with: "track: { event: Invoice Paid, properties: { currency: body.data.object.currency | uppercase } }")
        let found = errors(text)
        #expect(found.count == 1)
        #expect(found.first?.contains("unknown filter 'uppercase'") == true, "\(found)")
        #expect(found.first?.contains("did you mean 'upper'?") == true, "\(found)")
        #expect(Suggest.closest(to: "uppr", in: Array(Filters.all.keys)) == "upper")
        #expect(Suggest.closest(to: "lowercase", in: Array(Filters.all.keys)) == "lower")
        #expect(Suggest.closest(to: "xyzzy", in: Array(Filters.all.keys)) == nil)
    }
}

extension RuleLoaderTests {
    /// Issue 28: libyaml's wording is said for people, with the likely cause; a key at the wrong indentation says
    /// where it belongs.
    @Test func yamlMistakesAreSaidForPeople() {
        let dedentedLine = errors("""
            source: shop
            verify: { scheme: stripe, secrets: [STRIPE_WEBHOOK_SECRET] }
            routes:
              - name: paid
                when: { type: invoice.paid }
                person:
                  email: body.data.object.customer_email
                 track: { event: Invoice Paid }
            """)
        #expect(dedentedLine.first?.hasPrefix("routes/test.yaml:8:") == true, "\(dedentedLine)")
        #expect(dedentedLine.first?.contains("invalid YAML: ") == true && dedentedLine.first?.contains("likely cause") == true, "\(dedentedLine)")
        #expect(dedentedLine.allSatisfy { !$0.contains("did not find expected key") }, "\(dedentedLine)")

        let dedentedKey = errors("""
            source: shop
            verify: { scheme: stripe, secrets: [STRIPE_WEBHOOK_SECRET] }
            routes:
              - name: paid
                when: { type: invoice.paid }
                person:
                email: body.data.object.customer_email
                track: { event: Invoice Paid }
            """)
        #expect(dedentedKey.contains { $0.contains("unknown key 'email' in a route; 'email' is a key of 'person:': if it belongs there, indent it under that key (YAML nests by indentation)") },
                "\(dedentedKey)")

        let colon = errors("""
            source: shop
            verify: { scheme: stripe, secrets: [STRIPE_WEBHOOK_SECRET] }
            description: Billing: Stripe events
            routes: []
            """)
        #expect(colon.first == "routes/test.yaml:3:21: invalid YAML: a second ': ' on one line; likely cause: a value holding ': ' (quote it: \"a: b\"), or a key written on the line of another", "\(colon)")
    }
}

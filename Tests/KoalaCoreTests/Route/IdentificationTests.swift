import Foundation
import HTTPTypes
import Testing
@testable import KoalaCore
import KoalaTestSupport

/// What a verified body becomes before routing: its id, type and time, and the headers kept with it. These are
/// the second hardening round's findings that live in the core (issue 25: 2, 6, 7, 12).
@Suite("Identifying a webhook")
struct IdentificationTests {
    static let clerkSecret = "whsec_" + Data(repeating: 7, count: 24).base64EncodedString()
    static let environment = ["STRIPE_WEBHOOK_SECRET": testSecret, "CLERK_WEBHOOK_SECRET": clerkSecret,
                              "GITHUB_WEBHOOK_SECRET": "github-secret-0123456789"]

    func table(_ files: [(String, String)]? = nil) throws -> RuleTable {
        if let files { return try RuleLoader(environment: Self.environment).load(files: files) }
        return try RuleLoader(environment: Self.environment).load(directory: repositoryRoot + "/routes")
    }

    func identify(_ source: SourceDefinition, _ body: String, headers: [String: String] = [:]) -> Result<VerifiedWebhook, IdentificationProblem> {
        let bytes = Array(body.utf8)
        return source.webhook(body: bytes, json: try! JSONTape.parse(bytes), headers: fields(headers), receivedAt: Date(timeIntervalSince1970: 1_700_000_000),
                              secretLabel: "S", rulesVersion: "v")
    }

    static let numericID = """
        source: shop
        verify: { scheme: stripe, secrets: [STRIPE_WEBHOOK_SECRET] }
        id: body.id
        type: body.type
        routes:
          - name: paid
            when: { type: paid }
            person: { email: body.email }
            track: { event: Paid }
        """

    // MARK: 6. Numeric ids

    /// `99999999999999999990` and `…991` were both `1e+20`, so the second was a duplicate and dropped; `200`,
    /// `2e2` and `200.0` were one id. An id keeps the text it was written as.
    @Test func aNumericIdKeepsItsTextAsWritten() throws {
        let source = try #require(try table([("routes/shop.yaml", Self.numericID)]).sources["shop"])
        var ids: [String] = []
        for written in ["99999999999999999990", "99999999999999999991", "200", "2e2", "200.0", "2E2", "-0.5", "1e999", "12345678901234567890123"] {
            let webhook = try identify(source, #"{"id":\#(written),"type":"paid","email":"ada@acme-corp.io"}"#).get()
            ids.append(webhook.webhookID)
            #expect(webhook.webhookID == written, "\(written) became \(webhook.webhookID)")
        }
        #expect(Set(ids).count == ids.count)
        // A number inside a template, and as the event type, keeps its text too.
        let templated = try #require(try table([("routes/shop.yaml", Self.numericID.replacingOccurrences(of: "id: body.id", with: "id: \"{{ body.id }}-{{ body.n }}\""))]).sources["shop"])
        #expect(try identify(templated, #"{"id":"a","n":1.10,"type":"paid"}"#).get().webhookID == "a-1.10")
        #expect(try identify(source, #"{"id":"b","type":2.50}"#).get().eventType == "2.50")
        // Integers and strings are as before.
        #expect(try identify(source, #"{"id":42,"type":"paid"}"#).get().webhookID == "42")
        #expect(try identify(source, #"{"id":"evt_1","type":"paid"}"#).get().webhookID == "evt_1")
    }

    // MARK: 12. Event time

    /// README says an unusable event time falls back to the time of receipt with a warning; a time that the
    /// filter could not read (`1e999 | unix_seconds`) gave no warning at all.
    @Test func anUnusableEventTimeIsAlwaysSaid() throws {
        let stripe = try #require(try table().sources["stripe"])
        for (created, said) in [("1e999", "a number too large for any time"), ("10000000000000000", "10000000000000000"),
                                ("\"yesterday\"", "\"yesterday\""), ("{\"a\":1}", "{\"a\":1}")] {
            let webhook = try identify(stripe, #"{"id":"evt_t","type":"invoice.paid","created":\#(created)}"#).get()
            #expect(webhook.eventTime == Date(timeIntervalSince1970: 1_700_000_000), "\(created)")
            let problem = try #require(webhook.eventTimeProblem, "\(created): no warning")
            #expect(problem.contains("body.created | unix_seconds") && problem.contains(said), "\(problem)")
        }
        // Absent or null: the time of receipt, and nothing to say.
        #expect(try identify(stripe, #"{"id":"evt_t","type":"invoice.paid"}"#).get().eventTimeProblem == nil)
        #expect(try identify(stripe, #"{"id":"evt_t","type":"invoice.paid","created":null}"#).get().eventTimeProblem == nil)
        #expect(try identify(stripe, #"{"id":"evt_t","type":"invoice.paid","created":1732871520}"#).get().eventTimeProblem == nil)
    }

    // MARK: 7. Stored headers

    /// Credential-like headers the deny-list missed were stored and shown in the console. Headers are kept by
    /// allow-list: content-type, user-agent, what the scheme signs, its delivery metadata, what the rules read.
    @Test func headersAreKeptByAllowList() throws {
        let stripe = try #require(try table().sources["stripe"])
        var headers = ["Content-Type": "application/json", "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                       "Stripe-Signature": "t=1,v1=00"]
        for name in ["x-api_key", "x-access-key", "x-private-key", "x-signing-key", "x-key", "x-pass", "x-pwd", "x-bearer",
                     "x-forwarded-for", "cf-connecting-ip", "x-amzn-trace-id"] {
            headers[name] = "credential-\(name)"
        }
        let webhook = try identify(stripe, #"{"id":"evt_h","type":"invoice.paid","created":1732871520}"#, headers: headers).get()
        #expect(Set(webhook.headers.keys) == ["content-type", "user-agent"], "\(webhook.headers)")
        // Clerk: the Svix id and timestamp are signed, so they are kept; the signature never is.
        let clerk = try #require(try table().sources["clerk"])
        let svix = try identify(clerk, #"{"type":"user.created","timestamp":1732871520000,"data":{}}"#,
                                headers: ["svix-id": "msg_1", "svix-timestamp": "1732871520", "svix-signature": "v1,abc", "x-key": "k"]).get()
        #expect(Set(svix.headers.keys) == ["svix-id", "svix-timestamp"], "\(svix.headers)")
        // A header a rule reads is kept; keep_headers adds one; a credential listed there is refused.
        let rules = Self.numericID.replacingOccurrences(of: "track: { event: Paid }", with: "track: { event: Paid, properties: { region: headers.x-region } }")
            .replacingOccurrences(of: "type: body.type\n", with: "type: body.type\nkeep_headers: [X-Request-Id]\n")
        let shop = try #require(try table([("routes/shop.yaml", rules)]).sources["shop"])
        let kept = try identify(shop, #"{"id":"a","type":"paid"}"#, headers: ["X-Region": "eu", "X-Request-Id": "r1", "X-Other": "o"]).get()
        #expect(Set(kept.headers.keys) == ["x-region", "x-request-id"], "\(kept.headers)")
        for credential in ["Stripe-Signature", "X-Api-Token", "Cookie"] {
            let refused = rules.replacingOccurrences(of: "[X-Request-Id]", with: "[\(credential)]")
            #expect(throws: RuleTableErrors.self, "\(credential) was accepted in keep_headers") { try self.table([("routes/shop.yaml", refused)]) }
        }
    }

    // MARK: 2. Signed ids

    /// An id read from a header the signature does not cover could be changed by whoever replays a captured
    /// request: refused at load, with the fix.
    @Test func aWebhookIdFromAnUnsignedHeaderIsRefusedAtLoad() throws {
        let github = """
            source: gh
            verify: { scheme: github, secrets: [GITHUB_WEBHOOK_SECRET] }
            id: headers.x-github-delivery
            routes:
              - name: push
                when: { type: push }
                person: { email: body.pusher.email }
                track: { event: Pushed }
            """
        do {
            _ = try table([("routes/gh.yaml", github)])
            Issue.record("an id from an unsigned header was accepted")
        } catch let error as RuleTableErrors {
            #expect(error.errors.map(\.description) == [
                "routes/gh.yaml:3:5: the webhook id reads header 'x-github-delivery', which the github signature does not cover: a captured webhook resent with another x-github-delivery would pass dedupe as a new one and count twice in Koala; take the id from what is signed: the body (e.g. 'id: body.id') or its digest ('id: webhook.body_sha256')",
            ])
        }
        // The scheme's own default is the body's digest, so two deliveries of one body are one webhook.
        let source = try #require(try table([("routes/gh.yaml", github.replacingOccurrences(of: "id: headers.x-github-delivery\n", with: ""))]).sources["gh"])
        let body = #"{"pusher":{"email":"ada@acme-corp.io"}}"#
        let first = try identify(source, body, headers: ["X-GitHub-Delivery": "d1", "X-GitHub-Event": "push"]).get()
        let replay = try identify(source, body, headers: ["X-GitHub-Delivery": "d2", "X-GitHub-Event": "push"]).get()
        #expect(first.webhookID == replay.webhookID && first.webhookID == Hex.encode(Crypto.digest(.sha256, Array(body.utf8))))
        #expect(first.headers["x-github-delivery"] == "d1", "the delivery id is still kept as metadata")
        // A signed header is fine (Standard Webhooks' ids), and so is every scheme's default id.
        _ = try table([("routes/c.yaml", github.replacingOccurrences(of: "scheme: github, secrets: [GITHUB_WEBHOOK_SECRET]", with: "scheme: standard-webhooks, secrets: [CLERK_WEBHOOK_SECRET]")
            .replacingOccurrences(of: "headers.x-github-delivery", with: "coalesce(headers.webhook-id, headers.svix-id)"))])
        for scheme in Schemes.all.keys.sorted() where scheme != "hmac" && scheme != "basic-auth" {
            let file = github.replacingOccurrences(of: "scheme: github", with: "scheme: \(scheme)").replacingOccurrences(of: "id: headers.x-github-delivery\n", with: "")
            #expect(throws: Never.self, "\(scheme)'s default id") { _ = try self.table([("routes/gh.yaml", file)]) }
        }
    }

    /// Standard Webhooks: a captured request resent with an extra `webhook-id`, or with the `svix-*` values
    /// copied into `webhook-*` and `svix-id` changed, was accepted as new. Where both spellings are sent they
    /// must agree.
    @Test func standardWebhooksRefusesDisagreeingSpellings() throws {
        let key = try #require(StandardWebhooksVerifier.decodeSecret(Self.clerkSecret))
        let verifier = StandardWebhooksVerifier(secrets: [WebhookSecret(label: "CLERK_WEBHOOK_SECRET", key: key)])
        let body = Array(#"{"type":"user.created"}"#.utf8)
        let now = Date()
        let ts = Int64(now.timeIntervalSince1970)
        let signature = StandardWebhooksVerifier.sign(id: "msg_1", timestamp: ts, body: body, key: key)
        let svix = ["svix-id": "msg_1", "svix-timestamp": String(ts), "svix-signature": signature]
        #expect(verifier.verify(headers: fields(svix), body: body, now: now) == .success(Verification(secretLabel: "CLERK_WEBHOOK_SECRET")))
        let extraID = svix.merging(["webhook-id": "msg_2"]) { $1 }
        #expect(verifier.verify(headers: fields(extraID), body: body, now: now) == .failure(.conflictingHeaders("webhook-id", "svix-id")))
        let copied = ["webhook-id": "msg_1", "webhook-timestamp": String(ts), "webhook-signature": signature,
                      "svix-id": "msg_other", "svix-timestamp": String(ts), "svix-signature": signature]
        #expect(verifier.verify(headers: fields(copied), body: body, now: now) == .failure(.conflictingHeaders("webhook-id", "svix-id")))
        let otherTime = svix.merging(["webhook-timestamp": String(ts - 100)]) { $1 }
        #expect(verifier.verify(headers: fields(otherTime), body: body, now: now) == .failure(.conflictingHeaders("webhook-timestamp", "svix-timestamp")))
        #expect(VerificationFailure.conflictingHeaders("webhook-id", "svix-id").reason == "headers webhook-id and svix-id disagree")
        // Both spellings with the same values (a relay that adds webhook-*): accepted.
        let both = svix.merging(["webhook-id": "msg_1", "webhook-timestamp": String(ts), "webhook-signature": signature]) { $1 }
        #expect(verifier.verify(headers: fields(both), body: body, now: now) == .success(Verification(secretLabel: "CLERK_WEBHOOK_SECRET")))
    }

    /// The domain fast path (text already in normal form, returned as it is) agrees with the general path on
    /// edge cases and on 20,000 random strings over the characters that decide it.
    @Test func theDomainFastPathAgreesWithTheGeneralPath() {
        let label63 = String(repeating: "a", count: 63), label64 = String(repeating: "a", count: 64)
        var cases = ["acme.io", "a.b", "sub.acme.co.uk", "xn--p1ai.xn--p1ai", "acme.xn--p1ai", "a-b.io", "-a.io", "a-.io", "a..io",
                     ".io", "io", "acme.io.", "acme.c0m", "acme.io-", "ACME.io", "acme.IO", "ac_me.io", "a.b-", "1.2.3.4",
                     "\(label63).io", "\(label64).io", String(repeating: "a.", count: 127) + "io", String(repeating: "a.", count: 128) + "io",
                     "ümlaut.de", "acme。io"]
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("ab0-.xnA")
        for _ in 0..<20_000 {
            cases.append(String((0..<Int.random(in: 1...12, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }))
        }
        for text in cases {
            #expect(Identity.normalizeDomain(text) == Identity.normalizeDomainInGeneral(text), "\(text)")
            if Identity.isNormalASCIIDomain(text) { #expect(Identity.normalizeDomainInGeneral(text) == text, "\(text)") }
        }
        #expect(Identity.isNormalASCIIDomain("acme.io") && !Identity.isNormalASCIIDomain("ACME.io"))
    }

    /// The parser reads members and items through one stack per parse: nesting, repeated keys (the last wins) and
    /// empty containers come out as before.
    @Test func theParserBuildsNestedContainersFromItsStacks() throws {
        let value = try JSONValue.parse(Array(#"{"a":1,"b":{"c":[1,[2,3],{"d":[]}],"e":{}},"a":2,"f":[{"g":"h"},{"g":"i","g":"j"}]}"#.utf8))
        #expect(value == ["a": 2, "b": ["c": [1, [2, 3], ["d": []]], "e": [:]], "f": [["g": "h"], ["g": "j"]]])
        #expect(throws: (any Error).self) { try JSONValue.parse(Array(#"{"a":[1,2}"#.utf8)) }
    }
}

import Foundation
import Testing
@testable import KoalaCore
@testable import KoalaRuleTools
import KoalaTestSupport

/// Issue 16, part 2: `check` routes every sample through the rules and points at the rule for what the
/// samples show is wrong.
@Suite("check with samples")
struct SampleCheckTests {
    static let rules = """
        source: shop
        verify: { scheme: stripe, secrets: [S] }
        routes:
          - name: checkout
            when: { type: checkout.session.completed }
            person: { email: body.data.object.amount_total }
            track:
              event: Checkout Completed
              properties:
                mode: body.data.objct.mode
                amount: body.data.object.currency | cents
                plan: coalesce(body.data.object.plan, body.data.object.metadata.plan)
          - name: checkout-again
            when: { type: checkout.session.*, where: body.data.object.mode == subscription }
            person: { email: body.data.object.customer_details.email }
            track: { event: Checkout Completed }
          - name: refund
            when: { type: charge.refunded }
            person: { email: body.data.object.receipt_email }
            track: { event: Refund Issued }
          - name: expired
            when: { type: checkout.session.expired, where: body.data.object.amount_total > 0 }
            person: { email: body.data.object.customer_email }
            track: { event: Checkout Abandoned }
        """

    /// `rules` as shop.yaml and `samples` under samples/shop, checked.
    func check(samples: [String: String], rules: String = Self.rules) throws -> (report: SampleCheck.Report, dir: String) {
        let dir = temporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir + "/samples/shop", withIntermediateDirectories: true)
        try rules.write(toFile: dir + "/shop.yaml", atomically: true, encoding: .utf8)
        for (name, body) in samples { try body.write(toFile: dir + "/samples/shop/" + name, atomically: true, encoding: .utf8) }
        let table = try RuleLoader(environment: ["S": "x"]).load(directory: dir)
        return (SampleCheck(table: table).run(samplesDirectory: dir + "/samples", testsDirectory: nil), dir)
    }

    @Test func eachMistakeIsFoundAtTheRule() throws {
        let (report, dir) = try check(samples: [
            "checkout.json": #"{"id":"evt_1","type":"checkout.session.completed","created":1732871520,"data":{"object":{"mode":"subscription","amount_total":129900,"currency":"usd","metadata":{"plan":"pro"},"customer_details":{"email":"ada@acme.io"}}}}"#,
            "expired.json": #"{"id":"evt_2","type":"checkout.session.expired","created":1732871520,"data":{"object":{"amount_total":0,"customer_email":"ada@acme.io"}}}"#,
            "broken.json": #"{"type":"checkout.session.completed","created":1}"#,
        ])
        let lines = report.findings.map { $0.description.replacingOccurrences(of: dir, with: "") }
        #expect(report.hasErrors)
        #expect(lines == [
            "error: /samples/shop/broken.json: source 'shop' cannot identify this sample: webhook id not found at body.id; check the source's id, type and time paths (\(dir)/shop.yaml) against the sample",
            "error: /shop.yaml:6:22: person.email ← body.data.object.amount_total is 129900 (a number) in \(dir)/samples/shop/checkout.json, not text: the message would never be sent; text fields holding an email in that sample: body.data.object.customer_details.email",
            "error: /shop.yaml:11:17: in track.properties.amount: filter 'cents' takes a number (or numeric text), but body.data.object.currency is \"usd\" (text) in \(dir)/samples/shop/checkout.json: the value would be left out; check the path, or convert the value first (e.g. '| number' for numeric text)",
            "warning: /shop.yaml:13:5: routes 'checkout' and 'checkout-again' both send 'Checkout Completed' for \(dir)/samples/shop/checkout.json (type checkout.session.completed); Koala would count it twice: narrow one route's 'when' (type or where) so only one takes this webhook",
            "warning: /shop.yaml:10:15: in track.properties.mode: body.data.objct.mode resolves in none of the 1 sample(s) of 'shop' that route 'checkout' takes; did you mean 'object'? (body.data.objct is not in the samples; body.data has object)",
            "warning: /shop.yaml:17:5: no sample exercises route 'refund': none has type charge.refunded; add one to samples/shop/ (or a rule test with its webhook)",
            "warning: /shop.yaml:21:5: no sample exercises route 'expired': samples of its type(s) exist, but its 'where' never held (in \(dir)/samples/shop/expired.json: body.data.object.amount_total > 0 is false (body.data.object.amount_total is 0)); add a sample (or a rule test) where it should match, or check the condition with 'koala-router simulate'",
        ].map { $0.replacingOccurrences(of: dir, with: "") })
        #expect(report.samples == ["shop": 3])
    }

    @Test func coalesceAlternativesNeedOnlyOneToResolve() throws {
        let (report, _) = try check(samples: [
            "checkout.json": #"{"id":"evt_1","type":"checkout.session.completed","created":1732871520,"data":{"object":{"mode":"subscription","amount_total":129900,"currency":"usd","metadata":{"plan":"pro"},"customer_details":{"email":"ada@acme.io"}}}}"#,
        ])
        #expect(!report.findings.contains { $0.message.contains("track.properties.plan") })
    }

    /// The shipped rules, their samples and their tests' webhooks: nothing to report.
    @Test func theShippedRulesAreCleanAgainstTheirSamples() throws {
        let table = try RuleLoader(environment: [:]).load(directory: repositoryRoot + "/routes")
        let report = SampleCheck(table: table).run(samplesDirectory: repositoryRoot + "/routes/samples", testsDirectory: repositoryRoot + "/routes/tests")
        #expect(report.problems.isEmpty)
        #expect(report.findings.map(\.description) == [])
        #expect(report.samples.keys.sorted() == ["chargebee", "clerk", "lemonsqueezy", "paddle", "recurly", "stripe", "workos"])
    }
}

extension SampleCheckTests {
    /// Issue 28: a typo deep inside a valid path in an identity field is an error (exit 1), not a warning: every
    /// message of the route would be dead-lettered.
    @Test func anIdentityPathTypoIsAnError() throws {
        let (report, dir) = try check(samples: [
            "paid.json": #"{"id":"evt_1","type":"invoice.paid","created":1732871520,"data":{"object":{"customer_email":"ada@acme.io","amount_paid":100}}}"#,
        ], rules: """
            source: shop
            verify: { scheme: stripe, secrets: [S] }
            routes:
              - name: paid
                when: { type: invoice.paid }
                person: { email: body.data.object.custmer_email }
                track: { event: Payment Succeeded }
            """)
        #expect(report.hasErrors)
        let lines = report.findings.map { $0.description.replacingOccurrences(of: dir, with: "") }
        #expect(lines.contains("error: /shop.yaml:6:22: in person.email: body.data.object.custmer_email resolves in none of the 1 sample(s) of 'shop' that route 'paid' takes; did you mean 'customer_email'? (body.data.object.custmer_email is not in the samples; body.data.object has amount_paid, customer_email); without it every message of this route is dead-lettered (identity missing)"),
                "\(lines)")
    }
}

extension SampleCheckTests {
    /// Issue 28: a route whose type no sample has, close to a type the samples have, gets a did-you-mean.
    @Test func aTypeTypoGetsADidYouMean() throws {
        let (report, dir) = try check(samples: [
            "tax.json": #"{"id":"evt_1","type":"customer.tax_id.created","created":1732871520,"data":{"object":{"email":"ada@acme.io"}}}"#,
        ], rules: """
            source: shop
            verify: { scheme: stripe, secrets: [S] }
            routes:
              - name: tax-id
                when: { type: customer.taxid.created }
                person: { email: body.data.object.email }
                track: { event: Tax ID Added }
            """)
        let lines = report.findings.map { $0.description.replacingOccurrences(of: dir, with: "") }
        #expect(lines == ["warning: /shop.yaml:4:5: no sample exercises route 'tax-id': none has type customer.taxid.created; 'customer.taxid.created': did you mean 'customer.tax_id.created'? add one to samples/shop/ (or a rule test with its webhook)"],
                "\(lines)")
    }
}

extension SampleCheckTests {
    /// Issue 28: a property one route sends as text while the others send a number is warned about, at that route.
    @Test func aPropertySentAsTwoTypesIsWarnedAbout() throws {
        let (report, dir) = try check(samples: [
            "paid.json": #"{"id":"evt_1","type":"invoice.paid","created":1732871520,"data":{"object":{"customer_email":"ada@acme.io","amount_paid":4900}}}"#,
            "refunded.json": #"{"id":"evt_2","type":"charge.refunded","created":1732871520,"data":{"object":{"receipt_email":"ada@acme.io","amount_text":"49.00"}}}"#,
        ], rules: """
            source: shop
            verify: { scheme: stripe, secrets: [S] }
            routes:
              - name: paid
                when: { type: invoice.paid }
                person: { email: body.data.object.customer_email }
                track: { event: Payment Succeeded, properties: { amount: body.data.object.amount_paid | cents } }
              - name: refunded
                when: { type: charge.refunded }
                person: { email: body.data.object.receipt_email }
                track: { event: Refund Issued, properties: { amount: body.data.object.amount_text } }
            """)
        let lines = report.findings.map { $0.description.replacingOccurrences(of: dir, with: "") }
        #expect(lines == ["warning: /shop.yaml:8:5: route 'refunded' sends property 'amount' as text (\"49.00\" (text) for /samples/shop/refunded.json), while route 'paid' sends it as a number; Koala keeps one type per property: convert it (e.g. '| number' for numeric text) or give it another name"],
                "\(lines)")
    }
}

extension SampleCheckTests {
    /// Issue 28: a 'where' that holds for every payload, or for none, is warned about with the part and the values.
    @Test func aConditionThatDoesNotDependOnThePayloadIsWarnedAbout() throws {
        let (report, dir) = try check(samples: [
            "domain.json": #"{"id":"evt_1","type":"organizationDomain.updated","created":1732871520,"data":{"name":"acme.io","status":"verified","plan":"pro"}}"#,
        ], rules: """
            source: shop
            verify: { scheme: stripe, secrets: [S] }
            routes:
              - name: domain
                when: { type: organizationDomain.updated, where: body.data.status != verified or body.data.status != unverified }
                account: { domain: body.data.name }
              - name: plan
                when: { type: organizationDomain.updated, where: body.data.plan == pro and body.data.plan == team }
                account: { domain: body.data.name, traits: { plan: body.data.plan } }
            """)
        let lines = report.findings.map { $0.description.replacingOccurrences(of: dir, with: "") }
        #expect(lines.contains("warning: /shop.yaml:4:5: in route 'domain', when.where: 'body.data.status != verified or body.data.status != unverified' is always true: whatever body.data.status is, it differs from one of them; did you mean 'and' (or 'body.data.status not in [verified, unverified]')?; a 'where' that does not depend on the payload lets every webhook of the type through, or none"),
                "\(lines)")
        #expect(lines.contains { $0.contains("in route 'plan', when.where: 'body.data.plan == pro and body.data.plan == team' is never true: body.data.plan cannot be both; did you mean 'or'") },
                "\(lines)")
        #expect(report.hasWarnings)
    }
}

import Foundation
import Testing
@testable import KoalaCore
@testable import KoalaRuleTools
import KoalaTestSupport

@Suite("Rule tests (koala-router test)")
struct RuleTestRunnerTests {
    func table() throws -> RuleTable {
        try RuleLoader(environment: [:]).load(directory: repositoryRoot + "/routes")
    }

    @Test func everyShippedRouteIsTestedAndPasses() throws {
        let report = RuleTestRunner(table: try table()).run(directory: repositoryRoot + "/routes/tests")
        #expect(report.errors.isEmpty, "\(report.errors)")
        for outcome in report.outcomes where !outcome.passed {
            Issue.record("\(outcome.file):\(outcome.line) \(outcome.name): \(outcome.failures.joined(separator: "; "))")
        }
        #expect(report.outcomes.count >= 20)
        #expect(report.untested.isEmpty, "routes without a test: \(report.untested)")
    }

    func run(_ text: String) throws -> RuleTestRunner.Report {
        let dir = temporaryDirectory()
        try text.write(toFile: dir + "/t.yaml", atomically: true, encoding: .utf8)
        return RuleTestRunner(table: try table()).run(directory: dir)
    }

    @Test func aWrongExpectationFailsWithAPreciseDiff() throws {
        let report = try run("""
            source: stripe
            tests:
              - name: wrong amount and missing output
                body: { id: e1, type: invoice.paid, created: 0, data: { object: { customer_email: a@acme.io, amount_paid: 4950, currency: usd } } }
                expect:
                  - route: payment-succeeded
                    output: track
                    email: b@acme.io
                    properties: { amount: 49, currency: USD }
                  - route: payment-succeeded
                    output: identify
            """)
        let outcome = try #require(report.outcomes.first)
        #expect(!outcome.passed)
        #expect(outcome.failures == [
            "expected 2 message(s), got 1: payment-succeeded/track",
            #"message 1 (payment-succeeded/track): email: expected "b@acme.io", got "a@acme.io""#,
            "message 1 (payment-succeeded/track): properties.amount: expected 49, got 49.5",
            #"message 1 (payment-succeeded/track): properties.billing_provider: expected nothing, got "stripe""#,
        ])
    }

    /// Issue 16, part 3: an identity that could not be read is named in the diff, not just "got nothing".
    @Test func aMessageThatWouldNotBeSentSaysWhyInTheDiff() throws {
        let report = try run("""
            source: stripe
            tests:
              - name: email is a number
                body: { id: e1, type: invoice.paid, created: 0, data: { object: { customer_email: 129900, amount_paid: 4950, currency: usd } } }
                expect:
                  - route: payment-succeeded
                    output: track
                    email: a@acme.io
            """)
        #expect(report.outcomes.first?.failures == [
            "message 1 (payment-succeeded/track): not sent: person.email ← body.data.object.customer_email: 129900 (a number), not an email address",
            #"message 1 (payment-succeeded/track): email: expected "a@acme.io", got nothing"#,
        ])
    }

    @Test func noOutputExpectedButSomeProduced() throws {
        let report = try run("""
            source: stripe
            tests:
              - name: should be ignored
                body: { id: e1, type: invoice.paid, created: 0, data: { object: { customer_email: a@acme.io, amount_paid: 100, currency: usd } } }
                expect: []
            """)
        #expect(report.outcomes.first?.failures.first == "expected 0 message(s), got 1: payment-succeeded/track")
    }

    @Test func mistakesInTestFilesArePositioned() throws {
        let report = try run("""
            source: stripe
            tests:
              - name: typo
                webhok: x.json
                expect: []
            """)
        #expect(report.errors.map(\.description).contains("\(temporaryDirectoryPrefix(report))t.yaml:4:5: unknown key 'webhok' in a test; did you mean 'webhook'? allowed keys: name, after, webhook, body, headers, memory, expect"))
        let unknown = try run("source: nope\ntests: []\n")
        #expect(unknown.errors.first?.message == "no rule file declares source 'nope'")
    }

    func temporaryDirectoryPrefix(_ report: RuleTestRunner.Report) -> String {
        let file = report.errors.first?.file ?? ""
        return String(file.dropLast("t.yaml".count))
    }
}

extension RuleTestRunnerTests {
    /// Issue 28: an expectation without `email:` (or `domain:`) no longer passes whoever the message goes to: a field
    /// left out means none is expected, and the diff says what to write.
    @Test func anExpectationWithoutAnIdentityStillComparesIt() throws {
        let report = try run("""
            source: stripe
            tests:
              - name: who is it for?
                body: { id: e1, type: invoice.paid, created: 0, data: { object: { customer_email: a@acme.io, amount_paid: 4900, currency: usd } } }
                expect:
                  - route: payment-succeeded
                    output: track
                    event: Payment Succeeded
            """)
        let failures = try #require(report.outcomes.first?.failures)
        #expect(failures.contains(#"message 1 (payment-succeeded/track): email: expected nothing, got "a@acme.io" (a field left out means none is expected: write `email: a@acme.io`)"#),
                "\(failures)")
    }
}

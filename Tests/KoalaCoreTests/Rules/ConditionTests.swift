import Foundation
import Testing
@testable import KoalaCore
import KoalaTestSupport

@Suite("Conditions")
struct ConditionTests {
    let context = EvaluationContext(
        body: [
            "livemode": true,
            "data": ["object": [
                "status": "trialing", "amount": 4900, "big": .int(9_007_199_254_740_993), "plan": "pro_monthly",
                "email": "ada@acme.io", "null_field": nil, "name": "Zoë", "cancel_at_period_end": false,
                "created": "2024-03-01T00:00:00Z",
            ]],
        ],
        headers: ["x-event-name": "order_created"],
        webhook: [:]
    )

    func holds(_ text: String) throws -> Bool {
        var parser = try ExpressionParser(text)
        return try parser.parseCompleteCondition().evaluate(in: context)
    }

    func why(_ text: String) throws -> String? {
        var parser = try ExpressionParser(text)
        return try parser.parseCompleteCondition().explain(in: context)
    }

    @Test func comparisons() throws {
        #expect(try holds("body.data.object.status == trialing"))
        #expect(try holds("body.data.object.status == 'trialing'"))
        #expect(try holds("body.data.object.status != active"))
        #expect(try holds("body.data.object.amount > 4000"))
        #expect(try holds("body.data.object.amount >= 4900"))
        #expect(try !holds("body.data.object.amount < 4900"))
        #expect(try holds("body.data.object.amount <= 4900"))
        #expect(try holds("body.data.object.amount | cents == 49"))
        #expect(try holds("body.data.object.big > 9007199254740992"))
        #expect(try holds("body.data.object.created < '2024-04-01T00:00:00Z'"))
        #expect(try !holds("body.data.object.missing > 3"))
        #expect(try !holds("body.data.object.status > 3"))
        #expect(try holds("body.livemode == true"))
        #expect(try holds("body.data.object.name == 'Zoë'"))
        #expect(try holds("headers.X-Event-Name == order_created"))
    }

    @Test func membershipPresenceAndPatterns() throws {
        #expect(try holds("body.data.object.status in [active, trialing]"))
        #expect(try !holds("body.data.object.status in [active, 'past_due']"))
        #expect(try holds("body.data.object.status not in [canceled, unpaid]"))
        #expect(try holds("body.data.object.amount in [4900, 9900]"))
        #expect(try holds("body.data.object.email exists"))
        #expect(try holds("body.data.object.null_field missing"))
        #expect(try holds("body.data.object.nothing missing"))
        #expect(try !holds("body.data.object.null_field exists"))
        #expect(try holds("body.data.object.plan matches '^pro_'"))
        #expect(try !holds("body.data.object.plan matches '^team_'"))
        #expect(try holds("body.livemode"))
        #expect(try !holds("body.data.object.cancel_at_period_end"))
    }

    @Test func booleanLogic() throws {
        #expect(try holds("body.livemode and body.data.object.status == trialing"))
        #expect(try !holds("body.livemode and body.data.object.status == active"))
        #expect(try holds("body.data.object.status == active or body.data.object.amount > 100"))
        #expect(try holds("not body.data.object.cancel_at_period_end"))
        #expect(try holds("not (body.data.object.status == active or body.data.object.amount < 100)"))
    }

    @Test func explanationsNameTheFailingPart() throws {
        #expect(try why("body.data.object.status in [active]") == #"body.data.object.status in [active] is false (body.data.object.status is "trialing")"#)
        #expect(try why("body.livemode and body.data.object.email missing") == #"body.data.object.email is present ("ada@acme.io")"#)
        #expect(try why("body.data.object.status == trialing") == nil)
    }

    @Test func parseErrors() {
        func failure(_ text: String) -> ExpressionParser.Failure? {
            do {
                var parser = try ExpressionParser(text)
                _ = try parser.parseCompleteCondition()
                return nil
            } catch {
                return error
            }
        }
        #expect(failure("body.a in active")?.message == "'in' needs a list")
        #expect(failure("body.a matches '['")?.message == "invalid regular expression '['")
        #expect(failure("(body.a == 1")?.message == "missing ')'")
        #expect(failure("body.a == 1 body.b")?.offset == 12)
        // Issue 16: '=' for '==' and '&&' for 'and' say what was meant.
        let equals = failure("body.data.object.status = active")
        #expect(equals?.message == "'=' is not a comparison")
        #expect(equals?.hint.contains("did you mean '=='?") == true)
        #expect(equals?.offset == 24)
        #expect(failure("body.a && body.b")?.hint.contains("'and'") == true)
    }

    @Test func yamlForms() throws {
        let table = try RuleLoader(environment: ["S": "x"]).load(files: [("t.yaml", """
            source: shop
            verify: { scheme: stripe, secrets: [S] }
            routes:
              - name: text
                when:
                  type: customer.subscription.*
                  where: body.data.object.status in [active, trialing] and body.livemode
                person: { email: body.email }
                track: { event: A }
              - name: list
                when:
                  type: "*"
                  where:
                    - body.livemode
                    - any: [body.data.object.status == active, body.data.object.amount > 100]
                    - not: body.data.object.cancel_at_period_end
                person: { email: body.email }
                track: { event: B }
            """)])
        let routes = try #require(table.sources["shop"]?.routes)
        #expect(routes[0].condition?.evaluate(in: context) == true)
        #expect(routes[1].condition?.evaluate(in: context) == true)
    }

    @Test func yamlConditionErrorsHavePositions() {
        do {
            _ = try RuleLoader(environment: ["S": "x"]).load(files: [("t.yaml", """
                source: shop
                verify: { scheme: stripe, secrets: [S] }
                routes:
                  - name: a
                    when:
                      type: x
                      where: body.status in active
                    person: { email: body.email }
                    track: { event: A }
                """)])
            Issue.record("expected an error")
        } catch {
            #expect(error.errors.map(\.description) == ["t.yaml:7:29: in when.where: 'in' needs a list; write e.g. in [active, trialing]"])
        }
    }
}

import Foundation
import Testing
@testable import KoalaCore
import KoalaTestSupport

/// Issue 14, part 2: amounts in the currency's real minor units, checked the way a revenue analyst would.
@Suite("Money in every currency")
struct MoneyTests {
    func major(_ minor: JSONValue?, _ currency: String?, _ rules: Money.Rules = .iso4217) -> JSONValue? {
        Money.major(minor, currency: currency, rules: rules)
    }

    @Test func twoDecimalCurrencies() {
        #expect(major(4999, "USD") == .double(49.99))
        #expect(major(4900, "eur") == .int(49))
        #expect(major(5, "gbp") == .double(0.05))
        #expect(major(-1250, "USD") == .double(-12.5))
        #expect(major(0, "USD") == .int(0))
    }

    @Test func zeroDecimalCurrenciesAreNotDivided() {
        for code in ["JPY", "KRW", "VND", "CLP", "XOF", "BIF", "PYG"] {
            #expect(major(4900, code) == .int(4900), "\(code)")
            #expect(major(4900, code, .stripe) == .int(4900), "\(code) (Stripe)")
        }
    }

    @Test func threeDecimalCurrencies() {
        for code in ["BHD", "JOD", "KWD", "OMR", "TND"] {
            #expect(major(12345, code) == .double(12.345), "\(code)")
            #expect(major(12000, code, .stripe) == .int(12), "\(code) (Stripe)")
        }
        #expect(major(1, "KWD") == .double(0.001))
        #expect(major(12345, "IQD") == .double(12.345))
    }

    /// Where Stripe's API differs from ISO 4217: ISK, HUF and TWD keep two decimals; MGA has none.
    @Test func stripesOwnList() {
        #expect(major(990000, "ISK", .stripe) == .int(9900))
        #expect(major(9900, "ISK") == .int(9900))
        #expect(major(150000, "HUF", .stripe) == .int(1500))
        #expect(major(30000, "TWD", .stripe) == .int(300))
        #expect(major(5000, "MGA", .stripe) == .int(5000))
        #expect(major(5000, "MGA") == .int(50))
    }

    /// Paddle sends amounts as text in the lowest denomination; Stripe's `unit_amount_decimal` carries
    /// fractions of a cent. The decimal point is moved in the text, so nothing is rounded on the way.
    @Test func amountsAsTextAreExact() {
        #expect(major("9900", "USD") == .int(99))
        #expect(major("4900", "JPY") == .int(4900))
        #expect(major("1234.5678", "USD", .stripe) == .double(12.345678))
        #expect(major("0.5", "USD") == .double(0.005))
        #expect(major("19", "USD") == .double(0.19))
        #expect(major(.double(4999), "USD") == .double(49.99))
        #expect(major("123456789012345678", "USD") == .double(1234567890123456.78))
    }

    /// Never a guess: no currency, a bad code or a value that is not an amount leaves the property out.
    @Test func missingOrBadInputIsMissing() {
        #expect(major(4999, nil) == nil)
        #expect(major(4999, "") == nil)
        #expect(major(4999, "dollars") == nil)
        #expect(major(4999, "U$D") == nil)
        #expect(major("49,99", "USD") == nil)
        #expect(major("1e3", "USD") == nil)
        #expect(major(.string(""), "USD") == nil)
        #expect(major(.double(.infinity), "USD") == nil)
        #expect(major(.double(0.5), "USD") == nil)
        #expect(major(.bool(true), "USD") == nil)
        #expect(major(nil, "USD") == nil)
        #expect(major(.string(String(repeating: "9", count: 60)), "USD") == nil)
    }

    @Test func theFilterReadsTheCurrencyFromThePayload() throws {
        let body = try JSONValue.parse(Array(#"{"amount":4900,"currency":"jpy","usd":{"amount":4999,"currency":"usd"}}"#.utf8))
        let context = EvaluationContext(body: body, headers: [:], webhook: .null)
        func value(_ text: String) throws -> JSONValue? {
            var parser = try ExpressionParser(text)
            return try parser.parseComplete().evaluate(in: context)
        }
        #expect(try value("body.amount | money(body.currency)") == .int(4900))
        #expect(try value("body.usd.amount | money(body.usd.currency, 'stripe')") == .double(49.99))
        #expect(try value("body.amount | money(body.nothing)") == nil)
        #expect(throws: ExpressionParser.Failure.self) { try value("body.amount | money(body.currency, 'paypal')") }
    }

    @Test func centsIsAWarningInARuleFile() throws {
        let rules = """
            source: shop
            verify: { scheme: stripe, secrets: [STRIPE_WEBHOOK_SECRET] }
            routes:
              - name: paid
                when: { type: invoice.paid }
                person: { email: body.data.object.customer_email }
                track: { event: Invoice Paid, properties: { amount: body.data.object.amount_paid | cents } }
            """
        let table = try RuleLoader(environment: ["STRIPE_WEBHOOK_SECRET": testSecret]).load(files: [("routes/shop.yaml", rules)])
        #expect(table.warnings.contains { $0.hasPrefix("routes/shop.yaml:7:") && $0.contains("'cents' divides by 100 whatever the currency") })
    }

    @Test func mapRenamesListedValuesAndPassesOthersThrough() throws {
        let context = EvaluationContext(body: ["status": "on_trial", "other": "active", "n": 3], headers: [:], webhook: .null)
        func value(_ text: String) throws -> JSONValue? {
            var parser = try ExpressionParser(text)
            return try parser.parseComplete().evaluate(in: context)
        }
        #expect(try value("body.status | map('on_trial=trialing', 'expired=churned')") == "trialing")
        #expect(try value("body.other | map('on_trial=trialing')") == "active")
        #expect(try value("body.missing | map('on_trial=trialing')") == nil)
        #expect(try value("body.n | map('3=three')") == "three")
        #expect(throws: ExpressionParser.Failure.self) { try value("body.status | map(body.other)") }
        #expect(throws: ExpressionParser.Failure.self) { try value("body.status | map('no-equals-sign')") }
    }
}

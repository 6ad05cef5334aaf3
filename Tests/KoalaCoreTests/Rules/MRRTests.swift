import Foundation
import Testing
@testable import KoalaCore
import KoalaTestSupport

/// Issue 14, part 3: MRR computed from the subscription, with worked examples a revenue analyst can check.
@Suite("MRR from subscriptions")
struct MRRTests {
    func item(_ unit: Int64, quantity: Int64 = 1, interval: String = "month", count: Int64 = 1, extra: [String: JSONValue] = [:]) -> JSONValue {
        var price: [String: JSONValue] = ["unit_amount": .int(unit), "unit_amount_decimal": .string(String(unit)), "billing_scheme": "per_unit",
                                          "recurring": ["interval": .string(interval), "interval_count": .int(count), "usage_type": "licensed"]]
        for (key, value) in extra { price[key] = value }
        return ["object": "subscription_item", "quantity": .int(quantity), "price": .object(price)]
    }

    func stripe(_ items: [JSONValue], currency: String = "usd", discount: JSONValue = .null, discounts: [JSONValue] = []) -> JSONValue {
        ["object": "subscription", "currency": .string(currency), "items": ["object": "list", "data": .array(items)],
         "discount": discount, "discounts": .array(discounts)]
    }

    func mrr(_ subscription: JSONValue) -> JSONValue? { try? MRR.stripe(subscription) }

    @Test func monthly() {
        #expect(mrr(stripe([item(4900)])) == .int(49))
        #expect(mrr(stripe([item(1999, quantity: 3)])) == .double(59.97))
    }

    /// The example from the issue: 1,200.00 a year for each of 10 seats is 1,000.00 a month, not 1,200.
    @Test func annualTimesSeats() {
        #expect(mrr(stripe([item(120_000, quantity: 10, interval: "year")])) == .int(1000))
    }

    @Test func weeklyAndEveryThreeMonthsAndDaily() {
        // 10.00 a week is 10 × 52 / 12 = 43.33 a month.
        #expect(mrr(stripe([item(1000, interval: "week")])) == .double(43.33))
        // 300.00 every 3 months is 100.00 a month.
        #expect(mrr(stripe([item(30000, count: 3)])) == .int(100))
        // 1.00 a day is 365 / 12 = 30.42 a month.
        #expect(mrr(stripe([item(100, interval: "day")])) == .double(30.42))
    }

    @Test func severalItemsAddUp() {
        #expect(mrr(stripe([item(4900), item(120_000, interval: "year"), item(500, quantity: 4)])) == .int(169))
    }

    @Test func discountsThatKeepApplying() {
        // 20 % off forever: 100.00 → 80.00.
        #expect(mrr(stripe([item(10000)], discount: ["coupon": ["percent_off": 20, "duration": "forever"]])) == .int(80))
        // 15.00 off each (monthly) invoice, repeating: 100.00 → 85.00.
        #expect(mrr(stripe([item(10000)], discount: ["coupon": ["amount_off": 1500, "currency": "usd", "duration": "repeating", "duration_in_months": 3]])) == .int(85))
        // 120.00 off each yearly invoice is 10.00 a month: 1,200.00 a year → 90.00 a month.
        #expect(mrr(stripe([item(120_000, interval: "year")], discounts: [["object": "discount", "coupon": ["amount_off": 12000, "duration": "forever"]]])) == .int(90))
        // A discount for the first invoice only does not change the recurring revenue.
        #expect(mrr(stripe([item(10000)], discount: ["coupon": ["percent_off": 50, "duration": "once"]])) == .int(100))
        // Never below zero.
        #expect(mrr(stripe([item(1000)], discount: ["coupon": ["amount_off": 5000, "duration": "forever"]])) == .int(0))
    }

    @Test func zeroAndThreeDecimalCurrencies() {
        #expect(mrr(stripe([item(4900)], currency: "jpy")) == .int(4900))
        #expect(mrr(stripe([item(120_000, quantity: 10, interval: "year")], currency: "jpy")) == .int(100_000))
        #expect(mrr(stripe([item(10000)], currency: "kwd")) == .int(10))
        #expect(mrr(stripe([item(1000, interval: "week")], currency: "kwd")) == .double(4.333))
    }

    @Test func theOlderPlanObjectIsReadToo() {
        let legacy: JSONValue = ["object": "subscription", "currency": "usd", "items": ["data": [
            ["quantity": 2, "plan": ["amount": 2500, "interval": "month", "interval_count": 1, "usage_type": "licensed"]],
        ]]]
        #expect(mrr(legacy) == .int(50))
    }

    /// When the payload cannot tell, MRR is left out and the reason says why.
    @Test func unknownIsNeverAGuess() {
        func reason(_ subscription: JSONValue) -> String? {
            do { _ = try MRR.stripe(subscription); return nil } catch { return error.description }
        }
        #expect(reason(stripe([item(1000, extra: ["billing_scheme": "tiered"])]))?.contains("tiered") == true)
        #expect(reason(stripe([item(1000, extra: ["recurring": ["interval": "month", "usage_type": "metered"]])]))?.contains("metered") == true)
        // A discount named by id only is not a reason to leave MRR out: the list price is sent, and said so.
        #expect(reason(stripe([item(1000)], discounts: ["di_1Qkoala"])) == nil)
        let byID = try? MRR.stripeDetail(stripe([item(1000)], discounts: ["di_1Qkoala"]))
        #expect(byID?.net == nil && byID?.list == 10 && byID?.basis == .listPrice && byID?.unknownDiscount?.contains("by id only") == true)
        #expect(reason(stripe([]))?.contains("no items") == true)
        #expect(reason(stripe([item(1000, extra: ["recurring": .null])]))?.contains("not recurring") == true)
        #expect(reason(stripe([item(1000)], currency: "dollars"))?.contains("three-letter") == true)
    }

    @Test func paddleSubscriptions() {
        func paddle(_ items: [(String, Int64, String, Int64)], currency: String = "USD", discount: JSONValue = .null) -> JSONValue {
            ["id": "sub_01", "currency_code": .string(currency), "discount": discount,
             "billing_cycle": ["interval": "month", "frequency": 1],
             "items": .array(items.map { amount, quantity, interval, frequency in
                 ["quantity": .int(quantity), "price": ["unit_price": ["amount": .string(amount), "currency_code": .string(currency)],
                                                        "billing_cycle": ["interval": .string(interval), "frequency": .int(frequency)]]]
             })]
        }
        #expect((try? MRR.paddle(paddle([("3000", 5, "month", 1)]))) == .int(150))
        #expect((try? MRR.paddle(paddle([("120000", 10, "year", 1)]))) == .int(1000))
        #expect((try? MRR.paddle(paddle([("4900", 1, "month", 1)], currency: "JPY"))) == .int(4900))
        // A discount named by id only: the list price, on that basis; once a discount event told what it is, net.
        let discounted = paddle([("3000", 2, "month", 1)], discount: ["id": "dsc_01", "starts_at": "2024-11-29T00:00:00Z"])
        #expect((try? MRR.paddle(discounted)) == .int(60))
        #expect((try? MRR.paddleDetail(discounted))?.basis == .listPrice)
        #expect((try? MRR.paddle(discounted, known: [["id": "dsc_01", "type": "percentage", "amount": "10", "recur": true]])) == .int(54))
        #expect((try? MRR.paddle(discounted, known: [["id": "dsc_01", "type": "flat", "amount": "500", "recur": true, "currency_code": "USD"]])) == .int(55))
        #expect((try? MRR.paddle(discounted, known: [["id": "dsc_01", "type": "flat_per_seat", "amount": "500", "recur": true]])) == .int(50))
        #expect((try? MRR.paddle(discounted, known: [["id": "dsc_01", "type": "percentage", "amount": "10", "recur": false]])) == .int(60))
    }

    /// `simulate` says why MRR was left out, per route and field.
    @Test func simulateSaysWhyMRRIsLeftOut() throws {
        let table = try RuleLoader(environment: [:]).load(directory: repositoryRoot + "/routes")
        let router = WebhookRouter(source: try #require(table.sources["stripe"]))
        let subscription = stripe([item(1000, extra: ["billing_scheme": "tiered"])]).merging(["id": "sub_t", "customer": "cus_t", "status": "active"])
        let body: JSONValue = ["id": "evt_t", "type": "customer.subscription.created", "created": 1732871520, "data": ["object": subscription]]
        let bytes = Array(body.encoded().utf8)
        let webhook = VerifiedWebhook(source: "stripe", webhookID: "evt_t", eventType: "customer.subscription.created", eventTime: Date(),
                                      receivedAt: Date(), headers: [:], body: bytes, json: try JSONTape.parse(bytes), secretLabel: "S", rulesVersion: "t")
        let notes = router.mrrNotes(webhook, memory: WebhookRouter.entries([MemoryKey(namespace: "stripe_customer", key: "cus_t"): KoalaIdentity(email: "a@acme-corp.io")]))
        #expect(notes == [
            "subscription-started: track.properties.mrr left out: stripe_mrr(body.data.object): a price is tiered: its amount depends on the quantity's tiers",
            "subscription-revenue: billing.mrr left out: stripe_mrr(body.data.object): a price is tiered: its amount depends on the quantity's tiers",
        ])
    }

    @Test func theRuleLanguageCallsIt() throws {
        let body: JSONValue = ["data": ["object": stripe([item(120_000, quantity: 10, interval: "year")])]]
        var parser = try ExpressionParser("stripe_mrr(body.data.object)")
        #expect(try parser.parseComplete().evaluate(in: EvaluationContext(body: body, headers: [:], webhook: .null)) == .int(1000))
    }

    func call(_ text: String, _ body: JSONValue) throws -> JSONValue? {
        var parser = try ExpressionParser(text)
        return try parser.parseComplete().evaluate(in: EvaluationContext(body: body, headers: [:], webhook: .null))
    }

    /// `stripe_previous(data)`: the object with `previous_attributes` laid over it — hashes merge key by key
    /// (Stripe lists only the changed keys), arrays are replaced whole (Stripe sends a changed array entire).
    @Test func thePreviousStateOfAStripeObject() throws {
        let data: JSONValue = [
            "object": ["status": "active", "metadata": ["tier": "gold", "seats": "3"], "items": ["data": [["quantity": 3]]]],
            "previous_attributes": ["status": "trialing", "metadata": ["tier": "silver"], "items": ["data": [["quantity": 1]]]],
        ]
        #expect(try call("stripe_previous(body)", data) == [
            "status": "trialing", "metadata": ["tier": "silver", "seats": "3"], "items": ["data": [["quantity": 1]]],
        ])
        #expect(try call("stripe_previous(body)", ["object": ["status": "active"]]) == ["status": "active"])
        #expect(try call("stripe_previous(body.nothing)", data) == nil)
    }

    @Test func minusIsExact() throws {
        #expect(try call("minus(body.a, body.b)", ["a": 99, "b": 49]) == .int(50))
        #expect(try call("minus(body.a, body.b)", ["a": 20, "b": 49]) == .int(-29))
        #expect(try call("minus(body.a, body.b)", ["a": .double(0.3), "b": .double(0.1)]) == .double(0.2))
        #expect(try call("minus(body.a, body.b)", ["a": "12.345", "b": 2]) == .double(10.345))
        #expect(try call("minus(body.a, body.missing)", ["a": 1]) == nil)
        #expect(try call("minus(body.a, body.b)", ["a": "x", "b": 1]) == nil)
    }

    @Test func payingIsActiveWithMRRAboveZero() throws {
        #expect(try call("paying(body.s, body.m)", ["s": "active", "m": 49]) == .bool(true))
        #expect(try call("paying(body.s, body.m)", ["s": "cancelling", "m": 49]) == .bool(true))
        #expect(try call("paying(body.s, body.m)", ["s": "trialing", "m": 49]) == .bool(false))
        #expect(try call("paying(body.s, body.m)", ["s": "active", "m": 0]) == .bool(false))
        #expect(try call("paying(body.s, body.missing)", ["s": "active"]) == .bool(false))
        #expect(try call("paying(body.missing, body.m)", ["m": 49]) == nil)
    }

    @Test func paddleStatusesInTheSameVocabulary() {
        func status(_ fields: [String: JSONValue]) -> String? { BillingStatus.paddle(.object(fields))?.rawValue }
        #expect(status(["status": "trialing"]) == "trialing")
        #expect(status(["status": "active"]) == "active")
        #expect(status(["status": "active", "scheduled_change": ["action": "cancel", "effective_at": "2024-12-29T10:00:00Z"]]) == "cancelling")
        #expect(status(["status": "active", "scheduled_change": ["action": "pause"]]) == "active")
        #expect(status(["status": "past_due"]) == "past_due")
        #expect(status(["status": "paused"]) == "paused")
        #expect(status(["status": "canceled"]) == "churned")
        #expect(status(["status": "mystery"]) == nil)
    }

    @Test func oneBillingStatusVocabulary() {
        func status(_ fields: [String: JSONValue]) -> String? { BillingStatus.stripe(.object(fields))?.rawValue }
        #expect(status(["status": "trialing"]) == "trialing")
        #expect(status(["status": "active", "cancel_at_period_end": false]) == "active")
        #expect(status(["status": "active", "cancel_at_period_end": true]) == "cancelling")
        #expect(status(["status": "active", "cancel_at": 1738919520]) == "cancelling")
        #expect(status(["status": "active", "cancel_at": .null]) == "active")
        #expect(status(["status": "past_due"]) == "past_due")
        #expect(status(["status": "unpaid"]) == "past_due")
        #expect(status(["status": "paused"]) == "paused")
        #expect(status(["status": "canceled"]) == "churned")
        #expect(status(["status": "incomplete_expired"]) == "churned")
        #expect(status(["status": "incomplete"]) == nil)
        #expect(BillingStatus.stripeIsPaying(stripe([item(4900)]).merging(["status": "active"])) == true)
        #expect(BillingStatus.stripeIsPaying(stripe([item(4900)]).merging(["status": "trialing"])) == false)
        #expect(BillingStatus.stripeIsPaying(stripe([item(0)]).merging(["status": "active"])) == false)
        #expect(BillingStatus.stripeIsPaying(stripe([item(4900, extra: ["billing_scheme": "tiered"])]).merging(["status": "active"])) == false)
    }
}

extension JSONValue {
    /// This object with `fields` set.
    func merging(_ fields: [String: JSONValue]) -> JSONValue {
        guard case .object(var members) = self else { return self }
        for (key, value) in fields { members[key] = value }
        return .object(members)
    }
}

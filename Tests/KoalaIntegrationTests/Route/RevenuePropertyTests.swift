import Foundation
import HTTPTypes
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaStore
import KoalaTestSupport

/// Issue 26: for each billing provider, one customer's life — a trial and its conversion, a second
/// subscription, a coupon, an upgrade, more seats, a pause and its end, a scheduled cancellation and its
/// withdrawal, a failed then recovered payment, two partial refunds, a churn — signed the provider's way and
/// sent through ingest into a real SQLite store, in order and then in random orders with duplicates. What
/// Koala would hold at the end is the same every time: the account's traits (its messages applied in the
/// order the sender sends them), the money (payments and refunds counted once), and the `mrr_delta`s of the
/// `MRR Changed` events sum to the account's final `mrr`.
@Suite("Revenue in any order")
struct RevenuePropertyTests {
    /// One webhook: its source, body, and how the provider signs it.
    struct Delivery {
        let source: String
        let body: [UInt8]
        var svixID: String?
    }

    /// What Koala holds after a run.
    struct Outcome: Equatable, CustomStringConvertible {
        var account: [String: JSONValue] = [:]
        var deltas: Decimal = 0
        var movements = 0
        var paid: Decimal = 0
        var payments = 0
        var refunded: Decimal = 0
        var refunds = 0
        var failures = 0

        var description: String {
            "account \(JSONValue.object(account).encoded()), deltas \(deltas), paid \(paid) in \(payments), refunded \(refunded) in \(refunds), failed \(failures)"
        }
    }

    static let environment = ShippedRoutesTests.environment

    func headers(_ delivery: Delivery, now: Date) -> HTTPFields {
        guard delivery.source == "clerk", let id = delivery.svixID else { return ShippedRoutesTests().signed(delivery.source, delivery.body, now: now) }
        let seconds = Int64(now.timeIntervalSince1970)
        let key = StandardWebhooksVerifier.decodeSecret(Self.environment["CLERK_WEBHOOK_SECRET"]!)!
        return fields(["svix-id": id, "svix-timestamp": String(seconds),
                       "svix-signature": StandardWebhooksVerifier.sign(id: id, timestamp: seconds, body: delivery.body, key: key)])
    }

    /// Sends the life in `order` (indices, repeats are duplicates) and reads what Koala would get.
    func run(_ life: [Delivery], order: [Int]) async throws -> Outcome {
        let table = try RuleLoader(environment: Self.environment).load(directory: repositoryRoot + "/routes")
        let holder = RulesHolder(table)
        let store = try await SQLiteStore(path: temporaryDirectory() + "/db.sqlite")
        var outcome = Outcome()
        try await store.whileRunning {
            let ingest = Ingest(rules: holder, store: store, linger: 0, identityWait: 3600, logger: quietLogger)
            let resolver = IdentityResolver(store: store, rules: holder, linger: 0, logger: quietLogger)
            for index in order {
                let delivery = life[index]
                let now = Date()
                let answer = await ingest.handle(source: delivery.source, headers: headers(delivery, now: now), body: delivery.body, now: now)
                #expect(answer.status == .ok, "\(delivery.source) #\(index): \(answer.body)")
            }
            while try await resolver.runOnce() {}
            let counts = try await store.counts()
            #expect(counts.waiting == 0 && counts.dead == 0, "waiting \(counts.waiting), dead \(counts.dead)")
            let due = try await store.claimDue(now: Date().addingTimeInterval(1), limit: 10_000, lease: 60)
            // The sender sends one identity's messages in event-time order, ties in arrival order.
            for message in due.sorted(by: { ($0.eventTime, $0.seq) < ($1.eventTime, $1.seq) }) {
                let item = try JSONValue.parse(Array(message.itemJSON.utf8))
                if message.endpoint == .account {
                    if case .object(let traits)? = item["traits"] { outcome.account.merge(traits) { _, new in new } }
                    continue
                }
                let amount = item["properties"]?["amount"].flatMap(MRR.decimal) ?? 0
                switch item["event"]?.stringValue {
                case RevenueLedger.movementEvent?:
                    outcome.deltas += item["properties"]?["mrr_delta"].flatMap(MRR.decimal) ?? 0
                    outcome.movements += 1
                case "Payment Succeeded"?: outcome.paid += amount; outcome.payments += 1
                case "Refund Issued"?: outcome.refunded += amount; outcome.refunds += 1
                case "Payment Failed"?: outcome.failures += 1
                default: break
                }
            }
        }
        return outcome
    }

    /// In order, then `seeds` random orders with duplicates (`pinned` deliveries first, in order: facts that
    /// exist before the customer's life); each must end where the ordered run ends.
    func check(_ life: [Delivery], pinned: Int = 0, seeds: Range<UInt64> = 0..<12, expect: (Outcome) -> Void) async throws {
        let inOrder = try await run(life, order: Array(life.indices))
        expect(inOrder)
        #expect(inOrder.deltas == (inOrder.account["mrr"].flatMap(MRR.decimal) ?? 0), "the deltas sent sum to the account's MRR: \(inOrder)")
        for seed in seeds {
            var generator = SeededGenerator(seed: seed)
            let rest = Array(life.indices.dropFirst(pinned))
            var order = (rest + rest.filter { _ in Int.random(in: 0..<4, using: &generator) == 0 }).shuffled(using: &generator)
            if seed == 0 { order = rest.reversed() + rest.prefix(3) }
            let outcome = try await run(life, order: Array(life.indices.prefix(pinned)) + order)
            let differing = Set(outcome.account.keys).union(inOrder.account.keys).filter { outcome.account[$0] != inOrder.account[$0] }.sorted()
            #expect(differing.isEmpty, "seed \(seed): \(differing.map { "\($0): \(outcome.account[$0]?.encoded() ?? "none") (in order \(inOrder.account[$0]?.encoded() ?? "none"))" })")
            #expect(outcome.deltas == (outcome.account["mrr"].flatMap(MRR.decimal) ?? 0), "seed \(seed): \(outcome)")
            // Money: the same totals (a cumulative refund delivered before an earlier one counts both at once).
            #expect((outcome.paid, outcome.payments, outcome.refunded, outcome.failures)
                    == (inOrder.paid, inOrder.payments, inOrder.refunded, inOrder.failures), "seed \(seed): \(outcome)")
        }
    }

    /// Every trait a finished life must state.
    func expectFinal(_ outcome: Outcome, mrr: JSONValue?, plan: String, seats: Int64, basis: String = "net") {
        let a = outcome.account
        #expect(a["mrr"] == mrr, "\(outcome)")
        #expect(a["mrr_basis"] == .string(basis), "\(outcome)")
        #expect(a["billing_status"] == "active" && a["is_paying_customer"] == true && a["live_subscriptions"] == 1, "\(outcome)")
        #expect(a["plan"] == .string(plan) && a["seats"] == .int(seats), "\(outcome)")
        #expect(a["cancellation_scheduled"] == false && a["paused"] == false && a["payment_failing"] == false && a["on_trial"] == false, "\(outcome)")
    }

    // MARK: Stripe

    static func stripeLife() -> [Delivery] {
        let t0 = 1_733_000_000
        func sub(_ id: String, _ status: String, _ plan: String, _ unit: Int64, _ quantity: Int64, _ extra: [String: JSONValue] = [:]) -> JSONValue {
            var o: [String: JSONValue] = [
                "id": .string(id), "object": "subscription", "customer": "cus_P", "status": .string(status), "currency": "usd",
                "start_date": .int(Int64(t0 + (id == "sub_A" ? 100 : 400))), "cancel_at_period_end": false, "cancel_at": .null, "pause_collection": .null,
                "discounts": id == "sub_A" && status != "trialing" ? ["di_P"] : [],
                "items": ["object": "list", "data": [["id": .string("si_\(id)"), "quantity": .int(quantity),
                          "price": ["id": .string("price_\(plan)"), "object": "price", "nickname": .string(plan), "unit_amount": .int(unit), "currency": "usd",
                                    "billing_scheme": "per_unit", "recurring": ["interval": "month", "interval_count": 1, "usage_type": "licensed"]]]]],
            ]
            for (k, v) in extra { o[k] = v }
            return .object(o)
        }
        func event(_ n: Int, _ type: String, _ object: JSONValue, previous: JSONValue? = nil) -> Delivery {
            var data: [String: JSONValue] = ["object": object]
            if let previous { data["previous_attributes"] = previous }
            return Delivery(source: "stripe", body: Array(JSONValue.object(["id": .string("evt_P\(n)"), "object": "event", "type": .string(type),
                                                                              "created": .int(Int64(t0 + n * 100)), "data": .object(data)]).encoded().utf8))
        }
        let scale3 = sub("sub_A", "active", "Scale", 20000, 3)
        return [
            event(0, "customer.created", ["id": "cus_P", "object": "customer", "email": "ops@prop-co.io", "name": "Prop Co"]),
            event(1, "customer.subscription.created", sub("sub_A", "trialing", "Team", 10000, 2, ["trial_end": .int(Int64(t0 + 250))])),
            event(2, "customer.subscription.updated", sub("sub_A", "active", "Team", 10000, 2), previous: ["status": "trialing"]),
            event(3, "customer.discount.created", ["id": "di_P", "object": "discount", "customer": "cus_P", "subscription": "sub_A", "start": .int(Int64(t0 + 300)),
                                                   "end": .null, "coupon": ["id": "SAVE20", "object": "coupon", "percent_off": 20, "duration": "forever"]]),
            event(4, "customer.subscription.created", sub("sub_B", "active", "Add-on", 5000, 1)),
            event(5, "customer.subscription.updated", sub("sub_A", "active", "Scale", 20000, 2),
                  previous: ["items": ["object": "list", "data": [["quantity": 2, "price": ["id": "price_Team", "nickname": "Team", "unit_amount": 10000, "currency": "usd",
                                                                                             "recurring": ["interval": "month", "interval_count": 1]]]]]]),
            event(6, "customer.subscription.updated", scale3,
                  previous: ["items": ["object": "list", "data": [["quantity": 2, "price": ["id": "price_Scale", "nickname": "Scale", "unit_amount": 20000, "currency": "usd",
                                                                                             "recurring": ["interval": "month", "interval_count": 1]]]]]]),
            event(7, "customer.subscription.updated", sub("sub_B", "active", "Add-on", 5000, 1, ["pause_collection": ["behavior": "void"]]), previous: ["pause_collection": .null]),
            event(8, "customer.subscription.updated", sub("sub_B", "active", "Add-on", 5000, 1), previous: ["pause_collection": ["behavior": "void"]]),
            event(9, "customer.subscription.updated", sub("sub_A", "active", "Scale", 20000, 3, ["cancel_at_period_end": true]), previous: ["cancel_at_period_end": false]),
            event(10, "customer.subscription.updated", scale3, previous: ["cancel_at_period_end": true]),
            event(11, "invoice.payment_failed", ["id": "in_P1", "object": "invoice", "customer": "cus_P", "customer_email": "ops@prop-co.io", "amount_due": 48000,
                                                 "currency": "usd", "subscription": "sub_A", "billing_reason": "subscription_cycle", "attempt_count": 1]),
            event(12, "customer.subscription.updated", sub("sub_A", "past_due", "Scale", 20000, 3), previous: ["status": "active"]),
            event(13, "invoice.paid", ["id": "in_P1", "object": "invoice", "customer": "cus_P", "customer_email": "ops@prop-co.io", "amount_paid": 48000,
                                       "currency": "usd", "subscription": "sub_A", "billing_reason": "subscription_cycle", "number": "P-1"]),
            event(14, "customer.subscription.updated", scale3, previous: ["status": "past_due"]),
            event(15, "charge.refunded", ["id": "ch_P1", "object": "charge", "customer": "cus_P", "billing_details": ["email": "ops@prop-co.io"],
                                          "amount": 48000, "amount_refunded": 1200, "currency": "usd"], previous: ["amount_refunded": 0]),
            event(16, "charge.refunded", ["id": "ch_P1", "object": "charge", "customer": "cus_P", "billing_details": ["email": "ops@prop-co.io"],
                                          "amount": 48000, "amount_refunded": 2200, "currency": "usd"], previous: ["amount_refunded": 1200]),
            event(17, "customer.subscription.deleted", sub("sub_B", "canceled", "Add-on", 5000, 1, ["ended_at": .int(Int64(t0 + 1700))])),
        ]
    }

    @Test func stripe() async throws {
        try await check(Self.stripeLife()) { outcome in
            // Scale 200.00 × 3 seats, 20 % off forever: 480.00; the add-on churned.
            expectFinal(outcome, mrr: 480, plan: "Scale", seats: 3)
            #expect(outcome.paid == 480 && outcome.payments == 1 && outcome.failures == 1, "\(outcome)")
            #expect(outcome.refunded == 22 && outcome.refunds == 2, "\(outcome)")
        }
    }

    // MARK: Paddle

    static func paddleLife() -> [Delivery] {
        func at(_ n: Int) -> JSONValue { .string(String(format: "2024-12-%02dT10:00:00Z", n + 1)) }
        func sub(_ id: String, _ status: String, _ plan: String, _ unit: String, _ quantity: Int64, _ extra: [String: JSONValue] = [:]) -> JSONValue {
            var o: [String: JSONValue] = [
                "id": .string(id), "customer_id": "ctm_P", "status": .string(status), "currency_code": "USD",
                "started_at": id == "sub_A" ? "2024-12-02T10:00:00Z" : "2024-12-05T10:00:00Z",
                "billing_cycle": ["interval": "month", "frequency": 1], "scheduled_change": .null,
                "discount": id == "sub_A" && status != "trialing" ? ["id": "dsc_P", "starts_at": "2024-12-03T10:00:00Z", "ends_at": .null] : .null,
                "items": [["quantity": .int(quantity), "status": "active",
                           "price": ["id": .string("pri_\(plan)"), "description": .string(plan), "unit_price": ["amount": .string(unit), "currency_code": "USD"],
                                     "billing_cycle": ["interval": "month", "frequency": 1]]]],
            ]
            for (k, v) in extra { o[k] = v }
            return .object(o)
        }
        func event(_ n: Int, _ type: String, _ data: JSONValue) -> Delivery {
            Delivery(source: "paddle", body: Array(JSONValue.object(["event_id": .string("evt_P\(n)"), "event_type": .string(type), "occurred_at": at(n),
                                                                      "notification_id": .string("ntf_P\(n)"), "data": data]).encoded().utf8))
        }
        let scale3 = sub("sub_A", "active", "Scale", "20000", 3)
        let transaction: (String, String) -> JSONValue = { id, status in
            ["id": .string(id), "customer_id": "ctm_P", "subscription_id": "sub_A", "status": .string(status), "currency_code": "USD", "origin": "subscription_recurring",
             "details": ["totals": ["grand_total": "48000", "currency_code": "USD"]]]
        }
        let refund: (String, String) -> JSONValue = { id, amount in
            ["id": .string(id), "action": "refund", "status": "approved", "customer_id": "ctm_P", "subscription_id": "sub_A", "transaction_id": "txn_P2",
             "currency_code": "USD", "totals": ["total": .string(amount), "currency_code": "USD"]]
        }
        return [
            // A discount exists before anyone uses it (Paddle's discounts are the merchant's, not a customer's).
            event(0, "discount.created", ["id": "dsc_P", "status": "active", "type": "percentage", "amount": "20", "recur": true, "currency_code": .null]),
            event(1, "customer.created", ["id": "ctm_P", "email": "ops@paddle-co.io", "name": "Paddle Co"]),
            event(2, "subscription.created", sub("sub_A", "trialing", "Team", "10000", 2)),
            event(3, "subscription.activated", sub("sub_A", "active", "Team", "10000", 2)),
            event(4, "subscription.created", sub("sub_B", "active", "Add-on", "5000", 1)),
            event(5, "subscription.updated", sub("sub_A", "active", "Scale", "20000", 2)),
            event(6, "subscription.updated", scale3),
            event(7, "subscription.paused", sub("sub_B", "paused", "Add-on", "5000", 1)),
            event(8, "subscription.resumed", sub("sub_B", "active", "Add-on", "5000", 1)),
            event(9, "subscription.updated", sub("sub_A", "active", "Scale", "20000", 3, ["scheduled_change": ["action": "cancel", "effective_at": "2025-01-02T10:00:00Z"]])),
            event(10, "subscription.updated", scale3),
            event(11, "transaction.payment_failed", transaction("txn_P1", "past_due")),
            event(12, "subscription.past_due", sub("sub_A", "past_due", "Scale", "20000", 3)),
            event(13, "transaction.completed", transaction("txn_P2", "completed")),
            event(14, "subscription.updated", scale3),
            event(15, "adjustment.created", refund("adj_P1", "1200")),
            event(16, "adjustment.created", refund("adj_P2", "1000")),
            event(17, "subscription.canceled", sub("sub_B", "canceled", "Add-on", "5000", 1, ["canceled_at": "2024-12-18T10:00:00Z"])),
        ]
    }

    @Test func paddle() async throws {
        try await check(Self.paddleLife(), pinned: 1) { outcome in
            expectFinal(outcome, mrr: 480, plan: "Scale", seats: 3)
            #expect(outcome.paid == 480 && outcome.payments == 1 && outcome.failures == 1, "\(outcome)")
            #expect(outcome.refunded == 22 && outcome.refunds == 2, "\(outcome)")
        }
    }

    // MARK: Chargebee

    static func chargebeeLife() -> [Delivery] {
        let t0 = 1_733_000_000
        func sub(_ n: Int, _ id: String, _ status: String, _ plan: String, _ quantity: Int64, mrr: Int64, _ extra: [String: JSONValue] = [:]) -> JSONValue {
            var o: [String: JSONValue] = [
                "id": .string(id), "customer_id": "cus_C", "status": .string(status), "currency_code": "USD", "mrr": .int(mrr),
                "billing_period": 1, "billing_period_unit": "month", "started_at": .int(Int64(t0 + (id == "sub_A" ? 100 : 400))),
                "resource_version": .int(Int64(t0 + n * 100) * 1000), "updated_at": .int(Int64(t0 + n * 100)),
                "subscription_items": [["item_price_id": .string("\(plan)-USD-Monthly"), "item_type": "plan", "quantity": .int(quantity)]],
                "coupons": id == "sub_A" ? [["coupon_id": "SAVE20", "applied_count": 1]] : [],
            ]
            for (k, v) in extra { o[k] = v }
            return .object(o)
        }
        func event(_ n: Int, _ type: String, _ content: [String: JSONValue]) -> Delivery {
            var c = content
            c["customer"] = ["id": "cus_C", "email": "ops@cb-co.io", "first_name": "Chargebee", "company": "CB Co"]
            return Delivery(source: "chargebee", body: Array(JSONValue.object(["id": .string("ev_C\(n)"), "event_type": .string(type), "occurred_at": .int(Int64(t0 + n * 100)),
                                                                                "api_version": "v2", "object": "event", "content": .object(c)]).encoded().utf8))
        }
        let transaction: (String, Int64) -> JSONValue = { id, amount in
            ["id": .string(id), "amount": .int(amount), "currency_code": "USD", "subscription_id": "sub_A", "status": "success"]
        }
        return [
            event(0, "customer_created", [:]),
            event(1, "subscription_created", ["subscription": sub(1, "sub_A", "in_trial", "Team", 2, mrr: 0, ["trial_end": .int(Int64(t0 + 250))])]),
            // Chargebee's mrr is the subscription's after its coupon: Team 100.00 × 2 less 20 %.
            event(2, "subscription_activated", ["subscription": sub(2, "sub_A", "active", "Team", 2, mrr: 16000)]),
            event(3, "subscription_created", ["subscription": sub(3, "sub_B", "active", "Add-on", 1, mrr: 5000)]),
            event(4, "subscription_changed", ["subscription": sub(4, "sub_A", "active", "Scale", 2, mrr: 32000)]),
            event(5, "subscription_changed", ["subscription": sub(5, "sub_A", "active", "Scale", 3, mrr: 48000)]),
            event(6, "subscription_paused", ["subscription": sub(6, "sub_B", "paused", "Add-on", 1, mrr: 0)]),
            event(7, "subscription_resumed", ["subscription": sub(7, "sub_B", "active", "Add-on", 1, mrr: 5000)]),
            event(8, "subscription_cancellation_scheduled", ["subscription": sub(8, "sub_A", "non_renewing", "Scale", 3, mrr: 48000)]),
            event(9, "subscription_scheduled_cancellation_removed", ["subscription": sub(9, "sub_A", "active", "Scale", 3, mrr: 48000)]),
            event(10, "payment_failed", ["transaction": transaction("txn_C1", 48000)]),
            event(11, "payment_succeeded", ["transaction": transaction("txn_C2", 48000)]),
            event(12, "payment_refunded", ["transaction": transaction("txn_C3", 1200)]),
            event(13, "payment_refunded", ["transaction": transaction("txn_C4", 1000)]),
            event(14, "subscription_cancelled", ["subscription": sub(14, "sub_B", "cancelled", "Add-on", 1, mrr: 0, ["cancelled_at": .int(Int64(t0 + 1400))])]),
        ]
    }

    @Test func chargebee() async throws {
        try await check(Self.chargebeeLife()) { outcome in
            expectFinal(outcome, mrr: 480, plan: "Scale-USD-Monthly", seats: 3)
            #expect(outcome.paid == 480 && outcome.payments == 1 && outcome.failures == 1, "\(outcome)")
            #expect(outcome.refunded == 22 && outcome.refunds == 2, "\(outcome)")
        }
    }

    // MARK: Lemon Squeezy

    static func lemonSqueezyLife() -> [Delivery] {
        func at(_ n: Int) -> JSONValue { .string(String(format: "2024-12-%02dT10:00:00.000000Z", n + 1)) }
        func sub(_ n: Int, _ id: String, _ status: String, _ variant: String, _ quantity: Int64) -> JSONValue {
            ["type": "subscriptions", "id": .string(id),
             "attributes": ["store_id": 1, "customer_id": 7101, "order_id": 1101, "product_name": "Koala Team", "variant_id": variant == "Monthly" ? 401 : 402,
                            "variant_name": .string(variant), "user_email": "ops@lemon-co.io", "user_name": "Lemon Co", "status": .string(status),
                            "cancelled": .bool(status == "cancelled"), "pause": status == "paused" ? ["mode": "void", "resumes_at": .null] : .null,
                            "first_subscription_item": ["id": .string("item_\(id)"), "subscription_id": .string(id), "price_id": 601, "quantity": .int(quantity)],
                            "trial_ends_at": "2024-12-03T10:00:00.000000Z", "ends_at": status == "expired" || status == "cancelled" ? at(n) : .null,
                            "created_at": id == "9101" ? "2024-12-02T10:00:00.000000Z" : "2024-12-04T10:00:00.000000Z", "updated_at": at(n)]]
        }
        func invoice(_ n: Int, _ id: String, _ reason: String, _ status: String, _ total: Int64) -> JSONValue {
            ["type": "subscription-invoices", "id": .string(id),
             "attributes": ["store_id": 1, "subscription_id": 9101, "customer_id": 7101, "user_email": "ops@lemon-co.io", "billing_reason": .string(reason),
                            "currency": "USD", "status": .string(status), "subtotal": .int(total), "discount_total": 0, "total": .int(total),
                            "refunded_amount": 0, "created_at": at(n), "updated_at": at(n)]]
        }
        func order(_ n: Int, refunded: Int64) -> JSONValue {
            ["type": "orders", "id": "1102",
             "attributes": ["store_id": 1, "customer_id": 7101, "order_number": 4102, "user_email": "ops@lemon-co.io", "user_name": "Lemon Co", "currency": "USD",
                            "subtotal": 9900, "total": 9900, "status": refunded > 0 ? "partial_refund" : "paid", "refunded_amount": .int(refunded),
                            "first_order_item": ["product_name": "Koala Onboarding", "variant_name": "Workshop", "price": 9900],
                            "created_at": "2024-12-01T10:00:00.000000Z", "updated_at": at(n)]]
        }
        func event(_ name: String, _ data: JSONValue) -> Delivery {
            Delivery(source: "lemonsqueezy", body: Array(JSONValue.object(["meta": ["event_name": .string(name), "test_mode": false], "data": data]).encoded().utf8))
        }
        return [
            event("order_created", order(0, refunded: 0)),
            event("subscription_created", sub(1, "9101", "on_trial", "Monthly", 2)),
            event("subscription_updated", sub(2, "9101", "active", "Monthly", 2)),
            event("subscription_created", sub(3, "9102", "active", "Add-on", 1)),
            event("subscription_updated", sub(4, "9101", "active", "Monthly", 3)),
            event("subscription_paused", sub(5, "9102", "paused", "Add-on", 1)),
            event("subscription_unpaused", sub(6, "9102", "active", "Add-on", 1)),
            event("subscription_cancelled", sub(7, "9101", "cancelled", "Monthly", 3)),
            event("subscription_resumed", sub(8, "9101", "active", "Monthly", 3)),
            event("subscription_payment_failed", invoice(9, "3101", "renewal", "pending", 14700)),
            event("subscription_updated", sub(10, "9101", "past_due", "Monthly", 3)),
            event("subscription_payment_success", invoice(11, "3101", "renewal", "paid", 14700)),
            event("subscription_payment_recovered", invoice(11, "3101", "renewal", "paid", 14700)),
            event("subscription_updated", sub(12, "9101", "active", "Monthly", 3)),
            event("order_refunded", order(13, refunded: 1200)),
            event("order_refunded", order(14, refunded: 2200)),
            event("subscription_expired", sub(15, "9102", "expired", "Add-on", 1)),
        ]
    }

    @Test func lemonSqueezy() async throws {
        try await check(Self.lemonSqueezyLife()) { outcome in
            // No price in Lemon Squeezy's subscriptions: the state, never a made-up MRR.
            expectFinal(outcome, mrr: nil, plan: "Monthly", seats: 3, basis: "unknown")
            #expect(outcome.deltas == 0 && outcome.movements == 0, "\(outcome)")
            #expect(outcome.paid == Decimal(string: "246") && outcome.payments == 2 && outcome.failures == 1, "\(outcome)")
            #expect(outcome.refunded == 22 && outcome.refunds <= 2, "\(outcome)")
        }
    }

    // MARK: Clerk Billing

    static func clerkLife() -> [Delivery] {
        let t0: Int64 = 1_733_000_000_000
        let payer: JSONValue = ["id": "cpayer_P", "organization_id": "org_P", "email": "ops@clerk-co.io", "organization_name": "Clerk Co"]
        func item(_ n: Int64, _ id: String, _ status: String, _ plan: String, _ amount: Int64) -> JSONValue {
            ["object": "commerce_subscription_item", "id": .string(id), "subscription_id": "csub_P", "status": .string(status), "interval": "month",
             "plan": ["id": .string("cplan_\(plan)"), "name": .string(plan), "slug": .string(plan.lowercased()), "amount": .int(amount), "currency": "usd",
                      "is_recurring": true, "is_default": false],
             "payer": payer, "created_at": .int(t0 + (id == "csubi_A" ? 100_000 : 300_000)), "updated_at": .int(t0 + n * 100_000),
             "period_start": .int(t0), "period_end": .int(t0 + 2_592_000_000), "ended_at": status == "ended" ? .int(t0 + n * 100_000) : .null]
        }
        func attempt(_ n: Int64, _ id: String, _ status: String) -> JSONValue {
            ["object": "commerce_payment_attempt", "id": .string(id), "status": .string(status), "charge_type": "recurring", "payer": payer,
             "failed_reason": status == "failed" ? ["code": "card_declined", "decline_code": "insufficient_funds"] : .null,
             "totals": ["grand_total": ["amount": 6000, "currency": "USD"]], "updated_at": .int(t0 + n * 100_000)]
        }
        var count = 0
        func event(_ n: Int64, _ type: String, _ data: JSONValue) -> Delivery {
            count += 1
            return Delivery(source: "clerk", body: Array(JSONValue.object(["type": .string(type), "object": "event", "timestamp": .int(t0 + n * 100_000),
                                                                            "data": data]).encoded().utf8), svixID: "msg_P\(count)")
        }
        return [
            event(1, "subscriptionItem.active", item(1, "csubi_A", "active", "Pro", 2500)),
            event(2, "paymentAttempt.updated", attempt(2, "cpa_1", "paid")),
            event(3, "subscriptionItem.active", item(3, "csubi_B", "active", "Add-on", 1000)),
            event(4, "subscriptionItem.active", item(4, "csubi_A", "active", "Business", 5000)),
            event(5, "subscriptionItem.canceled", item(5, "csubi_A", "canceled", "Business", 5000)),
            event(6, "subscriptionItem.active", item(6, "csubi_A", "active", "Business", 5000)),
            event(7, "paymentAttempt.updated", attempt(7, "cpa_2", "failed")),
            event(8, "subscriptionItem.pastDue", item(8, "csubi_A", "past_due", "Business", 5000)),
            event(9, "paymentAttempt.updated", attempt(9, "cpa_3", "paid")),
            event(9, "paymentAttempt.created", attempt(9, "cpa_3", "paid")),
            event(10, "subscriptionItem.active", item(10, "csubi_A", "active", "Business", 5000)),
            event(11, "subscriptionItem.ended", item(11, "csubi_B", "ended", "Add-on", 1000)),
        ]
    }

    @Test func clerkBilling() async throws {
        try await check(Self.clerkLife()) { outcome in
            expectFinal(outcome, mrr: 50, plan: "Business", seats: 1)
            #expect(outcome.paid == 120 && outcome.payments == 2 && outcome.failures == 1, "\(outcome)")
        }
    }

    // MARK: Recurly

    static func recurlyLife() -> [Delivery] {
        func event(_ n: Int, _ type: String, _ event: String, uuid: String? = nil) -> Delivery {
            var o: [String: JSONValue] = ["id": .string("rjx_P\(n)"), "object_type": .string(type), "event_type": .string(event),
                                          "event_time": .string(String(format: "2024-12-%02dT10:00:00Z", n + 1)), "account_code": "acct_P"]
            if let uuid { o["uuid"] = .string(uuid) }
            return Delivery(source: "recurly", body: Array(JSONValue.object(o).encoded().utf8))
        }
        return [
            event(0, "account", "created"),
            event(1, "subscription", "created", uuid: "sub_A"),
            event(2, "subscription", "renewed", uuid: "sub_A"),
            event(3, "subscription", "renewed", uuid: "sub_B"),
            event(4, "subscription", "paused", uuid: "sub_B"),
            event(5, "subscription", "resumed", uuid: "sub_B"),
            event(6, "subscription", "canceled", uuid: "sub_A"),
            event(7, "subscription", "reactivated", uuid: "sub_A"),
            event(8, "payment", "failed"),
            event(9, "payment", "succeeded"),
            event(10, "subscription", "expired", uuid: "sub_B"),
        ]
    }

    @Test func recurly() async throws {
        try await check(Self.recurlyLife()) { outcome in
            let a = outcome.account
            #expect(a["billing_status"] == "active" && a["live_subscriptions"] == 1 && a["cancellation_scheduled"] == false && a["paused"] == false, "\(outcome)")
            #expect(a["mrr"] == nil && a["mrr_basis"] == "unknown" && outcome.movements == 0, "\(outcome)")
            #expect(a["recurly_account_status"] == "open" && a["last_payment_failed_at"] == "2024-12-09T10:00:00.000Z"
                    && a["last_payment_succeeded_at"] == "2024-12-10T10:00:00.000Z", "\(outcome)")
        }
    }
}

import Foundation

/// Monthly recurring revenue computed from a provider's subscription object, not guessed from its first
/// price: every item's unit amount × quantity, normalised to a month from its billing interval, less the
/// discounts that keep applying, in the currency's major units. When the payload cannot tell (a metered or
/// tiered price, a discount sent only by id), the answer is "unknown" with the reason, never a number.
public enum MRR {
    /// Why the MRR of a subscription cannot be told from its payload.
    public struct Unknown: Error, Equatable, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// Months in one billing period of `count` × `interval` (day, week, month, year); nil for anything else.
    static func months(interval: String?, count: Decimal) -> Decimal? {
        guard count > 0 else { return nil }
        switch interval {
        case "day": return count * 12 / 365
        case "week": return count * 12 / 52
        case "month": return count
        case "year": return count * 12
        default: return nil
        }
    }

    /// A decimal from an integer, or integer or decimal text; nil otherwise.
    static func decimal(_ value: JSONValue?) -> Decimal? {
        switch value {
        case .int(let i)?: return Decimal(i)
        case .double(let d)? where d.isFinite && abs(d) < 1e15: return Decimal(string: JSONValue.format(d))
        case .string(let text)?:
            guard let shifted = Money.shift(text, left: 0) else { return nil }
            return Decimal(string: shifted, locale: Locale(identifier: "en_US_POSIX"))
        default: return nil
        }
    }

    /// A monthly amount in minor units as the currency's amount, rounded to its decimals.
    static func major(_ minorPerMonth: Decimal, currency: String, rules: Money.Rules) throws(Unknown) -> JSONValue {
        guard let exponent = Money.exponent(of: currency, rules: rules) else { throw Unknown("the currency '\(currency)' is not a three-letter code") }
        // Minor to major units by moving the decimal point: exact, and no Decimal division (slow).
        var scaled = Decimal(sign: minorPerMonth.sign, exponent: -exponent, significand: minorPerMonth.magnitude)
        var rounded = Decimal()
        NSDecimalRound(&rounded, &scaled, exponent, .plain)
        guard !rounded.isNaN, rounded.isFinite else { throw Unknown("the amount is out of range") }
        let text = NSDecimalNumber(decimal: rounded).stringValue
        if let whole = Int64(text) { return .int(whole) }
        guard let value = Double(text) else { throw Unknown("the amount is out of range") }
        return .double(value)
    }

    /// Stripe: a `subscription` object (`data.object` of `customer.subscription.*` events). Items use
    /// `price` (or the older `plan`): `unit_amount` (or `unit_amount_decimal`) × `quantity` per
    /// `recurring.interval_count` × `recurring.interval`. Discounts that keep applying (`forever`, `repeating`)
    /// on the subscription, as the older `discount` object or expanded `discounts`, are taken off: percent
    /// off the total, amount off per billing period. Stripe's own currency decimals.
    public static func stripe(_ subscription: JSONValue) throws(Unknown) -> JSONValue {
        guard case .array(let items)? = subscription["items"]?["data"], !items.isEmpty else {
            throw Unknown("the subscription has no items")
        }
        var total = Decimal(0)
        var currency = subscription["currency"]?.stringValue
        var firstPeriodMonths: Decimal?
        for item in items {
            let price = item["price"] ?? item["plan"]
            guard let price, price != .null else { throw Unknown("an item has no price") }
            if price["billing_scheme"]?.stringValue == "tiered" { throw Unknown("a price is tiered: its amount depends on the quantity's tiers") }
            let recurring = price["recurring"] ?? price
            if recurring["usage_type"]?.stringValue == "metered" { throw Unknown("a price is metered: its amount depends on usage") }
            guard let unit = decimal(price["unit_amount"]) ?? decimal(price["unit_amount_decimal"]) ?? decimal(price["amount"]) else {
                throw Unknown("a price has no unit amount")
            }
            let quantity = item["quantity"].flatMap { decimal($0) } ?? 1
            let count = recurring["interval_count"].flatMap { decimal($0) } ?? 1
            guard let months = months(interval: recurring["interval"]?.stringValue, count: count) else {
                throw Unknown("a price is not recurring by day, week, month or year")
            }
            if firstPeriodMonths == nil { firstPeriodMonths = months }
            if currency == nil { currency = price["currency"]?.stringValue }
            total += months == 1 ? unit * quantity : unit * quantity / months
        }
        var coupons: [JSONValue] = []
        if case .object? = subscription["discount"], let coupon = subscription["discount"]?["coupon"] { coupons.append(coupon) }
        if case .array(let discounts)? = subscription["discounts"] {
            for discount in discounts {
                guard case .object = discount, let coupon = discount["coupon"] else {
                    throw Unknown("the subscription has a discount Stripe sent by id only; expand it to know the MRR")
                }
                if !coupons.contains(coupon) { coupons.append(coupon) }
            }
        }
        for coupon in coupons where coupon["duration"]?.stringValue != "once" {
            if let percent = decimal(coupon["percent_off"]) {
                total = total * (100 - percent) / 100
            } else if let amount = decimal(coupon["amount_off"]) {
                total -= amount / (firstPeriodMonths ?? 1)
            }
        }
        if total < 0 { total = 0 }
        guard let currency else { throw Unknown("the subscription names no currency") }
        return try major(total, currency: currency, rules: .stripe)
    }

    /// Paddle Billing: a `subscription` entity (`data` of `subscription.*` events): each item's
    /// `price.unit_price.amount` (text, lowest denomination) × `quantity` per `price.billing_cycle` (or the
    /// subscription's `billing_cycle`), ISO 4217 decimals. Paddle sends a subscription's discount by id only,
    /// so a discounted subscription's MRR is unknown.
    public static func paddle(_ subscription: JSONValue) throws(Unknown) -> JSONValue {
        guard case .array(let items)? = subscription["items"], !items.isEmpty else { throw Unknown("the subscription has no items") }
        if let discount = subscription["discount"], discount != .null {
            throw Unknown("Paddle sends the subscription's discount by id only, without its amount")
        }
        var total = Decimal(0)
        var currency = subscription["currency_code"]?.stringValue
        for item in items {
            guard let unit = decimal(item["price"]?["unit_price"]?["amount"]) else { throw Unknown("an item has no unit price") }
            let quantity = item["quantity"].flatMap { decimal($0) } ?? 1
            let cycle = item["price"]?["billing_cycle"].flatMap { $0 == .null ? nil : $0 } ?? subscription["billing_cycle"]
            guard let cycle, let months = months(interval: cycle["interval"]?.stringValue, count: decimal(cycle["frequency"]) ?? 1) else {
                throw Unknown("an item is not billed by day, week, month or year")
            }
            if currency == nil { currency = item["price"]?["unit_price"]?["currency_code"]?.stringValue }
            total += months == 1 ? unit * quantity : unit * quantity / months
        }
        guard let currency else { throw Unknown("the subscription names no currency") }
        return try major(total, currency: currency, rules: .iso4217)
    }
}

extension MRR {
    /// Why `stripe_mrr(…)` or `paddle_mrr(…)` calls in `expression` give no value in `context`, one reason per
    /// call that is left out (for `simulate`).
    static func unknownReasons(in expression: Expression, _ context: EvaluationContext) -> [String] {
        var reasons: [String] = []
        func visit(_ expression: Expression) {
            switch expression {
            case .literal, .path: break
            case .template(let parts):
                for case .expression(let inner) in parts { visit(inner) }
            case .call(let name, let args):
                args.forEach(visit)
                guard name == "stripe_mrr" || name == "paddle_mrr", let argument = args.first else { return }
                guard let subscription = argument.evaluate(in: context) else {
                    reasons.append("\(name)(\(argument)) has no subscription to read")
                    return
                }
                do {
                    _ = name == "stripe_mrr" ? try MRR.stripe(subscription) : try MRR.paddle(subscription)
                } catch {
                    reasons.append("\(name)(\(argument)): \(error.description)")
                }
            case .access(let base, _): visit(base)
            case .piped(let base, let filters):
                visit(base)
                for filter in filters { filter.arguments.forEach(visit) }
            }
        }
        visit(expression)
        return reasons
    }
}

/// One lifecycle vocabulary for billing: a provider's subscription state in the words every route sends.
public enum BillingStatus: String, Sendable, CaseIterable {
    case trialing, active, pastDue = "past_due", paused, cancelling, churned

    /// A Stripe subscription's state: `cancelling` while a cancellation is scheduled (`cancel_at_period_end`
    /// or `cancel_at`), `past_due` for `past_due` and `unpaid`, `churned` once `canceled` (or
    /// `incomplete_expired`); nil for `incomplete`, which is not yet a subscription anyone uses.
    public static func stripe(_ subscription: JSONValue) -> BillingStatus? {
        let scheduled = subscription["cancel_at_period_end"] == .bool(true)
            || (subscription["cancel_at"].map { $0 != .null } ?? false)
        switch subscription["status"]?.stringValue {
        case "trialing": return scheduled ? .cancelling : .trialing
        case "active": return scheduled ? .cancelling : .active
        case "past_due", "unpaid": return .pastDue
        case "paused": return .paused
        case "canceled", "incomplete_expired": return .churned
        default: return nil
        }
    }

    /// A Paddle Billing subscription's state: `cancelling` while `scheduled_change.action` is `cancel`,
    /// `churned` once `canceled`.
    public static func paddle(_ subscription: JSONValue) -> BillingStatus? {
        let cancelScheduled = subscription["scheduled_change"]?["action"]?.stringValue == "cancel"
        switch subscription["status"]?.stringValue {
        case "trialing": return cancelScheduled ? .cancelling : .trialing
        case "active": return cancelScheduled ? .cancelling : .active
        case "past_due": return .pastDue
        case "paused": return .paused
        case "canceled": return .churned
        default: return nil
        }
    }

    /// Whether a Paddle subscription is a paying customer: active with MRR above zero.
    public static func paddleIsPaying(_ subscription: JSONValue) -> Bool {
        isPaying(subscription, mrr: MRR.paddle)
    }

    /// Whether a Stripe subscription is a paying customer: active (a scheduled cancellation still pays to the
    /// period's end) with MRR above zero; never a trial, a past-due, paused or ended subscription.
    public static func stripeIsPaying(_ subscription: JSONValue) -> Bool {
        isPaying(subscription, mrr: MRR.stripe)
    }

    /// Active with an MRR above zero; an MRR the payload cannot tell is not evidence of a paying customer.
    private static func isPaying(_ subscription: JSONValue, mrr: (JSONValue) throws -> JSONValue) -> Bool {
        guard subscription["status"]?.stringValue == "active" else { return false }
        return ((try? mrr(subscription))?.doubleValue ?? 0) > 0
    }
}

package import Foundation

/// Monthly recurring revenue computed from a provider's subscription object, not guessed from its first
/// price: every item's unit amount × quantity, normalised to a month from its billing interval, less the
/// discounts that keep applying, in the currency's major units. When the payload cannot tell (a metered or
/// tiered price, a discount sent only by id), the answer is "unknown" with the reason, never a number.
package enum MRR {
    /// Why the MRR of a subscription cannot be told from its payload.
    package struct Unknown: Error, Equatable, CustomStringConvertible {
        package let description: String
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

    /// A monthly amount in minor units (or, `alreadyMajor`, major units) as the currency's amount, rounded to its decimals.
    static func major(_ amount: Decimal, currency: String, rules: Money.Rules, alreadyMajor: Bool = false) throws(Unknown) -> JSONValue {
        guard let exponent = Money.exponent(of: currency, rules: rules) else { throw Unknown("the currency '\(currency)' is not a three-letter code") }
        // Minor to major units by moving the decimal point: exact, and no Decimal division (slow).
        var scaled = alreadyMajor ? amount : Decimal(sign: amount.sign, exponent: -exponent, significand: amount.magnitude)
        var rounded = Decimal()
        NSDecimalRound(&rounded, &scaled, exponent, .plain)
        guard !rounded.isNaN, rounded.isFinite else { throw Unknown("the amount is out of range") }
        let text = NSDecimalNumber(decimal: rounded).stringValue
        if let whole = Int64(text) { return .int(whole) }
        guard let value = Double(text) else { throw Unknown("the amount is out of range") }
        return .double(value)
    }

    /// A subscription's MRR as the payload tells it: before discounts (`list`), after the discounts in effect
    /// (`net`, nil when one cannot be known), and so the basis the MRR sent is on.
    package struct Detail: Sendable, Equatable {
        /// Before any discount, in major units.
        package let list: Decimal
        /// After the discounts in effect; nil when a discount in effect cannot be known.
        package let net: Decimal?
        /// The subscription's currency, as the payload names it.
        package let currency: String
        let rules: Money.Rules
        /// Why `net` is unknown, for `simulate`.
        package let unknownDiscount: String?
        /// Discounts named by id only that nothing described yet, in order, when they are all that is unknown:
        /// the revenue model takes them off `partial` once the provider's discount events describe them.
        package var pendingIDs: [String] = []
        /// The MRR after the discounts that are known (the list price when none is).
        package var partial: Decimal = 0
        /// Months in one billing period (an amount off per period is spread over them).
        package var periodMonths: Decimal = 1
        /// The quantity (an amount off per seat is multiplied by it).
        package var seats: Decimal = 1

        /// What the revenue model keeps to finish the MRR when the pending discounts are described; nil when
        /// nothing is pending (or something else is unknown).
        package var pending: JSONValue? {
            guard !pendingIDs.isEmpty, let exponent = Money.exponent(of: currency, rules: rules) else { return nil }
            return PendingDiscounts(ids: pendingIDs, partial: partial, periodMonths: periodMonths, seats: seats, exponent: exponent).json
        }

        /// The MRR sent: net when known, else the list price (a paying customer stays paying, an upgrade stays one).
        package var mrr: Decimal { net ?? list }
        /// How `mrr` was told: net, or the list price when a discount cannot be known.
        package var basis: MRRBasis { net == nil ? .listPrice : .net }

        func json(_ amount: Decimal) throws(Unknown) -> JSONValue { try MRR.major(amount, currency: currency, rules: rules, alreadyMajor: true) }
    }

    /// A discount as the revenue model reads it, from a Stripe coupon or a Paddle discount.
    struct Discount {
        enum Amount { case percent(Decimal), amountPerPeriod(Decimal), amountPerSeatPerPeriod(Decimal) }
        let amount: Amount
    }

    /// Stripe: a `subscription` object (`data.object` of `customer.subscription.*` events). Items use
    /// `price` (or the older `plan`): `unit_amount` (or `unit_amount_decimal`) × `quantity` per
    /// `recurring.interval_count` × `recurring.interval`. The discounts in effect are taken off: the older
    /// `discount` object, `discounts` expanded or named by an id that `discount` (or a remembered
    /// `customer.discount.*` event, in `known`) describes; `forever`, and `repeating` until `discount.end`;
    /// percent off the total, amount off per billing period. A `once` coupon does not change recurring revenue.
    package static func stripeDetail(_ subscription: JSONValue, known: [JSONValue] = []) throws(Unknown) -> Detail {
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
        guard let currency else { throw Unknown("the subscription names no currency") }
        guard let exponent = Money.exponent(of: currency, rules: .stripe) else { throw Unknown("the currency '\(currency)' is not a three-letter code") }
        let list = shifted(total, by: exponent)
        // The discounts: each as an object (the older `discount`, expanded `discounts`, or one remembered).
        var discounts: [JSONValue] = []
        var unknown: String?
        var pendingIDs: [String] = []
        var otherUnknown = false
        if case .object? = subscription["discount"], let discount = subscription["discount"] { discounts.append(discount) }
        if case .array(let listed)? = subscription["discounts"] {
            for entry in listed {
                if case .object = entry {
                    if !discounts.contains(where: { $0["id"] == entry["id"] && entry["id"] != nil }) { discounts.append(entry) }
                } else if let id = entry.stringValue {
                    if discounts.contains(where: { $0["id"]?.stringValue == id }) { continue }
                    if let remembered = known.first(where: { ($0["id"]?.stringValue ?? $0["discount_id"]?.stringValue) == id }) {
                        discounts.append(remembered)
                    } else {
                        unknown = "the subscription has a discount Stripe sent by id only (\(LogText.bounded(LogText.escaped(id), limit: 40))) and no customer.discount event told what it is"
                        pendingIDs.append(id)
                    }
                }
            }
        }
        // "Now" for a repeating discount: the start of the subscription's current period.
        let periodStart = (subscription["current_period_start"] ?? items.first?["current_period_start"])?.doubleValue
        var net = list
        for discount in discounts {
            let coupon = discount["coupon"] ?? discount
            switch coupon["duration"]?.stringValue {
            case "once": continue
            case "repeating":
                if let end = discount["end"]?.doubleValue, let periodStart, end <= periodStart { continue }
            default: break
            }
            if let percent = decimal(coupon["percent_off"]) {
                net = net * (100 - percent) / 100
            } else if let amount = decimal(coupon["amount_off"]) {
                let couponCurrency = coupon["currency"]?.stringValue ?? currency
                guard couponCurrency.lowercased() == currency.lowercased() else {
                    unknown = "a coupon's amount is in \(couponCurrency.uppercased()), the subscription in \(currency.uppercased())"
                    otherUnknown = true
                    continue
                }
                net -= shifted(amount, by: exponent) / (firstPeriodMonths ?? 1)
            }
        }
        if net < 0 { net = 0 }
        var detail = Detail(list: list, net: unknown == nil ? net : nil, currency: currency, rules: .stripe, unknownDiscount: unknown)
        if !otherUnknown {
            detail.pendingIDs = pendingIDs
            detail.partial = net
            detail.periodMonths = firstPeriodMonths ?? 1
            detail.seats = items.compactMap { $0["quantity"].flatMap { decimal($0) } }.reduce(0, +)
        }
        return detail
    }

    /// Stripe's MRR as `stripe_mrr` sends it (net, or the list price when a discount cannot be known).
    package static func stripe(_ subscription: JSONValue, known: [JSONValue] = []) throws(Unknown) -> JSONValue {
        let detail = try stripeDetail(subscription, known: known)
        return try detail.json(detail.mrr)
    }

    /// Paddle Billing: a `subscription` entity (`data` of `subscription.*` events): each item's
    /// `price.unit_price.amount` (text, lowest denomination) × `quantity` per `price.billing_cycle` (or the
    /// subscription's `billing_cycle`), ISO 4217 decimals. Its `discount` names a discount by id: what a
    /// `discount.*` event said about it (in `known`: `type` percentage, flat or flat_per_seat, `amount`,
    /// `recur`) is taken off while it applies (`ends_at` not passed).
    package static func paddleDetail(_ subscription: JSONValue, known: [JSONValue] = []) throws(Unknown) -> Detail {
        guard case .array(let items)? = subscription["items"], !items.isEmpty else { throw Unknown("the subscription has no items") }
        var total = Decimal(0)
        var currency = subscription["currency_code"]?.stringValue
        var seats = Decimal(0)
        var periodMonths: Decimal?
        for item in items {
            guard let unit = decimal(item["price"]?["unit_price"]?["amount"]) else { throw Unknown("an item has no unit price") }
            let quantity = item["quantity"].flatMap { decimal($0) } ?? 1
            let cycle = item["price"]?["billing_cycle"].flatMap { $0 == .null ? nil : $0 } ?? subscription["billing_cycle"]
            guard let cycle, let months = months(interval: cycle["interval"]?.stringValue, count: decimal(cycle["frequency"]) ?? 1) else {
                throw Unknown("an item is not billed by day, week, month or year")
            }
            if periodMonths == nil { periodMonths = months }
            seats += quantity
            if currency == nil { currency = item["price"]?["unit_price"]?["currency_code"]?.stringValue }
            total += months == 1 ? unit * quantity : unit * quantity / months
        }
        guard let currency else { throw Unknown("the subscription names no currency") }
        guard let exponent = Money.exponent(of: currency, rules: .iso4217) else { throw Unknown("the currency '\(currency)' is not a three-letter code") }
        let list = shifted(total, by: exponent)
        var net: Decimal? = list
        var unknown: String?
        if let discount = subscription["discount"], discount != .null {
            let id = discount["id"]?.stringValue
            let periodStart = subscription["current_billing_period"]?["starts_at"]?.stringValue
            let ended = discount["ends_at"]?.stringValue.flatMap { end in periodStart.map { end <= $0 } } ?? false
            if !ended {
                if let entity = known.first(where: { $0["id"]?.stringValue == id && id != nil }),
                   let type = entity["type"]?.stringValue, let amount = decimal(entity["amount"]) {
                    let recurs = entity["recur"] != .bool(false)
                    if recurs {
                        switch type {
                        case "percentage": net = list * (100 - amount) / 100
                        case "flat": net = list - shifted(amount, by: exponent) / (periodMonths ?? 1)
                        case "flat_per_seat": net = list - shifted(amount * seats, by: exponent) / (periodMonths ?? 1)
                        default: unknown = "a discount of type '\(type)' is not one Paddle documents"
                        }
                    }
                } else {
                    unknown = "Paddle sends the subscription's discount by id only (\(LogText.bounded(LogText.escaped(id ?? "?"), limit: 40))) and no discount event told what it is"
                }
            }
        }
        if unknown != nil { net = nil }
        if let value = net, value < 0 { net = 0 }
        return Detail(list: list, net: net, currency: currency, rules: .iso4217, unknownDiscount: unknown)
    }

    /// Paddle's MRR as `paddle_mrr` sends it (net, or the list price when a discount cannot be known).
    package static func paddle(_ subscription: JSONValue, known: [JSONValue] = []) throws(Unknown) -> JSONValue {
        let detail = try paddleDetail(subscription, known: known)
        return try detail.json(detail.mrr)
    }

    /// Clerk Billing: a subscription item (`data` of `subscriptionItem.*` events). Its `plan.amount` is the
    /// monthly fee in minor units; billed yearly (`interval: annual`) the month costs `plan.annual_monthly_amount`,
    /// and without it the monthly fee is the list price (said so: Clerk's annual price is usually lower).
    package static func clerkDetail(_ item: JSONValue) throws(Unknown) -> Detail {
        guard let plan = item["plan"], plan != .null, let monthly = decimal(plan["amount"]) else { throw Unknown("the item has no plan amount") }
        guard let currency = (plan["currency"] ?? item["amount"]?["currency"])?.stringValue?.uppercased(),
              let exponent = Money.exponent(of: currency, rules: .iso4217) else { throw Unknown("the item names no currency") }
        let list = shifted(monthly, by: exponent)
        var net: Decimal? = list
        var unknown: String?
        switch item["interval"]?.stringValue ?? item["plan_period"]?.stringValue {
        case "annual", "year":
            if let annualMonthly = decimal(plan["annual_monthly_amount"]) {
                net = shifted(annualMonthly, by: exponent)
            } else {
                net = nil
                unknown = "the item is billed yearly and its plan does not say annual_monthly_amount"
            }
        case "month", nil:
            break
        case let other?:
            throw Unknown("the item is billed by '\(LogText.bounded(LogText.escaped(other), limit: 20))', not month or annual")
        }
        return Detail(list: list, net: net, currency: currency, rules: .iso4217, unknownDiscount: unknown)
    }

    /// Minor units as major units: the decimal point moved (exact).
    static func shifted(_ minor: Decimal, by exponent: Int) -> Decimal {
        Decimal(sign: minor.sign, exponent: minor.exponent - exponent, significand: minor.significand)
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
                let known = args.dropFirst().compactMap { $0.evaluate(in: context) }
                do {
                    let detail = name == "stripe_mrr" ? try MRR.stripeDetail(subscription, known: known) : try MRR.paddleDetail(subscription, known: known)
                    if let why = detail.unknownDiscount { reasons.append("\(name)(\(argument)) is the list price (mrr_basis: list_price): \(why)") }
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
package enum BillingStatus: String, Sendable, CaseIterable {
    case trialing, active, pastDue = "past_due", paused, cancelling, churned

    /// A Stripe subscription's state: `paused` while collection is paused (`pause_collection` set, status still
    /// `active`) or `paused`, `cancelling` while a cancellation is scheduled (`cancel_at_period_end` or
    /// `cancel_at`), `past_due` for `past_due` and `unpaid`, `churned` once `canceled` (or
    /// `incomplete_expired`); nil for `incomplete`, which is not yet a subscription anyone uses.
    package static func stripe(_ subscription: JSONValue) -> BillingStatus? {
        let scheduled = subscription["cancel_at_period_end"] == .bool(true)
            || (subscription["cancel_at"].map { $0 != .null } ?? false)
        // Collection paused (`pause_collection` set) keeps Stripe's status `active`, but nothing is billed.
        let collectionPaused = subscription["pause_collection"].map { if case .object = $0 { true } else { false } } ?? false
        switch subscription["status"]?.stringValue {
        case "trialing": return scheduled ? .cancelling : .trialing
        case "active": return collectionPaused ? .paused : scheduled ? .cancelling : .active
        case "past_due", "unpaid": return .pastDue
        case "paused": return .paused
        case "canceled", "incomplete_expired": return .churned
        default: return nil
        }
    }

    /// A Paddle Billing subscription's state: `cancelling` while `scheduled_change.action` is `cancel`,
    /// `churned` once `canceled`.
    package static func paddle(_ subscription: JSONValue) -> BillingStatus? {
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
    package static func paddleIsPaying(_ subscription: JSONValue) -> Bool {
        isPaying(subscription, mrr: { try MRR.paddle($0) })
    }

    /// Whether a Stripe subscription is a paying customer: active (a scheduled cancellation still pays to the
    /// period's end) with MRR above zero; never a trial, a past-due, paused or ended subscription.
    package static func stripeIsPaying(_ subscription: JSONValue) -> Bool {
        isPaying(subscription, mrr: { try MRR.stripe($0) })
    }

    /// Generating revenue (active, cancelling until it ends, past due) with an MRR above zero; an MRR the payload
    /// cannot tell at all (metered, tiered) is not evidence of a paying customer.
    private static func isPaying(_ subscription: JSONValue, mrr: (JSONValue) throws -> JSONValue) -> Bool {
        let status = subscription["pause_collection"] != nil || subscription["items"]?["data"] != nil
            ? BillingStatus.stripe(subscription) : BillingStatus.paddle(subscription)
        guard let status, [.active, .cancelling, .pastDue].contains(status) else { return false }
        return ((try? mrr(subscription))?.doubleValue ?? 0) > 0
    }
}

extension MRR {
    /// A billing period's canonical name: `day`, `week`, `month`, `quarter` (3 months), `half_year` (6 months),
    /// `year` (also 12 months), else `<count> <interval>s` such as `2 months` or `2 years`; nil without an interval.
    package static func intervalLabel(_ interval: String?, count: Decimal?) -> String? {
        guard let interval = interval?.lowercased(), ["day", "week", "month", "year"].contains(interval) else { return nil }
        let count = count ?? 1
        switch (interval, count) {
        case (_, 1): return interval
        case ("month", 3): return "quarter"
        case ("month", 6): return "half_year"
        case ("month", 12): return "year"
        default: return "\(NSDecimalNumber(decimal: count).stringValue) \(interval)s"
        }
    }
}

package import Foundation

/// How a subscription's MRR was told.
package enum MRRBasis: String, Sendable, CaseIterable {
    /// Every price and every discount in effect was known: revenue after discounts.
    case net
    /// A discount in effect could not be known from the payload (nor from the provider's discount events):
    /// the list price, so a paying customer stays paying and an upgrade is still one.
    case listPrice = "list_price"
    /// The payload cannot tell the amount at all (a metered or tiered price): counted as 0.
    case unknown
}

/// One subscription as one webhook shows it, in the words of the revenue model whatever the provider
/// (README, Revenue semantics). Routes build it in their `billing:` block.
package struct SubscriptionSnapshot: Sendable, Equatable {
    /// The provider's subscription id.
    package var id: String
    /// The status in the revenue model's words.
    package var status: BillingStatus
    /// Monthly recurring revenue in the currency's major units, after the discounts in effect (see `basis`).
    package var mrr: Decimal?
    /// How the MRR was told (net, list price, unknown).
    package var basis: MRRBasis
    /// The same before any discount: what a trial would bring (`trial_mrr`).
    package var listMRR: Decimal?
    /// The ISO currency code, upper case.
    package var currency: String?
    /// The plan's name as the provider gives it.
    package var plan: String?
    /// The quantity (seats).
    package var seats: Decimal?
    /// The billing interval label (`month`, `quarter`, `year`, …).
    package var interval: String?
    /// When the trial ends (ISO-8601), while trialing.
    package var trialEndsAt: String?
    /// When it started (ISO-8601).
    package var startedAt: String?
    /// When it ended (ISO-8601), once churned.
    package var endedAt: String?
    /// Orders this subscription's states: a snapshot with a lower version than the one applied changes
    /// nothing (the provider's event time, or its own version counter where it has one).
    package var version: Double
    /// Discounts the payload named by id only, which the provider's discount events may describe later.
    package var pending: PendingDiscounts?

    package init(id: String, status: BillingStatus, mrr: Decimal? = nil, basis: MRRBasis = .net, listMRR: Decimal? = nil,
                currency: String? = nil, plan: String? = nil, seats: Decimal? = nil, interval: String? = nil,
                trialEndsAt: String? = nil, startedAt: String? = nil, endedAt: String? = nil, version: Double,
                pending: PendingDiscounts? = nil) {
        self.pending = pending
        self.id = id
        self.status = status
        self.mrr = mrr
        self.basis = mrr == nil ? .unknown : basis
        self.listMRR = listMRR
        self.currency = currency
        self.plan = plan
        self.seats = seats
        self.interval = interval
        self.trialEndsAt = trialEndsAt
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.version = version
    }

    /// Whether it brings revenue now: active, past due, or cancelling until the cancellation takes effect.
    /// Trials, paused and ended subscriptions do not.
    package var generatesRevenue: Bool {
        switch status {
        case .active, .pastDue, .cancelling: true
        case .trialing, .paused, .churned: false
        }
    }

    /// What it adds to the account's MRR: its MRR while it generates revenue, else 0.
    var contribution: Decimal { generatesRevenue ? (mrr ?? 0) : 0 }
}

/// Discounts a subscription names by id only, and what its MRR is before them: the revenue model finishes
/// the MRR when the provider's discount events describe them, whichever arrives first (README, Revenue semantics).
package struct PendingDiscounts: Sendable, Equatable {
    /// The discount ids, in the order the subscription names them.
    package var ids: [String]
    /// The MRR after the discounts that were known.
    package var partial: Decimal
    /// Months in one billing period, and the quantity: an amount off is per period (and per seat).
    package var periodMonths: Decimal
    /// The quantity (seats).
    package var seats: Decimal
    /// The currency's decimals, to round the result as the MRR sent is rounded.
    package var exponent: Int

    init(ids: [String], partial: Decimal, periodMonths: Decimal, seats: Decimal, exponent: Int) {
        self.ids = ids
        self.partial = partial
        self.periodMonths = periodMonths
        self.seats = seats
        self.exponent = exponent
    }

    init?(_ value: JSONValue?) {
        guard let value, case .array(let list)? = value["ids"] else { return nil }
        let ids = list.compactMap(\.stringValue)
        guard !ids.isEmpty, let partial = value["partial"].flatMap(MRR.decimal),
              case .int(let raw)? = value["exponent"], (0...4).contains(raw) else { return nil }
        let exponent = Int(raw)
        self.ids = ids
        self.partial = partial
        self.periodMonths = value["period_months"].flatMap(MRR.decimal).flatMap { $0 > 0 ? $0 : nil } ?? 1
        self.seats = value["seats"].flatMap(MRR.decimal) ?? 1
        self.exponent = exponent
    }

    var json: JSONValue {
        .object(["ids": .array(ids.map { .string($0) }), "partial": .string(RevenueLedger.text(partial)),
                 "period_months": .string(RevenueLedger.text(periodMonths)), "seats": .string(RevenueLedger.text(seats)),
                 "exponent": .int(Int64(exponent))])
    }
}

/// A discount as the provider's discount event describes it: a percentage, or an amount (major units) off
/// each billing period (per seat when `perSeat`). One that does not recur (`once`) changes no MRR.
package struct KnownDiscount: Sendable, Equatable {
    /// A percentage off.
    package var percent: Decimal?
    /// An amount off each billing period, in major units.
    package var amount: Decimal?
    /// Whether `amount` is off per seat.
    package var perSeat: Bool
    /// False for a discount that applies once (it changes no MRR).
    package var recurs: Bool
    /// The event time it was described at: a later description replaces it, an older one does not.
    package var at: Double

    package init(percent: Decimal? = nil, amount: Decimal? = nil, perSeat: Bool = false, recurs: Bool = true, at: Double) {
        self.percent = percent
        self.amount = amount
        self.perSeat = perSeat
        self.recurs = recurs
        self.at = at
    }
}

/// An account's billing state: the billing customer's, built from all of its subscriptions.
package struct AccountRevenue: Sendable, Equatable {
    /// The status in the revenue model's words.
    package var status: BillingStatus
    /// The sum of the subscriptions' contributions in the account's currency.
    package var mrr: Decimal
    /// False when no payload ever told the amount of any of the account's subscriptions (Lemon Squeezy's carry
    /// no price): `mrr` is then left out rather than sent as a 0 that is not true.
    package var mrrKnown: Bool
    /// How the MRR was told (net, list price, unknown).
    package var basis: MRRBasis
    /// The ISO currency code, upper case.
    package var currency: String?
    /// Whether a subscription generates revenue (MRR above 0, or an amount no payload tells).
    package var isPaying: Bool
    /// The plan's name as the provider gives it.
    package var plan: String?
    /// The quantity (seats).
    package var seats: Decimal?
    /// The billing interval label (`month`, `quarter`, `year`, …).
    package var interval: String?
    /// Subscriptions that have not ended.
    package var liveSubscriptions: Int
    /// What the trialing subscriptions would bring at list price; nil when one is trialing but no amount is known.
    package var trialMRR: Decimal?
    /// Whether a subscription is trialing.
    package var onTrial: Bool
    /// When the trial ends (ISO-8601), while trialing.
    package var trialEndsAt: String?
    /// Whether a subscription's cancellation is scheduled.
    package var cancellationScheduled: Bool
    /// Whether a subscription is paused.
    package var paused: Bool
    /// Whether a subscription is past due.
    package var paymentFailing: Bool
    /// The earliest subscription start (ISO-8601).
    package var customerSince: String?
    /// When the last subscription ended, once every one has (not sent as a trait: see `traits`).
    package var churnedAt: String?
    /// Revenue of subscriptions billed in another currency than the account's, by currency (not in `mrr`).
    package var otherCurrencies: [String: Decimal]
}

/// A movement of an account's MRR, in ChartMogul's words.
package enum MRRMovement: String, Sendable, CaseIterable {
    /// From 0, for a customer that never paid before.
    case new
    /// Up, from a non-zero MRR.
    case expansion
    /// Down, to a non-zero MRR.
    case contraction
    /// Down to 0.
    case churn
    /// From 0, for a customer that paid before.
    case reactivation
    /// A subscription first seen mid-life (it predates the service, or its creation was never received): the
    /// revenue it already brought, not new business.
    case baseline
}

/// One billing customer's subscriptions and the MRR reported for it so far: the state the revenue model keeps
/// (in state memory, per source and customer). Pure: applying the same snapshots in any order, each at most
/// once per version, ends in the same state; the MRR reported moves by exactly the deltas it returns.
package struct RevenueLedger: Sendable, Equatable {
    /// Each subscription's latest state, by id.
    package var subscriptions: [String: SubscriptionSnapshot] = [:]
    /// The account MRR reported so far: the sum of every `mrr_delta` sent.
    package var reportedMRR: Decimal = 0
    /// The account's currency: the first in which it had revenue.
    package var currency: String?
    /// Whether the account ever had revenue (a return from 0 is then a reactivation, not new).
    package var everPaid = false
    /// Discounts the provider's discount events described, by id.
    package var discounts: [String: KnownDiscount] = [:]

    package init() {}

    /// Why a snapshot was not applied.
    package enum Outcome: Sendable, Equatable {
        case applied
        /// The subscription's state is already known as of a later version.
        case stale(appliedVersion: Double)
    }

    /// Applies a subscription's state unless one of a later version is already applied.
    package mutating func apply(_ snapshot: SubscriptionSnapshot) -> Outcome {
        if let known = subscriptions[snapshot.id], known.version > snapshot.version {
            return .stale(appliedVersion: known.version)
        }
        subscriptions[snapshot.id] = snapshot
        return .applied
    }

    /// Learns what a discount is; false when a later description is already known.
    @discardableResult
    package mutating func learn(_ id: String, _ discount: KnownDiscount) -> Bool {
        if let known = discounts[id], known.at > discount.at { return false }
        discounts[id] = discount
        return true
    }

    /// The subscription with its pending discounts taken off, once every one of them is known.
    func resolved(_ subscription: SubscriptionSnapshot) -> SubscriptionSnapshot {
        guard let pending = subscription.pending, pending.ids.allSatisfy({ discounts[$0] != nil }) else { return subscription }
        var net = pending.partial
        for id in pending.ids {
            guard let discount = discounts[id], discount.recurs else { continue }
            if let percent = discount.percent {
                net = net * (100 - percent) / 100
            } else if let amount = discount.amount {
                net -= (discount.perSeat ? amount * pending.seats : amount) / pending.periodMonths
            }
        }
        if net < 0 { net = 0 }
        var rounded = Decimal()
        NSDecimalRound(&rounded, &net, pending.exponent, .plain)
        var out = subscription
        out.mrr = rounded
        out.basis = .net
        return out
    }

    /// The account as its subscriptions make it now.
    package var account: AccountRevenue {
        let all = subscriptions.values.map(resolved).sorted { ($0.startedAt ?? "", $0.id) < ($1.startedAt ?? "", $1.id) }
        let earning = all.filter(\.generatesRevenue)
        // The account's currency: the one it has had revenue in, else its earning or newest subscription's.
        let currency = self.currency ?? earning.first?.currency ?? all.last?.currency
        var mrr = Decimal(0), others: [String: Decimal] = [:]
        var basis = MRRBasis.net
        for subscription in earning {
            if let other = subscription.currency, let currency, other != currency {
                others[other, default: 0] += subscription.contribution
                continue
            }
            mrr += subscription.contribution
            switch (basis, subscription.basis) {
            case (_, .unknown): basis = .unknown
            case (.net, .listPrice): basis = .listPrice
            default: break
            }
        }
        let trialing = all.filter { $0.status == .trialing }
        // The plan is the largest earning subscription's; without one, the newest live one's.
        let lead = earning.max { ($0.contribution, $0.startedAt ?? "") < ($1.contribution, $1.startedAt ?? "") }
            ?? all.filter { $0.status != .churned }.last ?? all.last
        let seatsOf = !earning.isEmpty ? earning : !trialing.isEmpty ? trialing : lead.map { [$0] } ?? []
        let seats = seatsOf.compactMap(\.seats).reduce(into: Decimal?.none) { $0 = ($0 ?? 0) + $1 }
        let live = all.filter { $0.status != .churned }
        let known = everPaid || all.isEmpty || all.contains { $0.mrr != nil }
        return AccountRevenue(
            status: Self.status(of: all),
            mrr: mrr,
            mrrKnown: known,
            basis: !known ? .unknown : earning.isEmpty ? .net : basis,
            currency: currency,
            isPaying: earning.contains { $0.mrr.map { $0 > 0 } ?? true },
            plan: lead?.plan,
            seats: seats,
            interval: lead?.interval,
            liveSubscriptions: live.count,
            trialMRR: trialing.isEmpty ? 0 : trialing.compactMap { $0.listMRR ?? $0.mrr }.reduce(into: Decimal?.none) { $0 = ($0 ?? 0) + $1 },
            onTrial: !trialing.isEmpty,
            trialEndsAt: trialing.compactMap(\.trialEndsAt).min(),
            cancellationScheduled: all.contains { $0.status == .cancelling },
            paused: all.contains { $0.status == .paused },
            paymentFailing: all.contains { $0.status == .pastDue },
            customerSince: all.compactMap(\.startedAt).min(),
            churnedAt: live.isEmpty ? all.compactMap(\.endedAt).max() : nil,
            otherCurrencies: others)
    }

    /// The account's status when its subscriptions differ, by precedence: past due (it needs action) over
    /// active over cancelling over trialing over paused over churned; churned only when every one ended.
    static func status(of subscriptions: [SubscriptionSnapshot]) -> BillingStatus {
        let order: [BillingStatus] = [.pastDue, .active, .cancelling, .trialing, .paused, .churned]
        for status in order where subscriptions.contains(where: { $0.status == status }) { return status }
        return .churned
    }

    /// The MRR movement from what was reported to what the subscriptions make now, if the MRR changed; the
    /// reported MRR moves to it.
    /// `baseline`: the change comes from a subscription first seen mid-life (not created by this event).
    package mutating func move(baseline: Bool = false) -> (previous: Decimal, mrr: Decimal, movement: MRRMovement)? {
        let now = account
        if currency == nil, now.mrr > 0 { currency = now.currency }
        let previous = reportedMRR
        guard now.mrr != previous else { return nil }
        let movement: MRRMovement
        if baseline, now.mrr > previous {
            movement = .baseline
        } else if now.mrr > previous {
            movement = previous == 0 ? (everPaid ? .reactivation : .new) : .expansion
        } else {
            movement = now.mrr == 0 ? .churn : .contraction
        }
        reportedMRR = now.mrr
        if now.mrr > 0 { everPaid = true }
        return (previous, now.mrr, movement)
    }
}

// MARK: Stored form

extension RevenueLedger {
    /// The ledger as state memory keeps it: amounts as exact decimal text.
    package var state: [String: JSONValue] {
        var subs: [String: JSONValue] = [:]
        for (id, s) in subscriptions {
            var o: [String: JSONValue] = ["status": .string(s.status.rawValue), "basis": .string(s.basis.rawValue), "version": .double(s.version)]
            func put(_ key: String, _ value: String?) { if let value { o[key] = .string(value) } }
            put("mrr", s.mrr.map(Self.text)); put("list_mrr", s.listMRR.map(Self.text)); put("currency", s.currency)
            put("plan", s.plan); put("seats", s.seats.map(Self.text)); put("interval", s.interval)
            put("trial_ends_at", s.trialEndsAt); put("started_at", s.startedAt); put("ended_at", s.endedAt)
            if let pending = s.pending { o["pending"] = pending.json }
            subs[id] = .object(o)
        }
        var out: [String: JSONValue] = ["subscriptions": .object(subs), "reported_mrr": .string(Self.text(reportedMRR)), "ever_paid": .bool(everPaid)]
        if let currency { out["currency"] = .string(currency) }
        if !discounts.isEmpty {
            out["discounts"] = .object(discounts.mapValues { d in
                var o: [String: JSONValue] = ["per_seat": .bool(d.perSeat), "recurs": .bool(d.recurs), "at": .double(d.at)]
                if let percent = d.percent { o["percent"] = .string(Self.text(percent)) }
                if let amount = d.amount { o["amount"] = .string(Self.text(amount)) }
                return .object(o)
            })
        }
        return out
    }

    /// A ledger read back from state memory; an empty one for nothing (or something unreadable) stored.
    package init(state: [String: JSONValue]?) {
        self.init()
        guard let state else { return }
        reportedMRR = state["reported_mrr"].flatMap(MRR.decimal) ?? 0
        currency = state["currency"]?.stringValue
        everPaid = state["ever_paid"] == .bool(true)
        guard case .object(let subs)? = state["subscriptions"] else { return }
        for (id, value) in subs {
            guard let status = value["status"]?.stringValue.flatMap(BillingStatus.init(rawValue:)),
                  let version = value["version"]?.doubleValue else { continue }
            subscriptions[id] = SubscriptionSnapshot(
                id: id, status: status, mrr: value["mrr"].flatMap(MRR.decimal),
                basis: value["basis"]?.stringValue.flatMap(MRRBasis.init(rawValue:)) ?? .net,
                listMRR: value["list_mrr"].flatMap(MRR.decimal), currency: value["currency"]?.stringValue,
                plan: value["plan"]?.stringValue, seats: value["seats"].flatMap(MRR.decimal), interval: value["interval"]?.stringValue,
                trialEndsAt: value["trial_ends_at"]?.stringValue, startedAt: value["started_at"]?.stringValue,
                endedAt: value["ended_at"]?.stringValue, version: version, pending: PendingDiscounts(value["pending"]))
        }
        if case .object(let known)? = state["discounts"] {
            for (id, d) in known {
                discounts[id] = KnownDiscount(percent: d["percent"].flatMap(MRR.decimal), amount: d["amount"].flatMap(MRR.decimal),
                                              perSeat: d["per_seat"] == .bool(true), recurs: d["recurs"] != .bool(false),
                                              at: d["at"]?.doubleValue ?? 0)
            }
        }
    }

    static func text(_ value: Decimal) -> String { NSDecimalNumber(decimal: value).stringValue }

    /// The event the model sends for each movement of an account's MRR.
    package static let movementEvent = "MRR Changed"

    /// A version as said in an explanation: a time when it looks like one, else the number.
    static func versionText(_ version: Double) -> String {
        version > 946_684_800 && version < 4_102_444_800 ? Timestamps.iso(Date(timeIntervalSince1970: version)) : Setting<Int>.format(version)
    }

    /// A decimal as JSON: a whole number as an integer, else a number.
    static func json(_ value: Decimal) -> JSONValue {
        let text = Self.text(value)
        if let whole = Int64(text) { return .int(whole) }
        return Double(text).map { .double($0) } ?? .int(0)
    }
}

extension AccountRevenue {
    /// The account traits that state the present (README, Revenue semantics): never a value a later state
    /// contradicts, so none has to be cleared with a null.
    package var traits: [String: JSONValue] {
        var out: [String: JSONValue] = [
            "billing_status": .string(status.rawValue),
            "mrr_basis": .string(basis.rawValue),
            "is_paying_customer": .bool(isPaying),
            "live_subscriptions": .int(Int64(liveSubscriptions)),
            "on_trial": .bool(onTrial),
            "cancellation_scheduled": .bool(cancellationScheduled),
            "paused": .bool(paused),
            "payment_failing": .bool(paymentFailing),
        ]
        if mrrKnown { out["mrr"] = RevenueLedger.json(mrr) }
        if let trialMRR { out["trial_mrr"] = RevenueLedger.json(trialMRR) }
        if let currency { out["currency"] = .string(currency) }
        if let plan { out["plan"] = .string(plan) }
        if let seats { out["seats"] = RevenueLedger.json(seats) }
        if let interval { out["billing_interval"] = .string(interval) }
        if let customerSince { out["customer_since"] = .string(customerSince) }
        // No trial end or churn date: a trait that only some states have would stay behind in Koala after the
        // state is gone (a converted trial still 'ending', a reactivated customer still 'churned'). on_trial and
        // billing_status say it; the Trial Started / Trial Ending / Subscription Churned events carry the dates.
        if !otherCurrencies.isEmpty { out["mrr_other_currencies"] = .object(otherCurrencies.mapValues(RevenueLedger.json)) }
        return out
    }
}

// MARK: From a route's billing block

extension BillingSpec {
    /// The billing customer and the subscription's state the block reads from this webhook, or why it cannot.
    func snapshot(in context: EvaluationContext, eventTime: Date) -> Result<(customer: String, snapshot: SubscriptionSnapshot), BillingProblem> {
        func value(_ key: String) -> JSONValue? {
            expression(key)?.evaluate(in: context).flatMap { Filters.isEmpty($0) ? nil : $0 }
        }
        func text(_ key: String) -> String? { value(key)?.textValue }
        func required(_ key: String) -> Result<String, BillingProblem> {
            guard let text = text(key), Identity.isUsableKey(text) else {
                let raw = expression(key)?.evaluate(in: context)
                return .failure(BillingProblem(text: "billing.\(key) ← \(expression(key).map(\.description) ?? "nothing") gave "
                    + (raw.map { "\(LogText.preview($0)), not a usable id" } ?? "nothing") + " in this webhook"))
            }
            return .success(text)
        }
        let customer: String, id: String
        switch required("customer") { case .success(let c): customer = c; case .failure(let p): return .failure(p) }
        switch required("subscription") { case .success(let s): id = s; case .failure(let p): return .failure(p) }
        guard let statusText = text("status"), let status = BillingStatus(rawValue: statusText) else {
            let raw = expression("status")?.evaluate(in: context)
            return .failure(BillingProblem(text: "billing.status ← \(expression("status").map(\.description) ?? "nothing") gave "
                + (raw.map { LogText.preview($0) } ?? "nothing") + ", not one of " + BillingStatus.allCases.map(\.rawValue).joined(separator: ", ")))
        }
        var version = eventTime.timeIntervalSince1970
        if let raw = value("version") {
            if let number = raw.doubleValue { version = number } else if let date = Timestamps.date(from: raw) { version = date.timeIntervalSince1970 }
        }
        let mrr = value("mrr").flatMap(MRR.decimal)
        let basis = text("mrr_basis").flatMap(MRRBasis.init(rawValue:)) ?? .net
        return .success((customer, SubscriptionSnapshot(
            id: id, status: status, mrr: mrr, basis: basis, listMRR: value("list_mrr").flatMap(MRR.decimal),
            currency: text("currency")?.uppercased(), plan: text("plan"), seats: value("seats").flatMap(MRR.decimal),
            interval: text("billing_interval"), trialEndsAt: text("trial_ends_at"), startedAt: text("started_at"),
            endedAt: text("ended_at"), version: version, pending: PendingDiscounts(value("pending_discounts")))))
    }

    /// The discount a discount-describing block tells (`discount_id` and what it is), or nil when it names none.
    func discount(in context: EvaluationContext, eventTime: Date) -> (customer: String, id: String, discount: KnownDiscount)? {
        func value(_ key: String) -> JSONValue? {
            expression(key)?.evaluate(in: context).flatMap { Filters.isEmpty($0) ? nil : $0 }
        }
        guard let customer = value("customer")?.textValue, Identity.isUsableKey(customer),
              let id = value("discount_id")?.textValue, Identity.isUsableKey(id) else { return nil }
        let percent = value("discount_percent").flatMap(MRR.decimal)
        let amount = value("discount_amount").flatMap(MRR.decimal)
        guard percent != nil || amount != nil else { return nil }
        return (customer, id, KnownDiscount(percent: percent, amount: amount, perSeat: value("discount_per_seat")?.textValue == "true",
                                           recurs: value("discount_recurs")?.textValue != "false", at: eventTime.timeIntervalSince1970))
    }
}

/// Why a billing block could not read a subscription from a webhook (the account message is a dead letter with it).
struct BillingProblem: Error {
    let text: String
}

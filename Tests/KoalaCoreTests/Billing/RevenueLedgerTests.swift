import Foundation
import Testing
@testable import KoalaCore
import KoalaTestSupport

/// The revenue model on its own: one billing customer's subscriptions, its account state, its MRR movements.
@Suite("Revenue model")
struct RevenueLedgerTests {
    func sub(_ id: String, _ status: BillingStatus, _ mrr: Decimal?, at version: Double, list: Decimal? = nil, basis: MRRBasis = .net,
             plan: String? = nil, seats: Decimal? = nil, currency: String = "USD", started: String = "2024-01-01T00:00:00.000Z") -> SubscriptionSnapshot {
        SubscriptionSnapshot(id: id, status: status, mrr: mrr, basis: basis, listMRR: list ?? mrr, currency: currency, plan: plan, seats: seats,
                             interval: "month", startedAt: started, version: version)
    }

    /// Applies snapshots in order, collecting the movements; returns the final ledger.
    func run(_ snapshots: [SubscriptionSnapshot]) -> (RevenueLedger, [(previous: Decimal, mrr: Decimal, movement: MRRMovement)]) {
        var ledger = RevenueLedger()
        var moves: [(previous: Decimal, mrr: Decimal, movement: MRRMovement)] = []
        for snapshot in snapshots {
            guard case .applied = ledger.apply(snapshot) else { continue }
            if let move = ledger.move() { moves.append(move) }
            // Stored and read back between webhooks, as state memory does.
            ledger = RevenueLedger(state: ledger.state)
        }
        return (ledger, moves)
    }

    /// Finding 2: a churned subscription never zeroes an account another subscription still pays for.
    @Test func anAccountIsTheSumOfItsSubscriptions() {
        let (ledger, moves) = run([
            sub("sub_a", .active, 100, at: 1, plan: "Team", seats: 5),
            sub("sub_b", .active, 50, at: 2, plan: "Add-on", seats: 1, started: "2024-02-01T00:00:00.000Z"),
            sub("sub_b", .churned, 50, at: 3, plan: "Add-on", seats: 1, started: "2024-02-01T00:00:00.000Z"),
        ])
        let account = ledger.account
        #expect(account.mrr == 100 && account.status == .active && account.isPaying && account.plan == "Team" && account.seats == 5)
        #expect(account.liveSubscriptions == 1)
        #expect(moves.map(\.movement) == [.new, .expansion, .contraction])
        #expect(moves.map { $0.mrr - $0.previous }.reduce(0, +) == account.mrr, "the deltas sum to the MRR")
    }

    /// Finding 6: trials and paused subscriptions carry no MRR; a trial's would-be revenue is trial_mrr.
    @Test func trialsAndPausesContributeNothing() {
        let (ledger, moves) = run([sub("sub_t", .trialing, 1000, at: 1, plan: "Scale"), sub("sub_p", .paused, 600, at: 2)])
        let traits = ledger.account.traits
        #expect(traits["mrr"] == 0 && traits["trial_mrr"] == 1000 && traits["is_paying_customer"] == false)
        #expect(traits["billing_status"] == "trialing" && traits["on_trial"] == true && traits["paused"] == true)
        #expect(moves.isEmpty)
    }

    /// Finding 3: a state older than the one applied for that subscription changes nothing; another
    /// subscription's older state still applies.
    @Test func aLateStateOfOneSubscriptionChangesNothing() {
        var ledger = RevenueLedger()
        #expect(ledger.apply(sub("sub_a", .cancelling, 600, at: 25, plan: "Starter")) == .applied)
        #expect(ledger.apply(sub("sub_a", .active, 2400, at: 23, plan: "Scale")) == .stale(appliedVersion: 25))
        #expect(ledger.apply(sub("sub_b", .active, 100, at: 10)) == .applied, "another subscription's older state is its own")
        #expect(ledger.account.status == .active && ledger.account.mrr == 700 && ledger.account.cancellationScheduled)
    }

    @Test func statusPrecedenceAndMovements() {
        #expect(RevenueLedger.status(of: [sub("a", .active, 1, at: 1), sub("b", .pastDue, 1, at: 1)]) == .pastDue)
        #expect(RevenueLedger.status(of: [sub("a", .cancelling, 1, at: 1), sub("b", .active, 1, at: 1)]) == .active)
        #expect(RevenueLedger.status(of: [sub("a", .cancelling, 1, at: 1), sub("b", .trialing, 1, at: 1)]) == .cancelling)
        #expect(RevenueLedger.status(of: [sub("a", .paused, 1, at: 1), sub("b", .churned, 1, at: 1)]) == .paused)
        #expect(RevenueLedger.status(of: [sub("a", .churned, 1, at: 1)]) == .churned)
        // Churn, then a comeback: reactivation, not new.
        let (_, moves) = run([sub("a", .active, 100, at: 1), sub("a", .churned, 100, at: 2), sub("b", .active, 80, at: 3)])
        #expect(moves.map(\.movement) == [.new, .churn, .reactivation])
        #expect(moves.map(\.previous) == [0, 100, 0] && moves.map(\.mrr) == [100, 0, 80])
    }

    /// A discount that cannot be known keeps the customer paying and the MRR on the list price, said so.
    @Test func anUnknownDiscountIsListPriceNotNothing() {
        let (ledger, _) = run([sub("a", .active, 100, at: 1, basis: .listPrice)])
        #expect(ledger.account.traits["mrr"] == 100 && ledger.account.traits["mrr_basis"] == "list_price" && ledger.account.isPaying)
        let (metered, _) = run([sub("m", .active, nil, at: 1)])
        #expect(metered.account.traits["mrr"] == nil && metered.account.traits["mrr_basis"] == "unknown" && metered.account.isPaying,
                "a metered subscription is a paying customer whose MRR the payload cannot tell: no mrr is sent, not a false 0")
        // Once an amount was known, mrr is always sent: a trait never stays behind at an older value.
        let (mixed, _) = run([sub("a", .active, 100, at: 1), sub("a", .churned, 100, at: 2), sub("m", .active, nil, at: 3)])
        #expect(mixed.account.traits["mrr"] == 0 && mixed.account.traits["mrr_basis"] == "unknown")
    }

    /// The property: whatever the delivery order (duplicates included), the same final account state, and the
    /// movements sent sum to the final MRR.
    @Test(arguments: 0..<200) func anyOrderEndsInTheSameState(seed: Int) {
        let life = [
            sub("a", .trialing, 100, at: 1, plan: "Team", seats: 5), sub("a", .active, 80, at: 2, list: 100, plan: "Team", seats: 5),
            sub("b", .active, 30, at: 3, plan: "Add-on", started: "2024-03-01T00:00:00.000Z"),
            sub("a", .active, 160, at: 4, list: 200, plan: "Scale", seats: 5), sub("a", .active, 192, at: 5, list: 240, plan: "Scale", seats: 6),
            sub("a", .paused, 192, at: 6, list: 240, plan: "Scale", seats: 6), sub("a", .active, 192, at: 7, list: 240, plan: "Scale", seats: 6),
            sub("a", .cancelling, 192, at: 8, list: 240, plan: "Scale", seats: 6), sub("a", .active, 192, at: 9, list: 240, plan: "Scale", seats: 6),
            sub("a", .pastDue, 192, at: 10, list: 240, plan: "Scale", seats: 6), sub("a", .active, 192, at: 11, list: 240, plan: "Scale", seats: 6),
            sub("b", .churned, 30, at: 12, plan: "Add-on", started: "2024-03-01T00:00:00.000Z"),
        ]
        let (inOrder, _) = run(life)
        var generator = SeededGenerator(seed: UInt64(seed))
        var shuffled = (life + life.filter { _ in Bool.random(using: &generator) }).shuffled(using: &generator)
        if seed == 0 { shuffled = life.reversed() }
        let (ledger, moves) = run(shuffled)
        #expect(ledger.account == inOrder.account)
        #expect(ledger.account.mrr == 192 && ledger.account.status == .active && ledger.account.plan == "Scale" && ledger.account.seats == 6)
        #expect(moves.map { $0.mrr - $0.previous }.reduce(0, +) == ledger.account.mrr)
    }

    /// A discount named by id only, described before or after the subscription: the same MRR either way,
    /// rounded as the MRR sent is (a third of 250.00 a quarter less 15 % is 70.83).
    @Test func aDiscountDescribedLateEndsLikeOneDescribedFirst() {
        var pending = sub("q", .active, Decimal(string: "83.33"), at: 1, basis: .listPrice)
        pending.pending = PendingDiscounts(ids: ["di_1"], partial: Decimal(25000) / 300, periodMonths: 3, seats: 1, exponent: 2)
        let discount = KnownDiscount(percent: 15, at: 2)
        var late = RevenueLedger()
        _ = late.apply(pending)
        let first = late.move()
        late.learn("di_1", discount)
        let second = late.move()
        #expect(first?.mrr == Decimal(string: "83.33") && second?.mrr == Decimal(string: "70.83") && second?.movement == .contraction)
        var early = RevenueLedger()
        early.learn("di_1", discount)
        _ = early.apply(pending)
        _ = early.move()
        #expect(early.account == late.account && late.account.basis == .net)
        #expect(RevenueLedger(state: late.state).account == late.account, "pending discounts and known ones survive storage")
        // An amount off per period, per seat, spread over the period; a `once` discount changes nothing.
        var seats = sub("s", .active, 300, at: 1, basis: .listPrice)
        seats.pending = PendingDiscounts(ids: ["di_2", "di_3"], partial: 300, periodMonths: 12, seats: 3, exponent: 2)
        var ledger = RevenueLedger()
        _ = ledger.apply(seats)
        ledger.learn("di_2", KnownDiscount(amount: 120, perSeat: true, at: 1))
        #expect(ledger.account.mrr == 300 && ledger.account.basis == .listPrice, "one of two discounts still unknown")
        ledger.learn("di_3", KnownDiscount(percent: 50, recurs: false, at: 1))
        #expect(ledger.account.mrr == 270 && ledger.account.basis == .net)
        // An older description of a discount never replaces a newer one.
        let replaced = ledger.learn("di_2", KnownDiscount(amount: 1200, perSeat: true, at: 0))
        #expect(!replaced && ledger.account.mrr == 270)
    }

    @Test func quarterlyIsNotMonthly() {
        #expect(MRR.intervalLabel("month", count: 3) == "quarter")
        #expect(MRR.intervalLabel("month", count: 1) == "month")
        #expect(MRR.intervalLabel("month", count: 6) == "half_year")
        #expect(MRR.intervalLabel("month", count: 12) == "year")
        #expect(MRR.intervalLabel("year", count: 2) == "2 years")
        #expect(MRR.intervalLabel("week", count: nil) == "week")
        #expect(MRR.intervalLabel("fortnight", count: 1) == nil)
    }
}

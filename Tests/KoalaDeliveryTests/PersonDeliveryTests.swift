import Foundation
import Logging
import Testing
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore

/// Delivery decisions as a state machine: results and times in, actions, outcomes and events out. No HTTP, no
/// clock, no sleeps.
@Suite("Delivery decisions for one person")
struct PersonDeliveryTests {
    let t0 = Date(timeIntervalSince1970: 1_000_000)

    /// `count` track messages of one person, accepted `age` seconds before `t0`, in requests of at most `perRequest`.
    func batches(_ count: Int, perRequest: Int, age: TimeInterval = 10, attempts: Int = 0) -> [KoalaBatch] {
        let messages = (1...count).map { n in
            OutboxMessage(seq: Int64(n), messageID: "m\(n)", source: "stripe", route: "r", endpoint: .person, kind: .track,
                          identity: KoalaIdentity(email: "ada@acme-corp.io"), itemJSON: #"{"message_id":"m\#(n)","type":"track"}"#,
                          eventTime: Date(timeIntervalSince1970: Double(n)), createdAt: t0.addingTimeInterval(-age), attempts: attempts)
        }
        let plan = Batcher.plan(messages, maxPerType: perRequest)
        #expect(plan.count == 1)
        return plan[0]
    }

    func person(_ batches: [KoalaBatch], probe: Bool = false, policy: DeliveryPolicy = DeliveryPolicy()) -> PersonDelivery {
        PersonDelivery(batches, destination: .koala, name: "Koala", policy: policy, probe: probe)
    }

    var breaker: CircuitBreaker { CircuitBreaker(policy: .init(failureThreshold: 2, firstProbeInterval: 5, maxProbeInterval: 60)) }

    @Test func everyRequestDeliveredInOrder() {
        let requests = batches(5, perRequest: 2)
        #expect(requests.map(\.seqs) == [[1, 2], [3, 4], [5]])
        var p = person(requests)
        var b = breaker
        var sent: [[Int64]] = []
        while case .send(let batch) = p.next(circuit: b.state) {
            sent.append(batch.seqs)
            let events = p.received(.delivered(status: 200), at: t0, breaker: &b)
            #expect(events.contains(.finished(.person, .delivered, count: batch.seqs.count)))
            #expect(events.filter { if case .latency = $0 { true } else { false } }.count == batch.seqs.count)
        }
        #expect(sent == [[1, 2], [3, 4], [5]])
        #expect(p.outcomes == [.delivered([1, 2], at: t0), .delivered([3, 4], at: t0), .delivered([5], at: t0)])
        #expect(p.next(circuit: b.state) == .done)
    }

    @Test func aRetryHoldsBackThePersonsLaterRequestsWithBackoff() throws {
        var p = person(batches(5, perRequest: 2, attempts: 2))
        var b = breaker
        _ = p.next(circuit: b.state)
        _ = p.received(.delivered(status: 200), at: t0, breaker: &b)
        _ = p.next(circuit: b.state)
        let events = p.received(.retry(.status(503), retryAfter: nil), at: t0, breaker: &b)
        #expect(p.next(circuit: b.state) == .done)
        #expect(p.outcomes.count == 2)
        guard case .retry(let seqs, let next, let error) = p.outcomes[1] else { Issue.record("\(p.outcomes)"); return }
        #expect(seqs == [3, 4, 5])
        #expect(error == "Koala answered 503")
        // Attempt 3: a base of 1 s · 2² = 4 s, jittered into [2, 4].
        #expect(next >= t0.addingTimeInterval(2) && next <= t0.addingTimeInterval(4))
        #expect(events.contains(.finished(.person, .retried, count: 3)))
        #expect(b.consecutiveFailures == 1 && !b.isOpen)
    }

    @Test func retryAfterIsHonouredWhenLongerThanTheBackoff() throws {
        var p = person(batches(1, perRequest: 2))
        var b = breaker
        _ = p.next(circuit: b.state)
        _ = p.received(.retry(.status(429), retryAfter: 120), at: t0, breaker: &b)
        #expect(p.outcomes == [.retry([1], next: t0.addingTimeInterval(120), error: "Koala answered 429")])
        #expect(b.consecutiveFailures == 0)  // a rate limit says nothing about Koala's health
    }

    @Test func pastTheRetryBudgetTheMessagesAreDeadLettered() {
        var policy = DeliveryPolicy()
        policy.retryBudget = 3600
        var p = person(batches(3, perRequest: 2, age: 3601), policy: policy)
        var b = breaker
        _ = p.next(circuit: b.state)
        let events = p.received(.retry(.timeout(10), retryAfter: nil), at: t0, breaker: &b)
        #expect(p.outcomes == [.dead([1, 2, 3], reason: "retry budget exhausted", detail: "timeout after 10.0s", at: t0)])
        #expect(events.contains(.finished(.person, .deadLettered, count: 3)))
        #expect(p.next(circuit: b.state) == .done)
    }

    @Test func aRejectedRequestOfSeveralIsIsolatedThenTheNextRequestGoes() {
        var p = person(batches(5, perRequest: 2))
        var b = breaker
        guard case .send(let first) = p.next(circuit: b.state) else { Issue.record("no request"); return }
        _ = p.received(.rejected(status: 400, body: #"{"error":"Invalid request"}"#), at: t0, breaker: &b)
        #expect(p.next(circuit: b.state) == .isolate(first, status: 400, body: #"{"error":"Invalid request"}"#))
        p.isolated([.delivered([1], at: t0), .dead([2], reason: "koala rejected (400)", detail: "bad", at: t0)], retry: nil)
        guard case .send(let second) = p.next(circuit: b.state) else { Issue.record("no second request"); return }
        #expect(second.seqs == [3, 4])
    }

    @Test func anIsolationThatMeetsAnOutageHoldsBackTheLaterRequests() {
        var p = person(batches(5, perRequest: 2))
        var b = breaker
        _ = p.next(circuit: b.state)
        _ = p.received(.rejected(status: 400, body: "bad"), at: t0, breaker: &b)
        _ = p.next(circuit: b.state)
        let later = t0.addingTimeInterval(30)
        p.isolated([.delivered([1], at: t0), .retry([2], next: later, error: "503")], retry: (later, "503"))
        #expect(p.next(circuit: b.state) == .done)
        #expect(p.outcomes.last == .retry([3, 4, 5], next: later, error: "503"))
    }

    @Test func aRejectedSingleMessageIsDeadLetteredAndTheRestGoOn() {
        var p = person(batches(2, perRequest: 1))
        var b = breaker
        _ = p.next(circuit: b.state)
        let events = p.received(.rejected(status: 422, body: "no"), at: t0, breaker: &b)
        #expect(p.outcomes == [.dead([1], reason: "koala rejected (422)", detail: "no", at: t0)])
        #expect(events.contains(.finished(.person, .deadLettered, count: 1)))
        guard case .send(let next) = p.next(circuit: b.state) else { Issue.record("the next request did not go"); return }
        #expect(next.seqs == [2])
    }

    @Test func aRefusalIsReportedAndShownOnTheBreaker() {
        var p = person(batches(1, perRequest: 1))
        var b = breaker
        _ = p.next(circuit: b.state)
        let events = p.received(.rejected(status: 401, body: "bad key"), at: t0, breaker: &b)
        #expect(events.contains(.refusing))
        #expect(events.contains { if case .log(.critical, let message, _) = $0 { message.contains("wrong KOALA_PUBLIC_API_KEY") } else { false } })
        #expect(b.refusing == "Koala answered 401: bad key")
        #expect(p.outcomes == [.dead([1], reason: "koala rejected (401)", detail: "bad key", at: t0)])
        // The next success announces the recovery once.
        var q = person(batches(1, perRequest: 1))
        _ = q.next(circuit: b.state)
        let recovered = q.received(.delivered(status: 200), at: t0, breaker: &b)
        #expect(recovered.contains { if case .log(.notice, let message, _) = $0 { message == "Koala answers again: sending at full speed" } else { false } })
        #expect(b.refusing == nil)
    }

    @Test func whenTheCircuitOpensTheOtherPeopleWaitForTheProbeButAProbeGoesOn() {
        var b = breaker
        var first = person(batches(1, perRequest: 1))
        var second = person(batches(3, perRequest: 1))
        _ = first.next(circuit: b.state)
        _ = second.next(circuit: b.state)
        _ = first.received(.retry(.connection("refused"), retryAfter: nil), at: t0, breaker: &b)
        let opening = second.received(.retry(.connection("refused"), retryAfter: nil), at: t0, breaker: &b)
        #expect(b.isOpen)
        #expect(opening.contains { if case .log(.error, let message, _) = $0 { message.contains("circuit open") } else { false } })
        // A third person of the same round, not yet sent: held until the probe, not sent.
        var third = person(batches(2, perRequest: 1))
        #expect(third.next(circuit: b.state) == .done)
        #expect(third.outcomes == [.retry([1, 2], next: t0.addingTimeInterval(5), error: "circuit open")])
        // A probe round sends whatever the circuit says.
        var probe = person(batches(1, perRequest: 1), probe: true)
        guard case .send = probe.next(circuit: b.state) else { Issue.record("the probe did not go"); return }
    }
}

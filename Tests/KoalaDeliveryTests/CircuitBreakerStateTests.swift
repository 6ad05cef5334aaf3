import Foundation
import Testing
@testable import KoalaDelivery

/// The circuit breaker as a pure state machine: outcomes and times in, gates and changes out. No HTTP, no sleeps.
@Suite("Circuit breaker states")
struct CircuitBreakerStateTests {
    let t0 = Date(timeIntervalSince1970: 1000)

    func breaker(threshold: Int = 3, first: TimeInterval = 1, max: TimeInterval = 4) -> CircuitBreaker {
        CircuitBreaker(policy: .init(failureThreshold: threshold, firstProbeInterval: first, maxProbeInterval: max))
    }

    @Test func opensAfterAStreakProbesSlowerAndCloses() {
        var b = breaker()
        #expect(b.gate(now: t0) == .send)
        #expect(b.failure("503", at: t0) == .none)
        #expect(b.failure("503", at: t0) == .none)
        #expect(b.failure("503", at: t0) == .opened)
        #expect(b.state == .open(nextProbe: t0.addingTimeInterval(1), probeInterval: 1))
        #expect(b.gate(now: t0.addingTimeInterval(0.5)) == .wait(until: t0.addingTimeInterval(1)))
        #expect(b.gate(now: t0.addingTimeInterval(1)) == .probe)
        // One probe per interval, however often the sender asks.
        #expect(b.gate(now: t0.addingTimeInterval(1.1)) == .wait(until: t0.addingTimeInterval(2)))
        // A request of the round that opened it: counted, not a second opening, and the probe stays where it was.
        #expect(b.failure("503", at: t0.addingTimeInterval(1.1)) == .none)
        #expect(b.state == .open(nextProbe: t0.addingTimeInterval(2), probeInterval: 1))
        #expect(b.consecutiveFailures == 4)
        // Failed probes double the wait, up to the cap.
        #expect(b.failure("503", at: t0.addingTimeInterval(1.2), probe: true) == .none)
        #expect(b.probeInterval == 2)
        #expect(b.nextProbe == t0.addingTimeInterval(3.2))
        _ = b.failure("503", at: t0.addingTimeInterval(3.2), probe: true)
        _ = b.failure("503", at: t0.addingTimeInterval(7.2), probe: true)
        #expect(b.probeInterval == 4)
        #expect(b.success(at: t0.addingTimeInterval(12)) == .recovered)
        #expect(b.state == .closed)
        #expect(b.consecutiveFailures == 0)
        #expect(b.lastError == "503")
        #expect(b.lastSuccess == t0.addingTimeInterval(12))
        #expect(b.gate(now: t0.addingTimeInterval(12)) == .send)
        // Closed again, a success is nothing to announce.
        #expect(b.success(at: t0.addingTimeInterval(13)) == .none)
    }

    @Test func aSuccessBreaksTheStreak() {
        var b = breaker()
        _ = b.failure("timeout", at: t0)
        _ = b.failure("timeout", at: t0)
        #expect(b.success(at: t0) == .none)
        _ = b.failure("timeout", at: t0)
        _ = b.failure("timeout", at: t0)
        #expect(b.state == .closed)
        #expect(b.failure("timeout", at: t0) == .opened)
    }

    @Test func aRefusalIsShownUntilTheNextSuccessAndItsEndIsARecovery() {
        var b = breaker()
        b.refusal("Koala answered 401: bad key")
        #expect(b.refusing == "Koala answered 401: bad key")
        #expect(b.state == .closed)
        #expect(b.gate(now: t0) == .send)
        #expect(b.success(at: t0) == .recovered)
        #expect(b.refusing == nil)
    }

    @Test func theFirstFailedProbeWaitsAtLeastTheFirstInterval() {
        var b = breaker(threshold: 1, first: 5, max: 60)
        #expect(b.failure("503", at: t0) == .opened)
        #expect(b.gate(now: t0.addingTimeInterval(5)) == .probe)
        _ = b.failure("503", at: t0.addingTimeInterval(5), probe: true)
        #expect(b.state == .open(nextProbe: t0.addingTimeInterval(15), probeInterval: 10))
    }
}

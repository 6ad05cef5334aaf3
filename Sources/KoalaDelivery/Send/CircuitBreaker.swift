package import Foundation

/// The circuit breaker as a value: it takes the outcomes of requests and the time, and says what the sender may do
/// next. No clock and no lock of its own (`DeliveryHealth` holds it behind one), so its tests need neither HTTP
/// nor sleeps.
///
/// After `failureThreshold` failures in a row the circuit opens: the sender stops sending and sends one probe
/// message per interval, the interval doubling after each failed probe up to `maxProbeInterval`, while ingest keeps
/// accepting and storing. The first success closes it.
package struct CircuitBreaker: Sendable, Equatable {
    /// Where the circuit stands.
    package enum State: Sendable, Equatable {
        /// Sending normally.
        case closed
        /// Sending stopped after a streak of failures; the next probe is due at `nextProbe`, and `probeInterval`
        /// after that if it fails.
        case open(nextProbe: Date, probeInterval: TimeInterval)
    }

    /// What the sender may do now.
    package enum Gate: Sendable, Equatable {
        /// A full round.
        case send
        /// One message, to learn whether the destination is back.
        case probe
        /// Nothing until the next probe.
        case wait(until: Date)
    }

    /// What an outcome changed, for the one log line each change deserves.
    package enum Change: Sendable, Equatable {
        case none
        /// This failure opened the circuit (not the failures of requests already in flight when it opened).
        case opened
        /// A success after the circuit was open or the destination refused us: sending at full speed again.
        case recovered
    }

    /// When to open and how fast to probe.
    package struct Policy: Sendable, Equatable {
        /// Failures in a row that open the circuit.
        package var failureThreshold: Int
        /// The wait before the first probe after the circuit opens.
        package var firstProbeInterval: TimeInterval
        /// The longest wait between probes, however many failed.
        package var maxProbeInterval: TimeInterval

        package init(failureThreshold: Int = 5, firstProbeInterval: TimeInterval = 1, maxProbeInterval: TimeInterval = 60) {
            self.failureThreshold = failureThreshold
            self.firstProbeInterval = firstProbeInterval
            self.maxProbeInterval = maxProbeInterval
        }
    }

    /// When it opens and how fast it probes.
    package let policy: Policy
    package private(set) var state: State = .closed
    /// Failures without a success between them (requests refused for good do not count).
    package private(set) var consecutiveFailures = 0
    package private(set) var lastError: String?
    /// The destination answering 4xx in a way that means "not for any request" (wrong key, ingest suspended).
    package private(set) var refusing: String?
    package private(set) var lastSuccess: Date?

    package init(policy: Policy = Policy()) { self.policy = policy }

    /// Whether sending has stopped for a streak of failures.
    package var isOpen: Bool { if case .open = state { true } else { false } }

    /// The wait before the probe after the next one; 0 while closed.
    package var probeInterval: TimeInterval { if case .open(_, let interval) = state { interval } else { 0 } }

    /// When the next probe is due; nil while closed.
    package var nextProbe: Date? { if case .open(let next, _) = state { next } else { nil } }

    /// Whether the sender may send at `now`. While open, a due probe moves the next one an interval on, so there is
    /// one probe round per interval however often the sender asks.
    package mutating func gate(now: Date) -> Gate {
        switch state {
        case .closed:
            return .send
        case .open(let next, let interval):
            guard now >= next else { return .wait(until: next) }
            state = .open(nextProbe: now.addingTimeInterval(interval), probeInterval: interval)
            return .probe
        }
    }

    /// The destination accepted a request.
    package mutating func success(at now: Date) -> Change {
        let recovered = isOpen || refusing != nil
        state = .closed
        consecutiveFailures = 0
        refusing = nil
        lastSuccess = now
        return recovered ? .recovered : .none
    }

    /// A failure that says nothing about the request itself (5xx, timeout, connection error). A failed probe
    /// doubles the wait before the next one.
    package mutating func failure(_ reason: String, at now: Date, probe: Bool = false) -> Change {
        consecutiveFailures += 1
        lastError = reason
        switch state {
        case .open(let next, let interval):
            if probe {
                let longer = min(policy.maxProbeInterval, max(policy.firstProbeInterval, interval * 2))
                state = .open(nextProbe: now.addingTimeInterval(longer), probeInterval: longer)
            } else {
                state = .open(nextProbe: next, probeInterval: interval)
            }
            return .none
        case .closed:
            guard consecutiveFailures >= policy.failureThreshold else { return .none }
            state = .open(nextProbe: now.addingTimeInterval(policy.firstProbeInterval), probeInterval: policy.firstProbeInterval)
            return .opened
        }
    }

    /// The destination refuses every request from this service (see `DeliveryHealth.isRefusal`).
    package mutating func refusal(_ description: String) {
        refusing = description
    }
}

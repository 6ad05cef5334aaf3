import Foundation
import KoalaCore
import KoalaStore
import Logging

/// One person's requests of a round as a state machine, in the style of async-http-client's `StateMachine`s: the
/// sender asks it what to do next, does it (a request, or splitting a rejected one), and hands back what the
/// destination answered with the time. Every decision — delivered, retried and when, dead-lettered and why, what
/// the circuit breaker hears, which metric and log line — is made here without I/O or a clock of its own, so its
/// tests feed results and times and need neither HTTP nor sleeps. Effects come back as `Event` values.
struct PersonDelivery {
    /// What the sender does next.
    enum Action: Equatable {
        /// Send this request.
        case send(KoalaBatch)
        /// The destination rejected this request of several messages: send its halves apart to find the bad one.
        case isolate(KoalaBatch, status: Int, body: String)
        /// Nothing more this round: record `outcomes`.
        case done
    }

    /// What the sender reports besides the outcomes, as values: metrics and log lines.
    enum Event: Equatable {
        case finished(KoalaEndpoint, MessageOutcome, count: Int)
        case latency(KoalaEndpoint, seconds: Double)
        /// The destination refuses every request from this service.
        case refusing
        case log(Logger.Level, String, [String: String])
    }

    let destination: Destination
    /// The destination's name in log lines ("Koala", "Segment" …).
    let name: String
    let policy: DeliveryPolicy
    /// A probe round while the circuit is open: it goes on whatever the circuit says.
    let probe: Bool
    private let batches: [KoalaBatch]
    private var index = 0
    private var state = State.sending

    private enum State: Equatable {
        case sending
        case isolating(status: Int, body: String)
        case finished
    }

    /// The outcomes so far, in order; complete once `next` says `.done`.
    private(set) var outcomes: [DeliveryOutcome] = []

    init(_ batches: [KoalaBatch], destination: Destination, name: String, policy: DeliveryPolicy, probe: Bool) {
        self.batches = batches
        self.destination = destination
        self.name = name
        self.policy = policy
        self.probe = probe
    }

    /// The seqs of the current request and every one after it.
    private var rest: [Int64] { batches[index...].flatMap(\.seqs) }

    /// What to do now, given the circuit as it stands.
    mutating func next(circuit: CircuitBreaker.State) -> Action {
        guard index < batches.count else { return .done }
        switch state {
        case .finished:
            return .done
        case .isolating(let status, let body):
            return .isolate(batches[index], status: status, body: body)
        case .sending:
            // The circuit opened while this round was running: hold the rest back until the next probe.
            if !probe, case .open(let nextProbe, _) = circuit {
                outcomes.append(.retry(rest, next: nextProbe, error: "circuit open"))
                state = .finished
                return .done
            }
            return .send(batches[index])
        }
    }

    /// The destination's answer to the request `next` asked for, received at `now`. The circuit breaker hears of it
    /// here (the caller holds it for the call).
    mutating func received(_ result: DeliveryResult, at now: Date, breaker: inout CircuitBreaker) -> [Event] {
        let batch = batches[index]
        var events: [Event] = []
        switch result {
        case .dryRun, .delivered:
            if case .delivered = result, breaker.success(at: now) == .recovered {
                events.append(.log(.notice, "\(name) answers again: sending at full speed", [:]))
            }
            let settled = Self.settled(result, batch, at: now)
            outcomes.append(settled.outcome)
            events += settled.events
            index += 1
        case .retry(let cause, let retryAfter):
            let reason = cause.description
            let remaining = rest
            if !cause.isRateLimit, breaker.failure(reason, at: now, probe: probe) == .opened {
                events.append(.log(.error, "\(name) keeps failing: circuit open, probing at a low rate", [
                    "reason": reason, "consecutive_failures": "\(breaker.consecutiveFailures)", "next_probe_in_s": "\(breaker.probeInterval)",
                ]))
            }
            state = .finished
            if now.timeIntervalSince(batch.oldestCreatedAt) > policy.retryBudget {
                events.append(.log(.error, "retry budget exhausted; dead-lettering", batch.correlation.merging(["reason": reason, "messages": "\(remaining.count)"]) { $1 }))
                outcomes.append(.dead(remaining, reason: "retry budget exhausted", detail: reason, at: now))
                events.append(.finished(batch.endpoint, .deadLettered, count: remaining.count))
            } else {
                let delay = max(policy.backoff(attempt: batch.attempts + 1), retryAfter ?? 0)
                events.append(.log(.warning, "delivery will be retried", batch.correlation.merging([
                    "reason": reason, "retry_in_s": String(format: "%.1f", delay), "messages": "\(remaining.count)",
                ]) { $1 }))
                outcomes.append(.retry(remaining, next: now.addingTimeInterval(delay), error: reason))
                events.append(.finished(batch.endpoint, .retried, count: remaining.count))
            }
        case .rejected(let status, let body):
            if DeliveryHealth.isRefusal(status: status, body: body) {
                breaker.refusal("\(name) answered \(status): \(body.prefix(200))")
                let hint = destination == .koala ? "wrong KOALA_PUBLIC_API_KEY, or ingest suspended" : "wrong or revoked write key, or wrong URL"
                events.append(.refusing)
                events.append(.log(.critical, "\(name) refuses requests from this service (\(hint)); messages go to the dead letters until it accepts again",
                                   batch.correlation.merging(["status": "\(status)", "answer": "\(body.prefix(200))"]) { $1 }))
            } else if batch.messages.count > 1 {
                // One bad message must not take the rest of its request with it.
                events.append(.log(.warning, "\(name) rejected a request of several messages; sending its halves apart to find the one at fault",
                                   batch.correlation.merging(["status": "\(status)", "endpoint": "\(batch.endpoint.path)", "messages": "\(batch.seqs.count)"]) { $1 }))
                state = .isolating(status: status, body: body)
                return events
            }
            events.append(.log(.error, "\(name) rejected a request; dead-lettering",
                               batch.correlation.merging(["status": "\(status)", "endpoint": "\(batch.endpoint.path)", "messages": "\(batch.seqs.count)"]) { $1 }))
            outcomes.append(.dead(batch.seqs, reason: Self.rejectedReason(destination, status), detail: body, at: now))
            events.append(.finished(batch.endpoint, .deadLettered, count: batch.seqs.count))
            index += 1
        }
        return events
    }

    /// What splitting the rejected request found: its outcomes, and whether part of it waits for a retry (then the
    /// person's later requests wait with it, keeping order).
    mutating func isolated(_ found: [DeliveryOutcome], retry: (next: Date, error: String)?) {
        outcomes += found
        if let retry {
            let later = batches[(index + 1)...].flatMap(\.seqs)
            if !later.isEmpty { outcomes.append(.retry(later, next: retry.next, error: retry.error)) }
            state = .finished
        } else {
            state = .sending
            index += 1
        }
    }

    /// A request the destination took (`.delivered`) or that was logged in dry run (`.dryRun`): its outcome,
    /// metrics and latencies.
    static func settled(_ result: DeliveryResult, _ batch: KoalaBatch, at now: Date) -> (outcome: DeliveryOutcome, events: [Event]) {
        if case .dryRun = result {
            return (.dryRun(batch.seqs, at: now), [.finished(batch.endpoint, .dryRun, count: batch.seqs.count)])
        }
        let latencies = batch.acceptedAt.map { Event.latency(batch.endpoint, seconds: now.timeIntervalSince($0)) }
        return (.delivered(batch.seqs, at: now), latencies + [.finished(batch.endpoint, .delivered, count: batch.seqs.count)])
    }

    /// A dead letter's reason when the destination rejected the message.
    static func rejectedReason(_ destination: Destination, _ status: Int) -> String { "\(destination.rawValue) rejected (\(status))" }
}

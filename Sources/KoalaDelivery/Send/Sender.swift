import Foundation
import KoalaCore
import KoalaStore
import Logging
import ServiceLifecycle

/// Background service that drains the outbox into Koala: claims due messages, batches them per person,
/// sends with bounded concurrency, and records each outcome.
public final class Sender: Service, Sendable {
    let store: any WebhookStore
    let client: KoalaClient
    let policy: DeliveryPolicy
    let metrics: RouterMetrics
    /// The circuit breaker and Koala's last answers.
    public let health: DeliveryHealth
    let logger: Logger

    public init(store: any WebhookStore, client: KoalaClient, policy: DeliveryPolicy, metrics: RouterMetrics = RouterMetrics(),
                health: DeliveryHealth = DeliveryHealth(), logger: Logger) {
        self.store = store
        self.client = client
        self.policy = policy
        self.metrics = metrics
        self.health = health
        self.logger = logger
    }

    public func run() async throws {
        if client.isDryRun {
            logger.warning("KOALA_PUBLIC_API_KEY is not set: DRY RUN, requests are logged and marked delivered, nothing is sent to Koala")
        }
        await loop()
        logger.info("sender stopped; anything not confirmed by Koala is sent after the next start")
    }

    /// Rounds until shutdown. A round in flight when shutdown starts finishes (its requests are bounded by
    /// the request timeout), so its outcomes are recorded rather than left to lease expiry.
    func loop() async {
        // Consecutive failed rounds (the store unreachable, say): wait longer each time, up to 5 s, and log
        // the first failure and the recovery rather than every poll.
        var failures = FailureStreak("sender rounds")
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            var worked = false
            do {
                worked = try await runOnce()
                failures.succeeded(logger)
            } catch is CancellationError {
                return
            } catch {
                failures.failed(error, logger)
            }
            if !worked {
                let wait = failures.count == 0 ? policy.pollInterval : min(5, policy.pollInterval * pow(2, Double(min(failures.count, 10))))
                try? await Task.sleep(nanoseconds: UInt64(wait * 1_000_000_000))
            }
        }
    }

    /// One round: claim, send, then record every outcome of the round in one transaction.
    /// Returns whether anything was claimed.
    @discardableResult
    func runOnce() async throws -> Bool {
        let gate = health.mayProceed(now: Date())
        guard gate.proceed else { return false }
        if gate.probe { logger.info("circuit open: probing Koala") }
        // A probe is one message: one request tells whether Koala is back.
        let due = try await store.claimDue(now: Date(), limit: gate.probe ? 1 : policy.claimLimit, lease: policy.lease)
        guard !due.isEmpty else { return false }
        let plan = Batcher.plan(due)
        let outcomes = await withTaskGroup(of: [DeliveryOutcome].self) { group in
            var running = 0
            var all: [DeliveryOutcome] = []
            for batches in plan {
                if running >= policy.concurrency, let done = await group.next() {
                    all += done
                    running -= 1
                }
                group.addTask { await self.deliver(batches, probe: gate.probe) }
                running += 1
            }
            for await done in group { all += done }
            return all
        }
        do {
            try await store.record(outcomes)
        } catch {
            // The leases run out and the messages are sent again; Koala's idempotency absorbs the repeat.
            logger.error("could not record delivery outcomes", metadata: ["error": "\(error)"])
            throw error
        }
        return true
    }

    /// Koala rejected `batch` (a 4xx that is not a refusal of the whole service) and it holds several messages:
    /// its halves are sent apart, in order, and a rejected half is split again, so only the messages Koala
    /// refuses are dead-lettered, each with Koala's answer. For one bad message among n that is at most
    /// 2·⌈log2 n⌉ more requests. A half that meets anything else (a 5xx, a timeout, a refusal) is retried
    /// later as a whole, with every message after it (`retry` says when), so the person's order holds.
    func isolate(_ batch: KoalaBatch, status: Int, body: String) async -> (outcomes: [DeliveryOutcome], retry: (next: Date, error: String)?) {
        let halves = batch.halves()
        guard !halves.isEmpty else {
            logger.error("Koala rejected a message; dead-lettering", metadata: [
                "status": "\(status)", "endpoint": "\(batch.endpoint.path)", "message_id": "\(batch.messageIDs.first ?? "")",
            ])
            metrics.messagesFinished(endpoint: batch.endpoint, outcome: .deadLettered, count: batch.seqs.count)
            return ([.dead(batch.seqs, reason: "koala rejected (\(status))", detail: body, at: Date())], nil)
        }
        var outcomes: [DeliveryOutcome] = []
        for (position, half) in halves.enumerated() {
            let result = await client.send(half)
            metrics.koalaResponse(status: result.metricLabel)
            let now = Date()
            switch result {
            case .delivered:
                health.recordSuccess(now: now)
                outcomes.append(.delivered(half.seqs, at: now))
                for accepted in half.acceptedAt {
                    metrics.deliveryLatency(endpoint: half.endpoint, seconds: now.timeIntervalSince(accepted))
                }
                metrics.messagesFinished(endpoint: half.endpoint, outcome: .delivered, count: half.seqs.count)
            case .rejected(let status, let body) where !DeliveryHealth.isRefusal(status: status, body: body):
                let inner = await isolate(half, status: status, body: body)
                outcomes += inner.outcomes
                if let retry = inner.retry {
                    let later = halves[(position + 1)...].flatMap(\.seqs)
                    if !later.isEmpty { outcomes.append(.retry(later, next: retry.next, error: retry.error)) }
                    return (outcomes, retry)
                }
            case .rejected, .retry:
                let retry = (next: now.addingTimeInterval(policy.backoff(attempt: half.attempts + 1)),
                             error: "while isolating a rejected message, Koala answered \(result.metricLabel)")
                let waiting = halves[position...].flatMap(\.seqs)
                outcomes.append(.retry(waiting, next: retry.next, error: retry.error))
                metrics.messagesFinished(endpoint: half.endpoint, outcome: .retried, count: waiting.count)
                return (outcomes, retry)
            }
        }
        return (outcomes, nil)
    }

    /// Sends one person's batches in order; on the first failure the rest wait with it, keeping order.
    func deliver(_ batches: [KoalaBatch], probe: Bool = false) async -> [DeliveryOutcome] {
        var outcomes: [DeliveryOutcome] = []
        for (index, batch) in batches.enumerated() {
            // The circuit opened while this round was running: hold the rest back until the next probe.
            let snapshot = health.snapshot
            if snapshot.circuitOpen && !probe {
                let remaining = batches[index...].flatMap(\.seqs)
                outcomes.append(.retry(remaining, next: snapshot.nextProbe ?? Date().addingTimeInterval(1), error: "circuit open"))
                return outcomes
            }
            let result = await client.send(batch)
            metrics.koalaResponse(status: result.metricLabel)
            let now = Date()
            switch result {
            case .delivered:
                if health.snapshot.circuitOpen || health.snapshot.refusing != nil {
                    logger.notice("Koala answers again: sending at full speed")
                }
                health.recordSuccess(now: now)
                outcomes.append(.delivered(batch.seqs, at: now))
                for accepted in batch.acceptedAt {
                    metrics.deliveryLatency(endpoint: batch.endpoint, seconds: now.timeIntervalSince(accepted))
                }
                metrics.messagesFinished(endpoint: batch.endpoint, outcome: .delivered, count: batch.seqs.count)
            case .retry(let cause, let retryAfter):
                let reason = cause.description
                let remaining = batches[index...].flatMap(\.seqs)
                if !cause.isRateLimit, health.recordFailure(reason, now: now, probe: probe), !probe {
                    logger.error("Koala keeps failing: circuit open, probing at a low rate", metadata: [
                        "reason": "\(reason)", "consecutive_failures": "\(health.snapshot.consecutiveFailures)",
                        "next_probe_in_s": "\(health.snapshot.probeInterval)",
                    ])
                }
                if now.timeIntervalSince(batch.oldestCreatedAt) > policy.retryBudget {
                    logger.error("retry budget exhausted; dead-lettering", metadata: ["reason": "\(reason)", "messages": "\(remaining.count)"])
                    outcomes.append(.dead(remaining, reason: "retry budget exhausted", detail: reason, at: now))
                    metrics.messagesFinished(endpoint: batch.endpoint, outcome: .deadLettered, count: remaining.count)
                    return outcomes
                }
                let delay = max(policy.backoff(attempt: batch.attempts + 1), retryAfter ?? 0)
                logger.warning("delivery will be retried", metadata: [
                    "reason": "\(reason)", "retry_in_s": "\(String(format: "%.1f", delay))", "messages": "\(remaining.count)",
                ])
                outcomes.append(.retry(remaining, next: now.addingTimeInterval(delay), error: reason))
                metrics.messagesFinished(endpoint: batch.endpoint, outcome: .retried, count: remaining.count)
                return outcomes
            case .rejected(let status, let body):
                if DeliveryHealth.isRefusal(status: status, body: body) {
                    let description = "Koala answered \(status): \(body.prefix(200))"
                    health.recordRefusal(description)
                    metrics.koalaRefusing()
                    logger.critical("Koala refuses requests from this service (wrong KOALA_PUBLIC_API_KEY, or ingest suspended); messages go to the dead letters until it accepts again", metadata: [
                        "status": "\(status)", "answer": "\(body.prefix(200))",
                    ])
                }
                if !DeliveryHealth.isRefusal(status: status, body: body), batch.messages.count > 1 {
                    // One bad message must not take the rest of its request with it.
                    logger.warning("Koala rejected a request of several messages; sending its halves apart to find the one at fault", metadata: [
                        "status": "\(status)", "endpoint": "\(batch.endpoint.path)", "messages": "\(batch.seqs.count)",
                    ])
                    let isolated = await isolate(batch, status: status, body: body)
                    outcomes += isolated.outcomes
                    if let retry = isolated.retry {
                        // Part of it waits for a retry: the person's later requests wait with it, keeping order.
                        let later = batches[(index + 1)...].flatMap(\.seqs)
                        if !later.isEmpty { outcomes.append(.retry(later, next: retry.next, error: retry.error)) }
                        return outcomes
                    }
                    continue
                }
                logger.error("Koala rejected a request; dead-lettering", metadata: [
                    "status": "\(status)", "endpoint": "\(batch.endpoint.path)", "messages": "\(batch.seqs.count)",
                ])
                outcomes.append(.dead(batch.seqs, reason: "koala rejected (\(status))", detail: body, at: now))
                metrics.messagesFinished(endpoint: batch.endpoint, outcome: .deadLettered, count: batch.seqs.count)
            }
        }
        return outcomes
    }
}

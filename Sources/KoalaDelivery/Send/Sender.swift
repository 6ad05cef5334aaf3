import Foundation
package import KoalaCore
package import KoalaStore
package import Logging
import Tracing
import ServiceLifecycle

/// Where a sender delivers, and how.
enum Transport: Sendable {
    /// Koala's API: one person (or account) per request, batched per person.
    case koala(KoalaClient)
    /// A Segment-compatible `/v1/batch`: many people per request.
    case segment(SegmentClient, Destination)

    var destination: Destination {
        switch self {
        case .koala: .koala
        case .segment(_, let destination): destination
        }
    }

    /// For logs.
    var name: String {
        switch destination {
        case .koala: "Koala"
        case .segment: "Segment"
        case .rudderstack: "RudderStack"
        case .segmentCompatible: "the Segment-compatible API"
        }
    }

    func send(_ batch: KoalaBatch) async -> DeliveryResult {
        switch self {
        case .koala(let client): await client.send(batch)
        case .segment(let client, _): await client.send(SegmentMapping.Batch(body: batch.body, messageIDs: batch.messageIDs))
        }
    }
}

/// Background service that drains one destination's outbox entries: claims due messages, batches them
/// (per person for Koala; many people per request, in order, for a Segment-compatible API), sends with
/// bounded concurrency, and records each outcome. Each destination has its own sender, circuit breaker and
/// retries, so one being down never delays another.
package final class Sender: Service, Sendable {
    let store: any OutboxStore
    let transport: Transport
    let policy: DeliveryPolicy
    let metrics: RouterMetrics
    /// The circuit breaker and the destination's last answers.
    package let health: DeliveryHealth
    let logger: Logger
    /// The time, for every decision (tests pass their own).
    let clock: @Sendable () -> Date
    /// Spans of each claim and request, in the traces of the webhooks whose messages they carry (when on).
    let tracing: WebhookTracing

    /// Koala's sender.
    package convenience init(store: any OutboxStore, client: KoalaClient, policy: DeliveryPolicy, metrics: RouterMetrics = RouterMetrics(),
                            health: DeliveryHealth = DeliveryHealth(), tracing: WebhookTracing = .off, logger: Logger) {
        self.init(store: store, transport: .koala(client), policy: policy, metrics: metrics, health: health, tracing: tracing, logger: logger)
    }

    /// The sender of a Segment-compatible destination.
    package convenience init(store: any OutboxStore, segment client: SegmentClient, destination: Destination, policy: DeliveryPolicy,
                            metrics: RouterMetrics = RouterMetrics(), health: DeliveryHealth = DeliveryHealth(), tracing: WebhookTracing = .off,
                            logger: Logger) {
        self.init(store: store, transport: .segment(client, destination), policy: policy, metrics: metrics, health: health, tracing: tracing,
                  logger: logger)
    }

    init(store: any OutboxStore, transport: Transport, policy: DeliveryPolicy, metrics: RouterMetrics, health: DeliveryHealth,
         tracing: WebhookTracing = .off, logger: Logger, clock: @escaping @Sendable () -> Date = Date.init) {
        self.clock = clock
        self.tracing = tracing
        self.store = store
        self.transport = transport
        self.policy = policy
        self.metrics = metrics
        self.health = health
        var logger = logger
        logger[metadataKey: "destination"] = "\(transport.destination.rawValue)"
        self.logger = logger
    }

    /// Which destination this sender delivers to.
    package var destination: Destination { transport.destination }

    package func run() async throws {
        var dryRun = false
        if case .koala(let client) = transport, client.isDryRun {
            dryRun = true
            logger.warning("KOALA_PUBLIC_API_KEY is not set: DRY RUN, requests are logged and their messages recorded as dry_run (never sent; 'replay' queues them once a key is set), nothing is sent to Koala")
        }
        metrics.destinationStarted(transport.destination, dryRun: dryRun)
        await loop()
        logger.info("sender stopped; anything not confirmed by \(transport.name) is sent after the next start")
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
        let probe: Bool
        switch health.gate(now: clock()) {
        case .wait: return false
        case .send: probe = false
        case .probe:
            probe = true
            logger.info("circuit open: probing \(transport.name)")
        }
        // A probe is one message: one request tells whether the destination is back.
        let claimStart = clock()
        var due = try await store.claimDue(now: claimStart, limit: probe ? 1 : policy.claimLimit, lease: policy.lease,
                                           destination: transport.destination)
        guard !due.isEmpty else { return false }
        if tracing.isOn { await traceClaim(&due, from: claimStart, to: clock(), probe: probe) }
        var plan: [[KoalaBatch]]
        var refusedOutcomes: [DeliveryOutcome] = []
        switch transport {
        case .koala:
            plan = Batcher.plan(due)
        case .segment(_, let destination):
            // Many people per request: the requests of a round go one after the other, and a failure holds
            // back every later one, so each person's order holds.
            let requests = SegmentMapping.requests(due, destination: destination)
            plan = requests.batches.isEmpty ? [] : [requests.batches]
            for (message, reason) in requests.refused {
                logger.error("a message cannot be sent to \(transport.name); dead-lettering", metadata: [
                    "message_id": "\(message.messageID)", "source": "\(message.source)", "webhook_id": "\(message.webhookID)", "reason": "\(reason)",
                ])
                refusedOutcomes.append(.dead([message.seq], reason: reason, detail: nil, at: clock()))
                metrics.messagesFinished(endpoint: message.endpoint, outcome: .deadLettered, count: 1, destination: destination)
            }
        }
        let outcomes = await withTaskGroup(of: [DeliveryOutcome].self) { group in
            var running = 0
            var all: [DeliveryOutcome] = []
            for batches in plan {
                if running >= policy.concurrency, let done = await group.next() {
                    all += done
                    running -= 1
                }
                group.addTask { await self.deliver(batches, probe: probe) }
                running += 1
            }
            for await done in group { all += done }
            return all
        }
        do {
            try await store.record(refusedOutcomes + outcomes)
        } catch {
            // The leases run out and the messages are sent again; the destination's idempotency (messageId) absorbs the repeat.
            logger.error("could not record delivery outcomes", metadata: ["error": "\(error)"])
            throw error
        }
        return true
    }

    /// While tracing: gives the claimed messages their webhooks' trace parents, and records in each of those traces
    /// when its messages were claimed (one `outbox.claim` span per webhook, over the claim's time).
    func traceClaim(_ due: inout [OutboxMessage], from start: Date, to end: Date, probe: Bool) async {
        let refs = Set(due.map { WebhookRef(source: $0.source, webhookID: $0.webhookID) })
        // Spans are not worth a failed round: without the store's answer this round has none.
        guard let parents = try? await store.traceParents(of: refs), !parents.isEmpty else { return }
        var counts: [WebhookRef: Int] = [:]
        for index in due.indices {
            let ref = WebhookRef(source: due[index].source, webhookID: due[index].webhookID)
            due[index].traceParent = parents[ref]
            counts[ref, default: 0] += 1
        }
        for (ref, parent) in parents {
            guard let span = tracing.start("outbox.claim", parent: tracing.context(traceParent: parent), at: start) else { continue }
            span.attributes["koala.destination"] = transport.destination.rawValue
            span.attributes["koala.webhook_id"] = ref.webhookID
            span.attributes["koala.messages"] = counts[ref] ?? 0
            span.attributes["koala.round_messages"] = due.count
            if probe { span.attributes["koala.probe"] = true }
            span.end(at: WebhookTracing.Moment(end))
        }
    }

    /// Sends one request; while tracing, in a `<destination>.send` span: a child of the first traced webhook it
    /// carries, linked to the others', holding the destination's answer.
    func send(_ batch: KoalaBatch) async -> DeliveryResult {
        guard tracing.isOn else { return await transport.send(batch) }
        var parents: [String] = [], seen: Set<String> = []
        for message in batch.messages { if let parent = message.traceParent, seen.insert(parent).inserted { parents.append(parent) } }
        guard let first = parents.first,
              let span = tracing.start("\(transport.destination.rawValue).send", parent: tracing.context(traceParent: first), kind: .client) else {
            return await transport.send(batch)
        }
        for other in parents.dropFirst() {
            if let context = tracing.context(traceParent: other) { span.addLink(SpanLink(context: context, attributes: [:])) }
        }
        var webhooks: [String] = [], named: Set<String> = []
        for message in batch.messages where named.insert(message.webhookID).inserted { webhooks.append(message.webhookID) }
        span.attributes["koala.destination"] = transport.destination.rawValue
        span.attributes["koala.endpoint"] = batch.endpoint.rawValue
        span.attributes["koala.messages"] = batch.messages.count
        span.attributes["koala.message_ids"] = batch.messageIDs
        span.attributes["koala.webhook_ids"] = webhooks
        span.attributes["koala.attempt"] = batch.attempts + 1
        let result = await transport.send(batch)
        span.attributes["koala.answer"] = result.metricLabel
        switch result {
        case .delivered(let status):
            span.attributes["http.response.status_code"] = status
        case .dryRun:
            break
        case .rejected(let status, _):
            span.attributes["http.response.status_code"] = status
            span.setStatus(SpanStatus(code: .error, message: "rejected: \(status)"))
        case .retry:
            span.setStatus(SpanStatus(code: .error, message: "retry: \(result.metricLabel)"))
        }
        span.end()
        return result
    }

    /// The destination rejected `batch` (a 4xx that is not a refusal of the whole service) and it holds several
    /// messages: its halves are sent apart, in order, and a rejected half is split again, so only the messages
    /// it refuses are dead-lettered, each with its answer. For one bad message among n that is at most
    /// 2·⌈log2 n⌉ more requests. A half that meets anything else (a 5xx, a timeout, a refusal) is retried
    /// later as a whole, with every message after it (`retry` says when), so the person's order holds.
    func isolate(_ batch: KoalaBatch, status: Int, body: String) async -> (outcomes: [DeliveryOutcome], retry: (next: Date, error: String)?) {
        let halves = batch.halves()
        guard !halves.isEmpty else {
            logger.error("\(transport.name) rejected a message; dead-lettering", metadata: batch.correlation.mapValues { "\($0)" }.merging([
                "status": "\(status)", "endpoint": "\(batch.endpoint.path)",
            ]) { $1 })
            report([.finished(batch.endpoint, .deadLettered, count: batch.seqs.count)])
            return ([.dead(batch.seqs, reason: PersonDelivery.rejectedReason(transport.destination, status), detail: body, at: clock())], nil)
        }
        var outcomes: [DeliveryOutcome] = []
        for (position, half) in halves.enumerated() {
            let result = await send(half)
            metrics.koalaResponse(status: result.metricLabel, destination: transport.destination)
            let now = clock()
            switch result {
            case .dryRun, .delivered:
                if case .delivered = result { health.recordSuccess(now: now) }
                let settled = PersonDelivery.settled(result, half, at: now)
                outcomes.append(settled.outcome)
                report(settled.events)
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
                             error: "while isolating a rejected message, \(transport.name) answered \(result.metricLabel)")
                let waiting = halves[position...].flatMap(\.seqs)
                outcomes.append(.retry(waiting, next: retry.next, error: retry.error))
                report([.finished(half.endpoint, .retried, count: waiting.count)])
                return (outcomes, retry)
            }
        }
        return (outcomes, nil)
    }

    /// Sends one person's batches in order; on the first failure the rest wait with it, keeping order. The
    /// decisions are `PersonDelivery`'s; this does the requests and reports what it says.
    func deliver(_ batches: [KoalaBatch], probe: Bool = false) async -> [DeliveryOutcome] {
        var person = PersonDelivery(batches, destination: transport.destination, name: transport.name, policy: policy, probe: probe)
        while true {
            switch person.next(circuit: health.snapshot.state) {
            case .done:
                return person.outcomes
            case .send(let batch):
                let result = await send(batch)
                metrics.koalaResponse(status: result.metricLabel, destination: transport.destination)
                let now = clock()
                report(health.update { breaker in person.received(result, at: now, breaker: &breaker) })
            case .isolate(let batch, let status, let body):
                let found = await isolate(batch, status: status, body: body)
                person.isolated(found.outcomes, retry: found.retry)
            }
        }
    }

    /// Carries out what the delivery decisions report: metrics, and log lines with their metadata.
    func report(_ events: [PersonDelivery.Event]) {
        for event in events {
            switch event {
            case .finished(let endpoint, let outcome, let count):
                metrics.messagesFinished(endpoint: endpoint, outcome: outcome, count: count, destination: transport.destination)
            case .latency(let endpoint, let seconds):
                metrics.deliveryLatency(endpoint: endpoint, seconds: seconds, destination: transport.destination)
            case .refusing:
                metrics.koalaRefusing(destination: transport.destination)
            case .log(let level, let message, let metadata):
                logger.log(level: level, "\(message)", metadata: metadata.mapValues { .string($0) })
            }
        }
    }
}

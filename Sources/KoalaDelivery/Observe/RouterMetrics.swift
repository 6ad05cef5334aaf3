import Foundation
package import KoalaCore
package import KoalaStore
import Prometheus
import Synchronization

/// How a message's delivery ended (the `outcome` of `koala_router_messages_total`).
package enum MessageOutcome: String, Sendable, CaseIterable {
    case delivered, retried
    case deadLettered = "dead_lettered"
    /// Handled without a project key: logged, not sent.
    case dryRun = "dry_run"
}

/// The service's metrics, in a registry of its own (so several routers in one test process never mix).
/// Names follow Prometheus conventions. No label ever carries a secret, a payload or a raw header: sources
/// and routes come from the rule files, secret labels are environment variable names.
package final class RouterMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    /// The last day's outcomes by source and minute, for the console.
    package let recent = RecentOutcomes()

    package init() {}

    /// A series' labels, up to three, held inline: finding a series on the hot paths allocates nothing (an array
    /// of labels and one of their values did, per call, three times per webhook).
    struct Labels {
        let pairs: ((String, String), (String, String)?, (String, String)?)

        init(_ first: (String, String), _ second: (String, String)? = nil, _ third: (String, String)? = nil) {
            pairs = (first, second, third)
        }

        /// As the registry takes them, for a series made for the first time.
        var list: [(String, String)] { [pairs.0] + [pairs.1, pairs.2].compactMap { $0 } }
    }

    /// A series' identity in the caches below: its name and its label values (the names are fixed per metric).
    struct SeriesKey: Hashable {
        let name: String
        let first: String
        let second: String?
        let third: String?

        init(_ name: String, _ labels: Labels) {
            self.name = name
            first = labels.pairs.0.1
            second = labels.pairs.1?.1
            third = labels.pairs.2?.1
        }
    }

    /// The registry validates names, labels and help text and looks the series up under its lock on every
    /// call; the hot paths (each webhook, each delivered batch) find their series here instead.
    private let counters = Mutex<[SeriesKey: Counter]>([:])
    private let histograms = Mutex<[SeriesKey: DurationHistogram]>([:])

    private func counter(name: String, labels: Labels, help: String) -> Counter {
        let key = SeriesKey(name, labels)
        if let found = counters.withLock({ $0[key] }) { return found }
        let made = registry.makeCounter(name: name, labels: labels.list, help: help)
        counters.withLock { $0[key] = made }
        return made
    }

    private func durationHistogram(name: String, labels: Labels, buckets: [Duration], help: String) -> DurationHistogram {
        let key = SeriesKey(name, labels)
        if let found = histograms.withLock({ $0[key] }) { return found }
        let made = registry.makeDurationHistogram(name: name, labels: labels.list, buckets: buckets, help: help)
        histograms.withLock { $0[key] = made }
        return made
    }

    /// Outcome of one webhook: accepted, duplicate, or the rejection reason.
    package func webhookReceived(source: String, outcome: WebhookOutcome) {
        recent.record(source: source, outcome: outcome)
        counter(
            name: "koala_router_webhooks_received_total",
            labels: Labels(("source", source), ("outcome", outcome.rawValue)),
            help: "Webhooks received, by source and outcome (accepted, duplicate, or why they were refused)."
        ).increment()
    }

    /// A connection closed as it opened: `client_cap` (its client address already held its share).
    package func connectionRefused(reason: String, count: Int64 = 1) {
        counter(
            name: "koala_router_connections_refused_total", labels: Labels(("reason", reason)),
            help: "Connections closed as they opened: client_cap (the client address held KOALA_ROUTER_MAX_CONNECTIONS_PER_CLIENT)."
        ).increment(by: count)
    }

    /// A connection closed because a deadline passed: `idle`, `headers` (slowloris) or `body`.
    package func connectionTimedOut(phase: String, count: Int64 = 1) {
        counter(
            name: "koala_router_connections_timed_out_total", labels: Labels(("phase", phase)),
            help: "Connections closed at a deadline: idle (no request), headers (too slow to send them), body (too slow or short)."
        ).increment(by: count)
    }

    /// Which secret (by its label, never its value) verified a webhook: shows when an old secret is unused.
    package func secretUsed(source: String, label: String) {
        counter(
            name: "koala_router_webhook_secret_verified_total",
            labels: Labels(("source", source), ("secret", label)),
            help: "Webhooks verified, by source and by the label of the secret that matched."
        ).increment()
    }

    /// Counts messages a route queued.
    package func messagesQueued(source: String, route: String, count: Int) {
        guard count > 0 else { return }
        counter(
            name: "koala_router_messages_queued_total", labels: Labels(("source", source), ("route", route)),
            help: "Koala messages produced by routes and queued for delivery."
        ).increment(by: Int64(count))
    }

    /// Counts identity fields left out of a message because they were unusable while another field named the
    /// person (an invalid `profile_id` beside a valid email, say).
    package func identityFieldDropped(source: String, route: String, field: String) {
        counter(
            name: "koala_router_identity_fields_dropped_total", labels: Labels(("source", source), ("route", route), ("field", field)),
            help: "Identity fields left out of messages sent by another field, because they were unusable."
        ).increment()
    }

    /// Counts what a reconcile read and what it had to correct (objects whose state differed from the one
    /// known, so it sent messages): a webhook missed shows here.
    package func reconciled(source: String, objects: Int, corrections: Int) {
        counter(name: "koala_router_reconcile_objects_total", labels: Labels(("source", source)),
                help: "Provider objects read by reconcile.").increment(by: Int64(objects))
        counter(name: "koala_router_reconcile_corrections_total", labels: Labels(("source", source)),
                help: "Objects whose provider state differed from the one known: corrections reconcile sent.").increment(by: Int64(corrections))
    }

    /// Counts messages that reached a final state.
    package func messagesFinished(endpoint: KoalaEndpoint, outcome: MessageOutcome, count: Int, destination: Destination = .koala) {
        guard count >= 0 else { return }
        counter(
            name: "koala_router_messages_total",
            labels: Labels(("destination", destination.rawValue), ("endpoint", endpoint.rawValue), ("outcome", outcome.rawValue)),
            help: "Messages by destination, endpoint and delivery outcome (delivered, retried, dead_lettered, dry_run)."
        ).increment(by: Int64(count))
    }

    /// A destination's sender started: its message outcomes and refusals exist at 0 from now on, so the first dead
    /// letter or refusal shows as an increase (a series that appears at 1 does not: `increase` and the alerts on it
    /// would miss it). A dry run has only `dry_run` messages and no refusals.
    package func destinationStarted(_ destination: Destination, dryRun: Bool = false) {
        let outcomes: [MessageOutcome] = dryRun ? [.dryRun] : [.delivered, .retried, .deadLettered]
        for endpoint in KoalaEndpoint.allCases {
            for outcome in outcomes { messagesFinished(endpoint: endpoint, outcome: outcome, count: 0, destination: destination) }
        }
        if !dryRun { koalaRefusing(destination: destination, count: 0) }
    }

    func koalaResponse(status: String, destination: Destination = .koala) {
        counter(
            name: "koala_router_koala_responses_total", labels: Labels(("destination", destination.rawValue), ("status", status)),
            help: "Answers from Koala (and the other destinations) by HTTP status (or timeout / connection_error)."
        ).increment()
    }

    static let latencyBuckets: [Duration] = [
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5),
        .seconds(15), .seconds(60), .seconds(300), .seconds(1800), .seconds(3600), .seconds(21600), .seconds(86400),
    ]

    /// Time from a webhook's acceptance to Koala's confirmation of one of its messages.
    func deliveryLatency(endpoint: KoalaEndpoint, seconds: Double, destination: Destination = .koala) {
        durationHistogram(
            name: "koala_router_delivery_latency_seconds", labels: Labels(("destination", destination.rawValue), ("endpoint", endpoint.rawValue)),
            buckets: Self.latencyBuckets,
            help: "Accepted to confirmed by the destination, per message."
        ).recordNanoseconds(Int64(max(0, seconds) * 1_000_000_000))
    }

    /// Queue state, refreshed at each scrape from the store.
    package func queue(_ stats: QueueStats) {
        for (state, value) in [("pending", stats.pending), ("waiting", stats.waiting), ("dead", stats.dead)] {
            registry.makeGauge(name: "koala_router_queue_messages", labels: [("state", state)],
                               help: "Messages in the store by state (pending, waiting for identity, dead letters).").set(to: Double(value))
        }
        registry.makeGauge(name: "koala_router_queue_oldest_pending_age_seconds",
                           help: "Age of the oldest message not yet delivered (0 when none).").set(to: stats.oldestPendingAge)
    }

    /// Each destination's circuit, refreshed at each scrape: 1 while sending has stopped after a streak of failures
    /// (one probe per interval), with the streak's length.
    package func circuit(destination: Destination, _ breaker: CircuitBreaker) {
        registry.makeGauge(name: "koala_router_circuit_open", labels: [("destination", destination.rawValue)],
                           help: "1 while a destination's circuit is open (sending stopped after failures in a row, one probe per interval), 0 while closed.")
            .set(to: breaker.isOpen ? 1 : 0)
        registry.makeGauge(name: "koala_router_delivery_consecutive_failures", labels: [("destination", destination.rawValue)],
                           help: "Failed requests in a row to a destination (0 after a success).")
            .set(to: Double(breaker.consecutiveFailures))
    }

    /// The CPU time already counted in `process_cpu_seconds_total`.
    private let countedCPU = Mutex<Double>(0)

    /// The process's CPU, memory and file descriptors under the names every Prometheus client uses, refreshed at
    /// each scrape.
    package func process(_ stats: ProcessStats) {
        let cpu = registry.makeCounter(name: "process_cpu_seconds_total", labels: [], help: "Total user and system CPU time spent in seconds.")
        let delta = countedCPU.withLock { counted -> Double in
            let delta = max(0, stats.cpuSeconds - counted)
            counted = max(counted, stats.cpuSeconds)
            return delta
        }
        if delta > 0 { cpu.increment(by: delta) }
        registry.makeGauge(name: "process_resident_memory_bytes", labels: [], help: "Resident memory size in bytes.").set(to: stats.residentBytes)
        registry.makeGauge(name: "process_virtual_memory_bytes", labels: [], help: "Virtual memory size in bytes.").set(to: stats.virtualBytes)
        registry.makeGauge(name: "process_open_fds", labels: [], help: "Number of open file descriptors.").set(to: stats.openFileDescriptors)
        if let limit = stats.maxFileDescriptors {
            registry.makeGauge(name: "process_max_fds", labels: [], help: "Maximum number of open file descriptors.").set(to: limit)
        }
        registry.makeGauge(name: "process_start_time_seconds", labels: [], help: "Start time of the process since unix epoch in seconds.")
            .set(to: stats.startTime)
    }

    func koalaRefusing(destination: Destination = .koala, count: Int64 = 1) {
        counter(
            name: "koala_router_koala_refusals_total", labels: Labels(("destination", destination.rawValue)),
            help: "Answers meaning the destination refuses every request (401/403/404, or Koala's 'ingest suspended')."
        ).increment(by: count)
    }

    /// Counts a rule reload and its result (`count` 0 makes the series, so the first reload shows as an increase).
    package func rulesReloaded(success: Bool, count: Int64 = 1) {
        counter(
            name: "koala_router_rules_reloads_total", labels: Labels(("result", success ? "success" : "failure")),
            help: "Rule table reloads, by result; a failed reload keeps the previous table."
        ).increment(by: count)
    }

    /// `koala_router_rules_info{version="…"} 1` for the table in service.
    package func rulesVersion(_ version: String) {
        let previous = currentVersion.withLock { old -> String? in
            defer { old = version }
            return old
        }
        if let previous, previous != version {
            registry.makeGauge(name: "koala_router_rules_info", labels: [("version", previous)], help: "The rule table version in service.").set(to: 0.0)
        }
        registry.makeGauge(name: "koala_router_rules_info", labels: [("version", version)], help: "The rule table version in service.").set(to: 1.0)
    }

    private let currentVersion = Mutex<String?>(nil)

    /// The Prometheus text exposition.
    package func exposition() -> String {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }
}

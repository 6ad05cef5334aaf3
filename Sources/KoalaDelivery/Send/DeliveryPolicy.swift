package import Foundation
package import KoalaCore

/// How the sender delivers: batching delay, concurrency, leases, retries. Its settings are declared here,
/// once; `RouterConfiguration` reads them.
package struct DeliveryPolicy: Sendable, Configurable {
    /// How long a new message waits so a burst for one person coalesces into one request.
    package var linger: TimeInterval = 0.1
    /// How often the outbox is polled when idle.
    var pollInterval: TimeInterval = 0.05
    /// Messages leased per round.
    var claimLimit: Int = 1000
    /// A lease outlives any request: request timeout plus margin.
    package var lease: TimeInterval = 60
    /// Requests in flight at once (each to a different person).
    var concurrency: Int = 16
    /// First retry delay; doubles per attempt up to `maxBackoff`, with jitter.
    var initialBackoff: TimeInterval = 1
    /// Longest retry delay.
    var maxBackoff: TimeInterval = 600
    /// After this long since a message was accepted, it goes to the dead letters.
    var retryBudget: TimeInterval = 72 * 3600
    /// How long one request to Koala may take.
    package var requestTimeout: TimeInterval = 10

    package init() {}

    package static let section = "koala_router"

    /// Documented in README's configuration table; defaults are the values above.
    package static var settings: [Setting<DeliveryPolicy>] {
        [
            .number("linger_ms", \.linger, in: 0...60000, scale: 0.001,
                    help: "How long a new message waits so a burst for one person goes out in one request"),
            .integer("concurrency", \.concurrency, in: 1...1024, help: "Requests to Koala in flight at once, each for a different person"),
            .number("request_timeout_s", \.requestTimeout, in: 0.1...600, help: "How long one request to Koala may take"),
            .number("lease_s", \.lease, in: 1...3600, help: "How long a claimed message is held before another sender may take it"),
            .number("initial_backoff_s", \.initialBackoff, in: 0.001...3600, help: "First retry delay; doubles per attempt, with jitter"),
            .number("max_backoff_s", \.maxBackoff, in: 0.01...86400, help: "Longest retry delay"),
            .number("retry_budget_h", \.retryBudget, in: 0.001...8760, scale: 3600,
                    help: "After this long since it was accepted, a message that still fails is dead-lettered"),
        ]
    }

    package func validate() throws(SettingConflict) {
        if lease <= requestTimeout {
            throw SettingConflict(setting: "KOALA_ROUTER_LEASE_S",
                                  problem: "the lease (\(Setting<Self>.format(lease)) s) must outlast KOALA_ROUTER_REQUEST_TIMEOUT_S (\(Setting<Self>.format(requestTimeout)) s), or a slow request is sent twice")
        }
    }

    /// Backoff for the n-th failed attempt (1-based): exponential with "equal jitter".
    func backoff(attempt: Int) -> TimeInterval {
        let exponent = min(max(attempt - 1, 0), 30)
        let base = min(maxBackoff, initialBackoff * pow(2, Double(exponent)))
        return base / 2 + Double.random(in: 0...(base / 2))
    }
}

import Foundation
import KoalaCore
import KoalaDelivery
import KoalaStore
import Logging
import ServiceLifecycle

/// Background service for identity memory: a message whose `recall` missed waits; when the memory entry
/// arrives it is routed again from the stored webhook (same message id) and queued, and when the wait runs
/// out it goes to the dead letters with reason `identity unresolved`.
package final class IdentityResolver: Service, Sendable {
    let store: any WaitingStore
    let rules: RulesHolder
    let linger: TimeInterval
    let interval: TimeInterval
    let logger: Logger

    init(store: any WaitingStore, rules: RulesHolder, linger: TimeInterval, interval: TimeInterval = 0.5, logger: Logger) {
        self.store = store
        self.rules = rules
        self.linger = linger
        self.interval = interval
        self.logger = logger
    }

    package func run() async throws {
        await cancelWhenGracefulShutdown {
            var failures = FailureStreak("identity resolver rounds")
            while !Task.isCancelled {
                var worked = false
                do {
                    worked = try await self.runOnce()
                    failures.succeeded(self.logger)
                } catch is CancellationError {
                    return
                } catch {
                    failures.failed(error, self.logger)
                }
                if !worked { try? await Task.sleep(nanoseconds: UInt64(self.interval * 1_000_000_000)) }
            }
        }
    }

    /// Settles every waiting message that can be settled now. Returns whether there were any.
    @discardableResult
    func runOnce(now: Date = Date()) async throws -> Bool {
        let waiting = try await store.claimWaiting(now: now, limit: 500)
        guard !waiting.isEmpty else { return false }
        let table = rules.table
        for (key, group) in Dictionary(grouping: waiting, by: { "\($0.source)\u{0}\($0.webhookID)" }) {
            _ = key
            let first = group[0]
            guard let source = table.sources[first.source],
                  let webhook = try await store.storedWebhook(source: first.source, webhookID: first.webhookID) else {
                for message in group {
                    try await store.resolveWaiting(message.seq, .dead(reason: "source '\(first.source)' no longer exists"), linger: linger, at: now)
                }
                continue
            }
            let router = WebhookRouter(source: source)
            let memory = try await store.recall(source: first.source, keys: router.recallKeys(webhook))
            // Identities as remembered now, states as they were when the webhook was accepted: its
            // transitions were decided then, against the state before it.
            let routing = router.routing(webhook, memory: webhook.memoryAsRouted(memory))
            let routed = Dictionary(routing.messages.map { ($0.messageID, $0) }, uniquingKeysWith: { a, _ in a })
            for message in group {
                guard let fresh = routed[message.messageID] else {
                    // Most likely a route skipped as out of order: a later event's state arrived while this waited.
                    let skipped = routing.results.first { !$0.matched && $0.reason.hasPrefix(WebhookRouter.outOfOrderPrefix) }
                    try await store.resolveWaiting(message.seq, .dead(reason: skipped?.reason ?? "the current rules no longer produce this message"),
                                                   linger: linger, at: now)
                    continue
                }
                switch fresh.disposition {
                case .dead(let reason):
                    try await store.resolveWaiting(message.seq, .dead(reason: reason), linger: linger, at: now)
                case .wait where now >= message.deadline:
                    try await store.resolveWaiting(message.seq,
                        .dead(reason: "identity unresolved: nothing remembered under \(message.waitingFor.namespace) '\(message.waitingFor.key)'"),
                        linger: linger, at: now)
                case .wait(let key):
                    try await store.resolveWaiting(message.seq, .stillWaiting(for: key), linger: linger, at: now)
                case .send:
                    var metadata: Logger.Metadata = ["message_id": "\(message.messageID)", "source": "\(message.source)", "webhook_id": "\(message.webhookID)"]
                    if let traceID = WebhookTracing.traceID(of: webhook.traceParent) { metadata["trace_id"] = "\(traceID)" }
                    logger.debug("identity resolved", metadata: metadata)
                    try await store.resolveWaiting(message.seq, .released(fresh), linger: linger, at: now)
                }
            }
        }
        return true
    }
}

package import Foundation
package import KoalaCore
import KoalaDelivery
package import KoalaStore

/// Re-routes stored webhooks through the current rule table and compares with what was routed before.
/// Message ids are deterministic, so unchanged outputs are harmless to send again; the report says what
/// is new, changed and gone before anything is queued (`dryRun`).
package struct Replay: Sendable {
    /// Which stored webhooks to route again, and whether to queue the result.
    package struct Options: Sendable {
        var source: String
        var since: Date
        var until: Date
        var route: String?
        var dryRun: Bool
        /// Whose entries to compare and queue (each destination has its own).
        var destination: Destination

        package init(source: String, since: Date, until: Date, route: String? = nil, dryRun: Bool, destination: Destination = .koala) {
            self.source = source
            self.since = since
            self.until = until
            self.route = route
            self.dryRun = dryRun
            self.destination = destination
        }
    }

    /// A message that differs from what was routed before.
    package struct Change: Sendable, Equatable {
        /// New message, changed content, or a message the rules no longer produce.
        package enum Kind: String, Sendable { case new, changed, removed }
        /// What changed.
        package let kind: Kind
        /// The webhook.
        package let webhookID: String
        /// The message.
        package let messageID: String
        /// The route.
        package let route: String
        /// For changed messages already delivered: Koala keeps the version it first accepted for a message id.
        package let note: String?
    }

    /// What a replay found and queued.
    package struct Report: Sendable {
        /// Webhooks routed again.
        package var webhooks = 0
        /// Messages that did not change.
        package var unchanged = 0
        /// Every change, in webhook order.
        package var changes: [Change] = []
        /// Messages queued.
        package var queued = 0
        /// Unchanged messages that were handled in dry run (logged, never sent), queued like dead letters.
        package var neverSent = 0
        /// Changes by kind.
        package var count: [Change.Kind: Int] {
            Dictionary(grouping: changes, by: \.kind).mapValues(\.count)
        }
    }

    let store: any OperatorStore & WaitingStore
    let table: RuleTable

    package init(store: any OperatorStore & WaitingStore, table: RuleTable) {
        self.store = store
        self.table = table
    }

    package func run(_ options: Options) async throws -> Report {
        guard let source = table.sources[options.source] else {
            throw RuleTableErrors(errors: [RuleError(file: "", line: 0, column: 0, message: "unknown source '\(options.source)'",
                                                     hint: "sources: \(table.sources.keys.sorted().joined(separator: ", "))")])
        }
        let router = WebhookRouter(source: source)
        var report = Report()
        var cursor: StoredCursor?
        while true {
            let page = try await store.storedWebhooks(source: options.source, since: options.since, until: options.until, after: cursor, limit: 200)
            guard let last = page.last else { break }
            cursor = StoredCursor(receivedAt: last.receivedAt, webhookID: last.webhookID)
            for webhook in page {
                report.webhooks += 1
                let memory = try await store.recall(source: options.source, keys: router.recallKeys(webhook))
                // States as at ingest; only the messages this destination gets (a route may name its destinations).
                var routed = router.routing(webhook, memory: webhook.memoryAsRouted(memory), destinations: [options.destination]).messages
                var before = try await store.storedMessages(source: options.source, webhookID: webhook.webhookID, destination: options.destination)
                if let only = options.route {
                    routed = routed.filter { $0.route == only }
                    before = before.filter { $0.value.route == only }
                }
                var toQueue: [KoalaMessage] = []
                for message in routed {
                    guard let old = before.removeValue(forKey: message.messageID) else {
                        report.changes.append(Change(kind: .new, webhookID: webhook.webhookID, messageID: message.messageID, route: message.route, note: nil))
                        toQueue.append(message)
                        continue
                    }
                    if old.itemJSON == message.item.encoded() {
                        report.unchanged += 1
                        if old.state == .dryRun { report.neverSent += 1 }
                        if old.state == .dead || old.state == .dryRun { toQueue.append(message) }
                    } else {
                        let note = old.state == .delivered
                            ? "already delivered: \(options.destination == .koala ? "Koala" : options.destination.rawValue) keeps the version it first accepted for this message id"
                            : old.state == .dryRun ? "handled in dry run before: never sent" : nil
                        report.changes.append(Change(kind: .changed, webhookID: webhook.webhookID, messageID: message.messageID, route: message.route, note: note))
                        if old.state != .delivered { toQueue.append(message) }
                    }
                }
                for (id, old) in before {
                    report.changes.append(Change(kind: .removed, webhookID: webhook.webhookID, messageID: id, route: old.route,
                                                 note: old.state == .delivered ? "already delivered; \(options.destination == .koala ? "Koala" : options.destination.rawValue) keeps it" : nil))
                }
                if !options.dryRun, !toQueue.isEmpty {
                    report.queued += try await store.enqueueReplay(toQueue, at: Date())
                }
            }
        }
        return report
    }
}

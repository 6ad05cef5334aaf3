package import Foundation
import KoalaCore
package import Logging
import ServiceLifecycle

/// Background service that prunes raw webhooks (they hold personal data) and delivered messages after
/// the retention period. Dead letters, and webhooks whose messages are still pending or waiting, stay.
package final class Retention: Service, Sendable {
    let store: any OperatorStore
    let keep: TimeInterval
    let interval: TimeInterval
    let logger: Logger

    package init(store: any OperatorStore, keep: TimeInterval, interval: TimeInterval = 600, logger: Logger) {
        self.store = store
        self.keep = keep
        self.interval = interval
        self.logger = logger
    }

    package func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.runOnce()
                try? await Task.sleep(nanoseconds: UInt64(self.interval * 1_000_000_000))
            }
        }
    }

    func runOnce(now: Date = Date()) async {
        do {
            let report = try await store.prune(before: now.addingTimeInterval(-keep))
            if report.webhooks + report.messages > 0 {
                logger.info("retention: pruned", metadata: ["webhooks": "\(report.webhooks)", "delivered_messages": "\(report.messages)"])
            }
        } catch {
            logger.error("retention run failed; will try again", metadata: ["error": "\(error)"])
        }
    }
}

import Foundation
import KoalaCore
package import KoalaDelivery
package import KoalaStore
package import Logging
import ServiceLifecycle

extension Backfill {
    /// A backfill over `store` that routes with `rules` to the destinations `configuration` names, counting into
    /// `metrics` (for `koala-router backfill`/`reconcile`, and the schedule of `serve`).
    package static func make(configuration: RouterConfiguration, rules: RulesHolder, store: any WebhookStore,
                            metrics: RouterMetrics = RouterMetrics(), logger: Logger) throws -> Backfill {
        let destinations = [Destination.koala] + (try configuration.segmentDestinations()).map(\.destination)
        let ingest = Ingest(rules: rules, store: store, linger: configuration.delivery.linger, identityWait: configuration.identityWait,
                            destinations: destinations, metrics: metrics, logger: logger)
        return Backfill(ingest: ingest, store: store, logger: logger)
    }
}

/// `KOALA_ROUTER_RECONCILE_INTERVAL_H`: `serve` reconciles, every interval, each source named like a provider
/// whose API key is set (`stripe` with `STRIPE_API_KEY` …). The first run is one interval after start; a run that
/// fails is logged and tried again at the next interval. Each run's summary is kept in the store for the console.
struct ReconcileSchedule: Service {
    let backfill: Backfill
    let configuration: RouterConfiguration
    let logger: Logger

    func run() async throws {
        let interval = configuration.reconcileInterval
        guard interval > 0 else { return }
        // A shutdown ends the wait, or the run in progress (its pages done are stored; the next run continues).
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await Task.sleep(for: .milliseconds(Int64(interval * 1000)))
                await reconcileAll()
            }
        }
    }

    func reconcileAll() async {
        let table = backfill.ingest.rules.table
        for provider in configuration.providersWithKeys where table.sources[provider.rawValue] != nil {
            do {
                let api = try configuration.providerAPI(provider)
                var options = Backfill.Options(source: provider.rawValue, provider: provider, apiKey: api.key, apiURL: api.url, mode: .reconcile)
                options.concurrency = 2
                let summary = try await backfill.run(options)
                logger.info("reconciled", metadata: [
                    "source": "\(provider.rawValue)", "objects": "\(summary.total)", "corrections": "\(summary.corrections)",
                    "messages": "\(summary.messages)", "seconds": "\(Int(summary.seconds))",
                ])
            } catch is CancellationError {
                return
            } catch {
                logger.error("reconcile failed; next try at the next interval", metadata: ["source": "\(provider.rawValue)", "error": "\(error)"])
            }
        }
    }
}

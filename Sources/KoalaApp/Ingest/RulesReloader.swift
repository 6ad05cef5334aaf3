import Foundation
import KoalaCore
import KoalaDelivery
import KoalaStore
import Logging
import ServiceLifecycle
import UnixSignals

/// Reloads the rule table on SIGHUP and when a rule file changes. The new table is validated as a whole
/// and swapped in atomically; a broken one is refused, logged, counted, shown in `/readyz`, and the old
/// table keeps serving.
package final class RulesReloader: Service, Sendable {
    let holder: RulesHolder
    let directory: String
    let environment: [String: String]
    /// The free-mail list the reloaded rules route with (the one loaded at start).
    let freeMail: FreeMailDomains
    let pollInterval: TimeInterval
    let metrics: RouterMetrics
    let logger: Logger
    let handleSignals: Bool

    init(holder: RulesHolder, directory: String, environment: [String: String], freeMail: FreeMailDomains = .shipped,
         pollInterval: TimeInterval, metrics: RouterMetrics, logger: Logger, handleSignals: Bool = true) {
        self.holder = holder
        self.directory = directory
        self.environment = environment
        self.freeMail = freeMail
        self.pollInterval = pollInterval
        self.metrics = metrics
        self.logger = logger
        self.handleSignals = handleSignals
    }

    package func run() async throws {
        metrics.rulesVersion(holder.table.version)
        metrics.rulesReloaded(success: true, count: 0)
        metrics.rulesReloaded(success: false, count: 0)
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                if self.handleSignals {
                    group.addTask {
                        let signals = await UnixSignalsSequence(trapping: .sighup)
                        for await _ in signals {
                            self.logger.info("SIGHUP: reloading rules")
                            self.reload()
                        }
                    }
                }
                if self.pollInterval > 0 {
                    group.addTask { await self.watch() }
                }
                // A service that returns early stops the whole service group: stay until shutdown.
                group.addTask { try? await gracefulShutdown() }
                await group.waitForAll()
            }
        }
    }

    /// Polls the rule files' names, sizes and modification times (works on every filesystem and with
    /// Kubernetes ConfigMap symlink swaps, where inotify on the file misses the change).
    /// A change of names, sizes or times is confirmed by the rule files' contents before reloading: a listing
    /// taken in the middle of an editor's write-and-rename shows a change twice for one new file.
    func watch() async {
        var last = fingerprint(), lastContents = contents()
        while !Task.isCancelled {
            try? await Task.sleep(nanoseconds: UInt64(pollInterval * 1_000_000_000))
            let now = fingerprint()
            if now != last {
                last = now
                let changed = contents()
                guard changed != lastContents else { continue }
                lastContents = changed
                logger.info("rule files changed: reloading")
                reload()
            }
        }
    }

    /// The names and bytes of the files the loader reads (`*.yaml`, `*.yml`), following symlinks.
    func contents() -> [String: Data] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var out: [String: Data] = [:]
        for name in names where name.hasSuffix(".yaml") || name.hasSuffix(".yml") {
            out[name] = FileManager.default.contents(atPath: (directory as NSString).appendingPathComponent(name)) ?? Data()
        }
        return out
    }

    func fingerprint() -> String {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
        return names.map { name -> String in
            let path = (directory as NSString).appendingPathComponent(name)
            let attributes = (try? FileManager.default.attributesOfItem(atPath: path)) ?? [:]
            let size = (attributes[.size] as? NSNumber)?.intValue ?? -1
            let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            return "\(name):\(size):\(modified)"
        }.joined(separator: "|")
    }

    /// Loads and validates the whole table; swaps it in only if it is entirely valid. Returns whether it did.
    @discardableResult
    func reload() -> Bool {
        do {
            let table = try RuleLoader(environment: environment, freeMail: freeMail).load(directory: directory)
            let before = holder.table
            holder.replace(with: table)
            metrics.rulesReloaded(success: true)
            metrics.rulesVersion(table.version)
            // Only what changed: a warning the previous table had too (a source still disabled) was logged then.
            let known = Set(before.warnings.map(\.description))
            for warning in table.warnings where !known.contains(warning.description) { logger.warning("\(warning)") }
            let knownErrors = Set(before.secretErrors)
            for error in table.secretErrors where !knownErrors.contains(error) { logger.error("\(error)") }
            func enabled(_ source: SourceDefinition?) -> Bool {
                if case .enabled? = source?.state { return true }
                return false
            }
            for (name, source) in table.sources.sorted(by: { $0.key < $1.key })
            where enabled(source) && before.sources[name] != nil && !enabled(before.sources[name]) {
                logger.info("source '\(name)' is enabled now")
            }
            logger.info("rules reloaded", metadata: ["version": "\(table.version)", "previous": "\(before.version)"])
            return true
        } catch {
            holder.recordReloadFailure(error.description)
            metrics.rulesReloaded(success: false)
            logger.error("rules reload refused; the previous table keeps serving", metadata: [
                "version": "\(holder.table.version)", "errors": "\(error.description)",
            ])
            return false
        }
    }
}

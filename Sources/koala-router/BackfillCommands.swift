import ArgumentParser
import Foundation
import KoalaApp
import KoalaCore
import KoalaStore
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// What `backfill` and `reconcile` share.
struct BackfillOptions: ParsableArguments {
    @Argument(help: "The source (rule file) whose routes take the snapshots: stripe, paddle, chargebee, lemonsqueezy, clerk or workos.")
    var source: String
    @Option(name: .long, help: "Whose API to read, when the source is named otherwise (stripe, paddle, chargebee, lemonsqueezy, clerk, workos).")
    var provider: ProviderKind?
    @Flag(name: .long, help: "Route and print the requests that would be sent; store nothing.")
    var dryRun = false
    @Option(name: .long, help: "Only objects changed at or after this time (Stripe: created): ISO-8601, or an age such as 30d.")
    var since: String?
    @Option(name: .long, help: "Objects routed at once (and an organization's members read at once).")
    var concurrency = 4
    @Option(name: .long, help: "Requests per second to the provider (default: under its documented limit).")
    var requestsPerSecond: Double?
    @Flag(name: .long, help: "Start from the first page, not where an interrupted run stopped.")
    var restart = false
    @Option(name: .long, help: "Seconds one request to the provider may take before it is tried again.")
    var requestTimeout: Double = 60
    @OptionGroup var routesOption: RoutesOption
    @Option(name: .long, help: "SQLite file or postgres:// URL (env KOALA_ROUTER_DATABASE, default data/koala-router.sqlite).")
    var database: String?
    @OptionGroup var settings: SettingsOption

    func run(_ mode: Backfill.Mode) async throws {
        let config = try await settings.resolve(["KOALA_ROUTER_ROUTES": routesOption.routes, "KOALA_ROUTER_DATABASE": database])
        guard let provider = provider ?? ProviderKind(rawValue: source) else {
            throw ValidationError("'\(source)' is not a provider's name: say which API to read with --provider (\(ProviderKind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard (1...64).contains(concurrency) else { throw ValidationError("--concurrency takes 1...64") }
        let api: (key: String, url: String)
        do { api = try config.providerAPI(provider) } catch {
            FileHandle.standardError.write(Data("koala-router: \(error)\n".utf8))
            throw ExitCode(2)
        }
        var options = Backfill.Options(source: source, provider: provider, apiKey: api.key, apiURL: api.url, mode: mode)
        options.dryRun = dryRun
        options.concurrency = concurrency
        options.restart = restart
        guard requestTimeout > 0, requestTimeout <= 600 else { throw ValidationError("--request-timeout takes seconds in 0...600") }
        options.requestTimeout = requestTimeout
        if let requestsPerSecond {
            guard requestsPerSecond > 0, requestsPerSecond <= 1000 else { throw ValidationError("--requests-per-second takes a number in 0...1000") }
            options.requestsPerSecond = requestsPerSecond
        }
        if let since {
            guard let date = parseTimeArgument(since) else { throw ValidationError("--since takes ISO-8601 or an age such as 30d, got '\(since)'") }
            options.since = date
        }
        let table = try config.loadRules()
        var logger = Logger(label: "koala-router.\(mode.rawValue)")
        logger.logLevel = .warning
        let terminal = isatty(STDERR_FILENO) == 1
        let printer = ProgressPrinter(terminal: terminal)
        let summary: Backfill.Summary
        do {
            var printed: (@Sendable (String) -> Void)?
            if dryRun { printed = { (text: String) in print(text) } }
            let progress: @Sendable (Backfill.Progress) -> Void = { printer.show($0) }
            summary = try await config.withStore { (store: any WebhookStore) async throws -> Backfill.Summary in
                let backfill = try Backfill.make(configuration: config, rules: RulesHolder(table), store: store, logger: logger)
                return try await backfill.run(options, progress: progress, printed: printed)
            }
        } catch {
            printer.finish()
            FileHandle.standardError.write(Data("koala-router \(mode.rawValue) \(source): \(error)\n".utf8))
            if !dryRun { FileHandle.standardError.write(Data("the pages done are stored: run the same command again to continue where it stopped\n".utf8)) }
            throw ExitCode(1)
        }
        printer.finish()
        print(Self.describe(summary, mode: mode, source: source, dryRun: dryRun))
    }

    static func describe(_ s: Backfill.Summary, mode: Backfill.Mode, source: String, dryRun: Bool) -> String {
        func n(_ value: Int) -> String {
            let formatter = NumberFormatter()
            formatter.numberStyle = .decimal
            formatter.locale = Locale(identifier: "en_US")
            return formatter.string(from: NSNumber(value: value)) ?? String(value)
        }
        let kinds = s.objects.sorted { $0.key < $1.key }.map { "\(n($0.value)) \($0.key)" }.joined(separator: ", ")
        let rate = s.seconds > 0 ? Int(Double(s.total) / s.seconds) : s.total
        var lines = ["\(mode.rawValue) \(source)\(dryRun ? " (dry run: nothing stored)" : ""): \(n(s.total)) objects\(kinds.isEmpty ? "" : " (\(kinds))") in \(String(format: "%.1f", s.seconds)) s (\(n(rate))/s)"]
        if !s.resumed.isEmpty { lines.append("  continued from the stored cursor of: \(s.resumed.joined(separator: ", "))") }
        lines.append("  \(dryRun ? "would send" : "queued") \(n(s.messages)) message(s) to \(n(s.accounts.count)) account(s) and \(n(s.people.count)) person(s); "
            + "\(n(s.waiting)) waiting for an identity, \(n(s.deadLettered)) dead-lettered")
        if mode == .reconcile { lines.append("  corrections: \(n(s.corrections)) object(s) whose state differed from the one known") }
        if !dryRun { lines.append("  snapshots stored: \(n(s.stored))") }
        for (why, count) in s.skipped.sorted(by: { $0.value > $1.value }) { lines.append("  skipped \(n(count)): \(why)") }
        lines.append("  \(n(s.requests)) request(s) in \(n(s.pages)) page(s); \(n(s.rateLimited)) answered 429 (waited as told), \(n(s.retried)) retried")
        if !dryRun, s.messages > 0 { lines.append("  the running service delivers them (or the next koala-router serve)") }
        return lines.joined(separator: "\n")
    }
}

/// Progress on standard error: one line rewritten in place on a terminal, a line every 5 seconds otherwise.
final class ProgressPrinter: @unchecked Sendable {
    let terminal: Bool
    private let lock = NSLock()
    private var lastLine = Date.distantPast
    private var shown = false

    init(terminal: Bool) { self.terminal = terminal }

    func show(_ p: Backfill.Progress) {
        lock.lock()
        defer { lock.unlock() }
        var line = "\(p.phase): \(p.done)"
        if let total = p.total, total > 0 {
            line += " of \(total) (\(min(100, p.done * 100 / total))%)"
            if p.rate > 0, total > p.done {
                let eta = Int(Double(total - p.done) / p.rate)
                line += String(format: ", ETA %d:%02d", eta / 60, eta % 60)
            }
        }
        line += String(format: ", %.0f/s", p.rate)
        if terminal {
            FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
            shown = true
        } else if Date().timeIntervalSince(lastLine) >= 5 {
            FileHandle.standardError.write(Data("\(line)\n".utf8))
            lastLine = Date()
        }
    }

    func finish() {
        lock.lock()
        defer { lock.unlock() }
        if shown { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        shown = false
    }
}

struct BackfillCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backfill",
        abstract: "Read every customer (or user and organization) from a provider's API and set their state in Koala.",
        discussion: """
            Each object becomes a snapshot (snapshot.customer, snapshot.subscription …) that the source's rule file
            routes like a webhook: account traits, visitor traits and identity memory, with no lifecycle event (a
            subscription first seen so is a baseline MRR movement). The messages go to the store; the running
            service (or the next serve) delivers them. Running it again sends nothing new; after an interruption
            it continues from the last page stored (--restart: from the first).

            Settings: <PROVIDER>_API_KEY (a read-only key) and <PROVIDER>_API_URL, e.g. STRIPE_API_KEY and
            STRIPE_API_URL (default https://api.stripe.com). README: Backfill and reconcile.

            Examples:
              STRIPE_API_KEY=rk_live_… koala-router backfill stripe --dry-run | head -40
              STRIPE_API_KEY=rk_live_… koala-router backfill stripe
              koala-router backfill clerk --since 30d
            """)

    @OptionGroup var options: BackfillOptions

    func run() async throws { try await options.run(.backfill) }
}

struct ReconcileCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reconcile",
        abstract: "Compare a provider's current state with the state known and send only the corrections.",
        discussion: """
            The same read as backfill. Objects whose outcome the state known already says send nothing; the others
            are corrections (a webhook that was missed, or came while the router was down), counted in
            koala_router_reconcile_corrections_total and shown in the console's overview. serve runs it on a
            schedule with KOALA_ROUTER_RECONCILE_INTERVAL_H (e.g. 24).
            """)

    @OptionGroup var options: BackfillOptions

    func run() async throws { try await options.run(.reconcile) }
}

extension ProviderKind: ExpressibleByArgument {}

import Foundation
import KoalaCore
import KoalaDelivery
import KoalaStore

/// The rules in use and their last reload, as the overview and the rules page show them (`rulesStatus` partial).
struct RulesStatus {
    /// A refused reload: when, and the loader's error.
    struct Refused {
        let refusedAt: TimeView?
        let error: String
    }

    let version: String
    let loadedAt: TimeView?
    /// The rule files' folder, on the rules page.
    let folder: String?
    let reloadRefused: Refused?
    let reloadLoaded: TimeView?
    let noReload: Bool

    init(_ rules: RulesHolder, folder: String? = nil, now: Date) {
        version = rules.table.version
        loadedAt = TimeView.of(rules.loadedAt, now: now)
        self.folder = folder
        let attempt = TimeView.of(rules.lastReloadAttempt, now: now)
        reloadRefused = rules.lastReloadError.map { Refused(refusedAt: attempt, error: $0) }
        reloadLoaded = reloadRefused == nil ? attempt : nil
        noReload = reloadRefused == nil && attempt == nil
    }

    static let partial = """
        <dt>Version</dt><dd><code>{{version}}</code>, loaded {{#loadedAt}}{{> time}}{{/loadedAt}}{{^loadedAt}}never{{/loadedAt}}</dd>\
        {{#folder}}<dt>Folder</dt><dd><code>{{.}}</code></dd>{{/folder}}<dt>Last reload</dt><dd>\
        {{#reloadRefused}}<span class="bad">refused</span> {{#refusedAt}}{{> time}}{{/refusedAt}}{{^refusedAt}}never{{/refusedAt}}; \
        the rules above stay in use:<pre>{{error}}</pre>{{/reloadRefused}}\
        {{#reloadLoaded}}<span class="ok">loaded</span> {{> time}}{{/reloadLoaded}}{{#noReload}}none since start{{/noReload}}</dd>
        """
}

/// The overview: sources, rules, delivery, queue, backfill and reconcile, the session.
struct OverviewView: ConsoleView {
    /// A source's row.
    struct SourceRow {
        let name: String
        let disabled: String?
        let lastStored: TimeView?
        let lastHour: Int
        let lastDay: Int
        let refusedHour: Refusals
        let refusedDay: Refusals
    }

    /// A destination's row: its circuit, last success and last error.
    struct DeliveryRow {
        let destination: String
        let open: Bool
        let refusing: String?
        let nextProbe: TimeView?
        /// nil when there is no failure in a row.
        let failures: Int?
        let lastSuccess: TimeView?
        let lastError: String?
    }

    /// The outbox's counts.
    struct Queue {
        let pending: Int
        let oldestPending: String
        let waiting: Int
        let dead: Int
        let hasDead: Bool
    }

    /// The last reconcile of each source and any backfill or reconcile still holding a cursor.
    struct Backfills {
        /// A source's last reconcile.
        struct Reconcile {
            let source: String
            let at: TimeView
            let objects: String
            let corrections: String
            let flagged: Bool
            let messages: String
        }

        /// A run that stopped before its last page, or is running.
        struct Running {
            let name: String
            let next: String
            let runAt: TimeView
        }

        let reconciles: [Reconcile]
        let hasReconciles: Bool
        let running: [Running]
    }

    static let template = "overview"
    static let text = """
        {{<layout}}{{$content}}<h1>Overview</h1>
        <section aria-labelledby="sources"><h2 id="sources">Sources</h2><div class="scroll"><table class="rows">
        <thead><tr><th scope="col">Source</th><th scope="col">State</th><th scope="col">Last webhook stored</th>\
        <th scope="col">Stored, hour / day</th><th scope="col">Refused, last hour</th><th scope="col">Refused, last day</th></tr></thead><tbody>
        {{#sources}}<tr><th scope="row">{{name}}</th>\
        <td data-label="State">{{#disabled}}<span class="bad">disabled</span>: {{.}}{{/disabled}}{{^disabled}}<span class="ok">enabled</span>{{/disabled}}</td>\
        <td data-label="Last webhook stored">{{#lastStored}}{{> time}}{{/lastStored}}{{^lastStored}}never{{/lastStored}}</td>\
        <td data-label="Stored, hour / day">{{lastHour}} / {{lastDay}}</td>\
        <td data-label="Refused, last hour">{{#refusedHour}}{{> refusals}}{{/refusedHour}}</td>\
        <td data-label="Refused, last day">{{#refusedDay}}{{> refusals}}{{/refusedDay}}</td></tr>
        {{/sources}}</tbody></table></div>
        <p class="muted">Stored counts come from the database (every replica). Refusals are counted by this replica since it started\
        {{#unknownSources}}; {{.}} requests in the last day named no known source.{{/unknownSources}}{{^unknownSources}}.{{/unknownSources}}</p></section>
        <section aria-labelledby="rules"><h2 id="rules">Rules</h2><dl>{{#rules}}{{> rulesStatus}}{{/rules}}</dl></section>
        <section aria-labelledby="delivery"><h2 id="delivery">Delivery</h2><div class="scroll"><table class="rows">
        <thead><tr><th scope="col">Destination</th><th scope="col">Circuit</th><th scope="col">Last success</th><th scope="col">Last error</th></tr></thead><tbody>
        {{#deliveries}}<tr><th scope="row">{{destination}}</th>\
        <td data-label="Circuit">{{#open}}<span class="bad">open</span>{{/open}}{{^open}}<span class="ok">closed</span>{{/open}}\
        {{#refusing}}: refusing, {{.}}{{/refusing}}{{#nextProbe}}; next probe {{> time}}{{/nextProbe}}{{#failures}}; {{.}} failures in a row{{/failures}}</td>\
        <td data-label="Last success">{{#lastSuccess}}{{> time}}{{/lastSuccess}}{{^lastSuccess}}never{{/lastSuccess}}</td>\
        <td data-label="Last error">{{#lastError}}{{.}}{{/lastError}}{{^lastError}}<span class="muted">none</span>{{/lastError}}</td></tr>
        {{/deliveries}}</tbody></table></div></section>
        <section aria-labelledby="queue"><h2 id="queue">Queue</h2>\
        {{#queue}}<dl><dt>Pending</dt><dd>{{pending}}</dd><dt>Oldest pending</dt><dd>{{oldestPending}}</dd>\
        <dt>Waiting for an identity</dt><dd>{{waiting}}</dd><dt>Dead letters</dt><dd{{#hasDead}} class="warn"{{/hasDead}}>{{dead}}\
        {{#hasDead}} (<a href="/console/dead-letters">see them</a>){{/hasDead}}</dd></dl>{{/queue}}\
        {{^queue}}<p class="bad">The store did not answer: see /readyz and the logs.</p>{{/queue}}</section>
        <section aria-labelledby="reconcile"><h2 id="reconcile">Backfill and reconcile</h2>\
        {{#backfills}}{{^hasReconciles}}<p class="muted">No reconcile yet. <code>koala-router reconcile SOURCE</code> compares a provider's current state with \
        the one known and sends only corrections; <code>KOALA_ROUTER_RECONCILE_INTERVAL_H</code> runs it on a schedule.</p>{{/hasReconciles}}\
        {{#hasReconciles}}<div class="scroll"><table class="rows"><thead><tr><th scope="col">Source</th><th scope="col">Last reconcile</th>\
        <th scope="col">Objects read</th><th scope="col">Corrections</th><th scope="col">Messages</th></tr></thead><tbody>
        {{#reconciles}}<tr><th scope="row">{{source}}</th><td data-label="Last reconcile">{{#at}}{{> time}}{{/at}}</td>\
        <td data-label="Objects read">{{objects}}</td>\
        <td data-label="Corrections">{{#flagged}}<span class="warn">{{corrections}}</span> (webhooks were missed){{/flagged}}{{^flagged}}{{corrections}}{{/flagged}}</td>\
        <td data-label="Messages">{{messages}}</td></tr>
        {{/reconciles}}</tbody></table></div>{{/hasReconciles}}\
        {{#running}}<p>{{name}}: stopped or running, next page after <code>{{next}}</code> ({{#runAt}}{{> time}}{{/runAt}}); the same command continues it.</p>{{/running}}\
        {{/backfills}}{{^backfills}}<p class="bad">The store did not answer.</p>{{/backfills}}</section>
        <section aria-labelledby="sessions"><h2 id="sessions">Sessions</h2>\
        <p>Signed in {{#issued}}{{> time}}{{/issued}}; this session ends {{#expires}}{{> time}}{{/expires}}. \
        Signing out everywhere ends every console session on every replica, this one too (after a lost laptop, or when the token may have leaked: then change it too).</p>
        <form method="post" action="/console/sign-out-everywhere"><input type="hidden" name="csrf" value="{{layout.csrf}}">\
        <button type="submit">Sign out everywhere</button></form></section>{{/content}}{{/layout}}
        """

    let layout: Layout
    let sources: [SourceRow]
    /// Requests in the last day that named no known source; nil when none.
    let unknownSources: Int?
    let rules: RulesStatus
    let deliveries: [DeliveryRow]
    /// nil when the store did not answer.
    let queue: Queue?
    /// nil when the store did not answer.
    let backfills: Backfills?
    let issued: TimeView
    let expires: TimeView
}

/// Refusals by reason, most first (`refusals` partial): `signature mismatch 3, stale timestamp 1`, or `none`.
struct Refusals {
    /// One reason and its count.
    struct Count {
        let reason: String
        let count: Int
    }

    let counts: [Count]

    static let partial = """
        {{#counts}}{{^first()}}, {{/first()}}<span class="bad">{{reason}}</span> {{count}}{{/counts}}{{^counts}}<span class="muted">none</span>{{/counts}}
        """
}

extension Console {
    func overview(session: ConsoleSessions.Session, now: Date = Date()) async throws -> OverviewView {
        let table = data.rules.table
        let names = table.sources.keys.sorted()
        let activity = (try? await data.store.sourceActivity(sources: names, now: now)) ?? [:]
        let sources = names.map { name -> OverviewView.SourceRow in
            var disabled: String?
            if case .disabled(let reason) = table.sources[name]!.state {
                let prefix = "source '\(name)' is disabled: "
                disabled = reason.hasPrefix(prefix) ? String(reason.dropFirst(prefix.count)) : reason
            }
            let stored = activity[name] ?? SourceActivity()
            return .init(name: name, disabled: disabled, lastStored: TimeView.of(stored.lastReceived, now: now), lastHour: stored.lastHour,
                         lastDay: stored.lastDay, refusedHour: refusals(name, within: 3600, now: now),
                         refusedDay: refusals(name, within: 86400, now: now))
        }
        let unknown = data.recent.counts(source: "unknown", within: 86400, now: now)[.unknownSource] ?? 0
        let deliveries = data.deliveries.map { delivery -> OverviewView.DeliveryRow in
            let health = delivery.health.snapshot
            return .init(destination: delivery.destination.rawValue, open: health.isOpen, refusing: health.refusing,
                         nextProbe: TimeView.of(health.nextProbe, now: now),
                         failures: health.consecutiveFailures > 0 ? health.consecutiveFailures : nil,
                         lastSuccess: TimeView.of(health.lastSuccess, now: now), lastError: health.lastError)
        }
        let queue = (try? await data.store.queueStats(now: now)).map {
            OverviewView.Queue(pending: $0.pending, oldestPending: $0.pending > 0 ? HTML.age($0.oldestPendingAge) : "none",
                               waiting: $0.waiting, dead: $0.dead, hasDead: $0.dead > 0)
        }
        return OverviewView(layout: .signedIn("Overview", current: "/console", csrf: session.csrf), sources: sources,
                            unknownSources: unknown > 0 ? unknown : nil, rules: RulesStatus(data.rules, now: now), deliveries: deliveries,
                            queue: queue, backfills: await backfills(now: now),
                            issued: TimeView(session.issuedAt, now: now), expires: TimeView(session.expires, now: now))
    }

    /// The last reconcile of each source (from the store: every replica's and the CLI's) and any backfill or
    /// reconcile that stopped before its last page (its cursor is still stored); nil when the store did not answer.
    func backfills(now: Date) async -> OverviewView.Backfills? {
        guard let entries = try? await data.store.progress(prefix: "") else { return nil }
        let prefix = Backfill.lastReconcileName("")
        let reconciles = entries.filter { $0.name.hasPrefix(prefix) }.map { entry -> OverviewView.Backfills.Reconcile in
            let summary = (try? JSONValue.parse(Array(entry.value.utf8))) ?? .null
            let corrections = summary["corrections"]?.textValue ?? "?"
            return .init(source: String(entry.name.dropFirst(prefix.count)), at: TimeView(Date(timeIntervalSince1970: entry.updatedAt), now: now),
                         objects: summary["objects"]?.textValue ?? "?", corrections: corrections,
                         flagged: corrections != "0" && corrections != "?", messages: summary["messages"]?.textValue ?? "?")
        }
        let running = entries.filter { $0.name.hasPrefix("backfill:") || $0.name.hasPrefix("reconcile:") }.map {
            OverviewView.Backfills.Running(name: $0.name, next: $0.value, runAt: TimeView(Date(timeIntervalSince1970: $0.updatedAt), now: now))
        }
        return .init(reconciles: reconciles, hasReconciles: !reconciles.isEmpty, running: running)
    }

    /// This replica's refusals for `source` in the last `seconds`, most first.
    func refusals(_ source: String, within seconds: TimeInterval, now: Date) -> Refusals {
        let counts = data.recent.counts(source: source, within: seconds, now: now)
            .filter { $0.key != .accepted && $0.key != .duplicate && $0.value > 0 }
        return Refusals(counts: counts.sorted { ($0.value, $1.key.rawValue) > ($1.value, $0.key.rawValue) }
            .map { Refusals.Count(reason: $0.key.rawValue.replacingOccurrences(of: "_", with: " "), count: $0.value) })
    }
}

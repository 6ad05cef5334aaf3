import AsyncHTTPClient
package import Foundation
import HTTPTypes
package import KoalaCore
import KoalaDelivery
package import KoalaStore
package import Logging
import Synchronization

/// `backfill` and `reconcile`: read a provider's current objects through its list API and route each as a
/// snapshot (`snapshot.customer`, `snapshot.subscription` …) through the same rule files and revenue model as
/// webhooks, into the same store, where the sender (of `serve`, in this process or another) delivers them.
///
/// A snapshot states what is: no route of a lifecycle moment takes it, and a subscription first seen through one
/// is a `baseline` movement. Its id is the object's id and a digest of what it leads to, so reading an unchanged
/// object again is a duplicate, and one whose outcome the state known already says is not stored at all; a
/// snapshot older than the state known (its version is the time it was read) changes nothing.
package struct Backfill: Sendable {
    /// Reading every object to set state, or comparing with the state known to correct what webhooks missed.
    package enum Mode: String, Sendable {
        /// `koala-router backfill`.
        case backfill
        /// `koala-router reconcile`, or the schedule of `serve`.
        case reconcile
    }

    /// What to read and how.
    package struct Options: Sendable {
        /// The source (rule file) whose routes take the snapshots.
        package var source: String
        /// Whose API to read.
        package var provider: ProviderKind
        /// The read-only API key.
        package var apiKey: String
        /// The API's base URL.
        package var apiURL: String
        /// Backfill or reconcile.
        package var mode: Mode = .backfill
        /// Route and print, store nothing.
        package var dryRun = false
        /// Only objects changed (Stripe: created) at or after this time.
        package var since: Date?
        /// Objects routed at once, and sub-requests at once.
        package var concurrency = 4
        /// Requests per second to the provider.
        package var requestsPerSecond: Double
        /// Start from the first page even when a stored cursor says where the last run stopped.
        package var restart = false
        /// Seconds one request may take before it is abandoned and tried again.
        package var requestTimeout: TimeInterval = 60
        /// The read time of each page (tests set it to play an old snapshot).
        package var clock: @Sendable () -> Date = { Date() }

        /// Options with the provider's default rate.
        package init(source: String, provider: ProviderKind, apiKey: String, apiURL: String, mode: Mode = .backfill) {
            self.source = source
            self.provider = provider
            self.apiKey = apiKey
            self.apiURL = apiURL
            self.mode = mode
            requestsPerSecond = provider.defaultRequestsPerSecond
        }
    }

    /// What a run did.
    package struct Summary: Sendable {
        /// Objects read, by kind.
        package var objects: [String: Int] = [:]
        /// Snapshots stored (new or changed outcome).
        package var stored = 0
        /// Messages queued (or, in a dry run, that would be).
        package var messages = 0
        /// Messages dead-lettered (an identity missing).
        package var deadLettered = 0
        /// Messages waiting for an identity.
        package var waiting = 0
        /// Snapshots that sent at least one message: for `reconcile`, the corrections.
        package var corrections = 0
        /// Accounts (domains) and people (emails, profile ids) messages went to.
        package var accounts: Set<String> = []
        /// People messages went to.
        package var people: Set<String> = []
        /// Objects that changed nothing, by why.
        package var skipped: [String: Int] = [:]
        /// Pages read.
        package var pages = 0
        /// Requests made to the provider.
        package var requests = 0
        /// 429 answers.
        package var rateLimited = 0
        /// Retries after 5xx or network errors.
        package var retried = 0
        /// Phases continued from a stored cursor.
        package var resumed: [String] = []
        /// Wall seconds.
        package var seconds = 0.0

        /// Objects read in all.
        package var total: Int { objects.values.reduce(0, +) }

        /// The summary as JSON (kept for the console after a reconcile).
        package var json: JSONValue {
            .object([
                "objects": .int(Int64(total)), "stored": .int(Int64(stored)), "messages": .int(Int64(messages)),
                "corrections": .int(Int64(corrections)), "accounts": .int(Int64(accounts.count)), "people": .int(Int64(people.count)),
                "dead_lettered": .int(Int64(deadLettered)), "seconds": .double((seconds * 10).rounded() / 10),
            ])
        }
    }

    /// Progress as it goes, for a terminal.
    package struct Progress: Sendable {
        /// The phase (`customers`, `subscriptions` …).
        package let phase: String
        /// Objects of this phase done.
        package let done: Int
        /// Of how many, when the API tells.
        package let total: Int?
        /// Objects per second in this phase.
        package let rate: Double
    }

    let ingest: Ingest
    /// Where the run's progress is kept (the store `ingest` writes to).
    let store: any OperatorStore & IngestStore
    let logger: Logger
    let metrics: RouterMetrics

    /// A run with the rules `ingest` uses, keeping its progress in `store` (the one `ingest` writes to).
    package init(ingest: Ingest, store: any OperatorStore & IngestStore, logger: Logger) {
        self.ingest = ingest
        self.store = store
        metrics = ingest.metrics
        self.logger = logger
    }

    /// The name of a phase's stored cursor.
    static func cursorName(_ mode: Mode, _ source: String, _ phase: String) -> String { "\(mode.rawValue):\(source):\(phase)" }
    /// The name of the last reconcile's summary.
    package static func lastReconcileName(_ source: String) -> String { "last-reconcile:\(source)" }
    /// What a finished phase's cursor says.
    static let finished = "done"
    /// The memory namespace of each object's last outcome digest.
    static let digestNamespace = "koala_router_snapshot"

    /// Reads every page of every phase, routes and stores each object; `progress` is called after each page,
    /// `printed` with each request a dry run would send.
    package func run(_ options: Options, progress: (@Sendable (Progress) -> Void)? = nil,
                    printed: (@Sendable (String) -> Void)? = nil) async throws -> Summary {
        let started = ContinuousClock.now
        let table = ingest.rules.table
        guard let source = table.sources[options.source] else {
            throw KoalaRouterError(.backfill, "unknown source '\(options.source)'; sources: \(table.sources.keys.sorted().joined(separator: ", "))")
        }
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        let http = ProviderHTTP(client: client, baseURL: options.apiURL, headers: options.provider.headers(key: options.apiKey),
                                requestsPerSecond: options.requestsPerSecond, timeout: options.requestTimeout, logger: logger)
        let reader = ProviderReader(kind: options.provider, http: http, concurrency: options.concurrency)
        let state = Mutex(Summary())
        let overlay = Overlay()
        do {
            var stored: [String: String] = [:]
            if !options.dryRun {
                for entry in try await store.progress(prefix: "\(options.mode.rawValue):\(options.source):") { stored[entry.name] = entry.value }
            }
            for phase in options.provider.phases {
                let name = Self.cursorName(options.mode, options.source, phase)
                var cursor: String? = options.restart ? nil : stored[name]
                if cursor == Self.finished { continue }
                if cursor != nil { state.withLock { $0.resumed.append(phase) } }
                let phaseStart = ContinuousClock.now
                var done = 0
                var total: Int?
                var next: Task<ProviderPage, any Error>? = Task { [cursor] in try await reader.page(phase, cursor: cursor, since: options.since) }
                // A read ahead that nobody will take (the run failed or was cancelled) is cancelled with it.
                defer { next?.cancel() }
                while let pending = next {
                    let page = try await pending.value
                    // The next page is read while this one is routed.
                    next = page.next.map { after in Task { try await reader.page(phase, cursor: after, since: options.since) } }
                    let readAt = options.clock()
                    total = page.total ?? total
                    // An organization and its domains and memberships are taken in order (the domain reads the name
                    // the organization remembered); different ones at once.
                    var chunks: [[ProviderObject]] = []
                    for object in page.objects {
                        if let group = object.group, let last = chunks.last?.last, last.group == group {
                            chunks[chunks.count - 1].append(object)
                        } else {
                            chunks.append([object])
                        }
                    }
                    // A dry run prints in the order read.
                    try await forEach(chunks, concurrency: options.dryRun ? 1 : options.concurrency) { chunk in
                        for object in chunk {
                            let outcome = try await take(object, reader: reader, source: source, rulesVersion: table.version, readAt: readAt,
                                                         options: options, overlay: overlay, printed: printed)
                            state.withLock { summary in
                                if !object.again { summary.objects[object.kind, default: 0] += 1 }
                                outcome.add(to: &summary)
                            }
                        }
                    }
                    done += page.objects.count
                    cursor = page.next
                    if !options.dryRun {
                        try await store.saveProgress(name: name, value: page.next ?? Self.finished, at: Date())
                    }
                    state.withLock { $0.pages += 1 }
                    let elapsed = Self.seconds(since: phaseStart)
                    progress?(Progress(phase: phase, done: done, total: total, rate: elapsed > 0 ? Double(done) / elapsed : 0))
                }
            }
            // Every phase done: the next run starts from the first page.
            if !options.dryRun {
                for phase in options.provider.phases {
                    try await store.saveProgress(name: Self.cursorName(options.mode, options.source, phase), value: nil, at: Date())
                }
            }
        } catch {
            try? await client.shutdown()
            throw error
        }
        try? await client.shutdown()
        var summary = state.withLock { $0 }
        let stats = http.stats
        summary.requests = stats.requests
        summary.rateLimited = stats.limited
        summary.retried = stats.retried
        summary.seconds = Self.seconds(since: started)
        if options.mode == .reconcile {
            metrics.reconciled(source: options.source, objects: summary.total, corrections: summary.corrections)
            if !options.dryRun {
                var json = summary.json
                if case .object(var fields) = json {
                    fields["at"] = .string(Timestamps.iso(Date()))
                    json = .object(fields)
                }
                try await store.saveProgress(name: Self.lastReconcileName(options.source), value: json.encoded(), at: Date())
            }
        }
        return summary
    }

    static func seconds(since start: ContinuousClock.Instant) -> Double {
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    /// What became of one object.
    enum Outcome: Sendable {
        case skipped(String)
        case stored(queued: Int, dead: Int, waiting: Int, accounts: [String], people: [String])
        case wouldSend(queued: Int, dead: Int, waiting: Int, accounts: [String], people: [String])

        func add(to summary: inout Summary) {
            switch self {
            case .skipped(let why):
                summary.skipped[why, default: 0] += 1
            case .stored(let queued, let dead, let waiting, let accounts, let people), .wouldSend(let queued, let dead, let waiting, let accounts, let people):
                if case .stored = self { summary.stored += 1 }
                summary.messages += queued
                summary.deadLettered += dead
                summary.waiting += waiting
                if queued + waiting > 0 { summary.corrections += 1 }
                summary.accounts.formUnion(accounts)
                summary.people.formUnion(people)
            }
        }
    }

    /// Why an object changed nothing, as the summary counts it.
    enum Skip {
        static let unchanged = "unchanged: what it says was already sent"
        static let agrees = "the state known already says this"
        static let older = "older than the state known (a webhook came after the read)"
        static let noRoute = "no route takes this kind of object"
        static let notSince = "not changed since --since"
        static let unreadable = "the source cannot read the snapshot's id, type or time"
    }

    private func take(_ object: ProviderObject, reader: ProviderReader, source: SourceDefinition, rulesVersion: String, readAt: Date,
                      options: Options, overlay: Overlay, printed: (@Sendable (String) -> Void)?) async throws -> Outcome {
        if let since = options.since, let updated = object.updatedAt, updated < since { return .skipped(Skip.notSince) }
        let router = WebhookRouter(source: source)
        func webhook(_ id: String) -> VerifiedWebhook? {
            let (json, headerList) = reader.envelope(object, id: id, readAt: readAt)
            var headers = HTTPFields()
            for (name, value) in headerList { if let field = HTTPField.Name(name) { headers[field] = value } }
            let body = Array(json.encoded().utf8)
            guard let tape = try? JSONTape.parse(body),
                  case .success(let w) = source.webhook(body: body, json: tape, headers: headers, receivedAt: readAt,
                                                         secretLabel: options.mode.rawValue, rulesVersion: rulesVersion) else { return nil }
            return w
        }
        func recall(_ w: VerifiedWebhook) async throws -> [MemoryKey: Remembered] {
            let keys = router.recallKeys(w)
            var memory = keys.isEmpty ? [:] : try await store.recall(source: source.name, keys: keys)
            if options.dryRun {
                overlay.entries.withLock { extra in for key in keys { if let entry = extra[key] { memory[key] = memory[key].map { $0.updated(by: entry) } ?? entry } } }
            }
            return memory
        }
        let base = "snapshot:\(object.kind):\(object.id)"
        guard let provisional = webhook(base) else { return .skipped(Skip.unreadable) }
        let recalled = try await recall(provisional)
        let first = router.routing(provisional, memory: recalled, destinations: ingest.destinations, explaining: false)
        let lasting = first.remembers.filter { $0.key.namespace != BillingSpec.ledgerNamespace }
        // Memory it would write that already holds the same (a state remembered by a webhook or an earlier run).
        let changesMemory = lasting.contains { entry in
            guard let known = recalled[entry.key] else { return true }
            let merged = known.updated(by: entry)
            return merged.identity != known.identity || merged.state != known.state
        }
        if first.messages.isEmpty && !changesMemory {
            if first.results.isEmpty { return .skipped(Skip.noRoute) }
            if first.results.contains(where: { $0.reason.hasPrefix(WebhookRouter.outOfOrderPrefix) }) { return .skipped(Skip.older) }
            return .skipped(Skip.agrees)
        }
        // The outcome this object last led to, kept in memory (which retention does not prune, unlike the journal
        // whose duplicate check would otherwise forget it after KOALA_ROUTER_RETENTION_DAYS).
        let digest = Self.digest(first.messages, lasting)
        let digestKey = MemoryKey(namespace: Self.digestNamespace, key: "\(object.kind):\(object.id)")
        if !options.dryRun,
           try await store.recall(source: source.name, keys: [digestKey])[digestKey]?.state?["digest"] == .string(digest) {
            return .skipped(Skip.unchanged)
        }
        guard let final = webhook(base + ":" + digest) else { return .skipped(Skip.unreadable) }

        func counted(_ messages: [KoalaMessage]) -> (Int, Int, Int, [String], [String]) {
            var queued = 0, dead = 0, waiting = 0
            var accounts: [String] = [], people: [String] = []
            for message in messages {
                if message.problem != nil { dead += 1 } else if message.waitingFor != nil { waiting += 1 } else { queued += 1 }
                guard message.problem == nil else { continue }
                if message.endpoint == .account {
                    if let domain = message.identity.domain ?? message.identity.accountID { accounts.append(domain) }
                } else if let who = message.identity.email ?? message.identity.profileID {
                    people.append(who)
                }
            }
            return (queued, dead, waiting, accounts, people)
        }

        if options.dryRun {
            let routing = router.routing(final, memory: try await recall(final), destinations: ingest.destinations, explaining: false)
            overlay.entries.withLock { extra in
                for entry in routing.remembers { extra[entry.key] = extra[entry.key].map { $0.updated(by: entry) } ?? entry }
            }
            if let printed {
                var lines = ["# \(source.name) \(object.kind) \(object.id) → webhook \(final.webhookID)"]
                let sendable = routing.messages.filter { $0.problem == nil && $0.waitingFor == nil && $0.destinations.contains(.koala) }
                let outbox = sendable.enumerated().map { index, m in
                    OutboxMessage(seq: Int64(index), messageID: m.messageID, source: m.source, route: m.route, endpoint: m.endpoint, kind: m.kind,
                                  identity: m.identity, itemJSON: m.item.encoded(), eventTime: m.eventTime, createdAt: readAt, attempts: 0)
                }
                for batch in Batcher.plan(outbox).flatMap({ $0 }) { lines.append("POST /web/projects/<key>/\(batch.endpoint.path) \(batch.body)") }
                for message in routing.messages {
                    if let problem = message.problem { lines.append("dead letter \(message.route)/\(message.output): \(problem)") }
                    if let key = message.waitingFor { lines.append("waits \(message.route)/\(message.output) for \(key.namespace) '\(key.key)'") }
                }
                printed(lines.joined(separator: "\n"))
            }
            let (q, d, w, a, p) = counted(routing.messages)
            return .wouldSend(queued: q, dead: d, waiting: w, accounts: a, people: p)
        }

        let (routing, outcome) = try await ingest.routeAndStore(final, router: router, extra: [
            Remembered(key: digestKey, identity: KoalaIdentity(), state: ["digest": .string(digest)], stateAt: readAt),
        ])
        switch outcome {
        case .duplicate:
            return .skipped(Skip.unchanged)
        case .stateChanged:
            throw KoalaRouterError(.backfill, "the remembered state of \(object.kind) \(object.id) kept changing while it was routed (webhooks for it are arriving); run again")
        case .accepted:
            let (q, d, w, a, p) = counted(routing.messages)
            return .stored(queued: q, dead: d, waiting: w, accounts: a, people: p)
        }
    }

    /// 16 hex digits over what the snapshot leads to (every message without its id and time, every lasting memory
    /// entry without its time): the same outcome gives the same snapshot id, so it is a duplicate.
    static func digest(_ messages: [KoalaMessage], _ remembers: [Remembered]) -> String {
        var text = ""
        for message in messages {
            var item = message.item
            if case .object(var fields) = item {
                fields["message_id"] = nil
                fields["sent_at"] = nil
                item = .object(fields)
            }
            let who = [message.identity.email, message.identity.profileID, message.identity.domain, message.identity.accountID].map { $0 ?? "" }
            text += "m\u{0}\(message.route)\u{0}\(message.output)\u{0}\(who.joined(separator: "\u{0}"))\u{0}\(message.problem ?? "")\u{0}\(item.encoded())\n"
        }
        for entry in remembers {
            let who = [entry.identity.email, entry.identity.profileID, entry.identity.domain].map { $0 ?? "" }
            text += "r\u{0}\(entry.key.namespace)\u{0}\(entry.key.key)\u{0}\(who.joined(separator: "\u{0}"))\u{0}\(entry.state.map { JSONValue.object($0).encoded() } ?? "")\n"
        }
        return String(Hex.encode(Crypto.digest(.sha256, Array(text.utf8))).prefix(16))
    }

    /// Runs `body` for each element, at most `concurrency` at once; the first error stops the rest.
    private func forEach<T: Sendable>(_ elements: [T], concurrency: Int, _ body: @escaping @Sendable (T) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            var iterator = elements.makeIterator()
            for _ in 0..<max(1, concurrency) {
                guard let element = iterator.next() else { break }
                group.addTask { try await body(element) }
            }
            while try await group.next() != nil {
                if let element = iterator.next() { group.addTask { try await body(element) } }
            }
        }
    }
}

/// What a dry run would have remembered so far (identities of customers read earlier in the run).
final class Overlay: Sendable {
    let entries = Mutex<[MemoryKey: Remembered]>([:])
}

package import Foundation
package import KoalaCore
package import ServiceLifecycle

/// What happened when a webhook was offered to the store.
package enum AcceptOutcome: Sendable, Equatable {
    /// Stored for the first time, with this many messages queued, dead-lettered at once, and waiting for an identity.
    case accepted(queued: Int, deadLettered: Int, waiting: Int)
    /// A webhook with the same (source, webhook id) was stored before; nothing changed.
    case duplicate
    /// A state this webhook's routes read or remember changed after they were routed (another replica took
    /// an update of the same subscription meanwhile); nothing was stored: recall and route it again.
    case stateChanged
}

/// A message waiting in (or leased from) the outbox.
package struct OutboxMessage: Sendable, Equatable {
    /// The outbox row: the order messages were stored in.
    package let seq: Int64
    /// Koala's idempotency key.
    package let messageID: String
    /// The source (rule file) of the webhook it came from.
    package let source: String
    let route: String
    /// Where it is sent.
    package let endpoint: KoalaEndpoint
    /// Which list of the batch.
    package let kind: KoalaMessage.Kind
    /// Who it is about (one person or account per request).
    package let identity: KoalaIdentity
    /// The item exactly as it goes into `events[]` / `identifies[]`, already JSON-encoded.
    package let itemJSON: String
    /// When it happened.
    package let eventTime: Date
    /// When it was stored.
    package let createdAt: Date
    /// Failed attempts so far.
    package let attempts: Int
    /// Which destination this entry is delivered to.
    package var destination: Destination = .koala
    /// The provider's id of the webhook it came from (claims read it, so every log line about the message names it).
    package var webhookID = ""
    /// The `traceparent` its webhook was received in; the sender reads it (`traceParents(of:)`) only while tracing.
    package var traceParent: String?

    package init(seq: Int64, messageID: String, source: String, route: String, endpoint: KoalaEndpoint, kind: KoalaMessage.Kind,
                identity: KoalaIdentity, itemJSON: String, eventTime: Date, createdAt: Date, attempts: Int) {
        self.seq = seq
        self.messageID = messageID
        self.source = source
        self.route = route
        self.endpoint = endpoint
        self.kind = kind
        self.identity = identity
        self.itemJSON = itemJSON
        self.eventTime = eventTime
        self.createdAt = createdAt
        self.attempts = attempts
    }
}

/// Which stored webhooks the console lists. Every field narrows; nil matches all.
package struct WebhookQuery: Sendable, Equatable {
    /// Its event type, exactly.
    package var eventType: String?
    /// Its id, exactly.
    package var webhookID: String?
    /// Received at or after.
    package var since: Date?
    /// Received before.
    package var until: Date?
    /// Only webhooks with a message in this state (`.pending` also takes messages waiting for an identity).
    package var state: OutboxStatus?
    /// Only webhooks that produced no message at all.
    package var noMessages = false

    package init(eventType: String? = nil, since: Date? = nil, until: Date? = nil, state: OutboxStatus? = nil, noMessages: Bool = false) {
        self.eventType = eventType
        self.since = since
        self.until = until
        self.state = state
        self.noMessages = noMessages
    }
}

/// Where a listing of webhooks (newest first) goes on from: the last one shown.
package struct WebhookCursor: Sendable, Hashable, Comparable {
    /// When the last one shown arrived (seconds since 1970).
    package let receivedAt: Double
    /// Its source.
    package let source: String
    /// Its id.
    package let webhookID: String

    package init(receivedAt: Double, source: String, webhookID: String) {
        self.receivedAt = receivedAt
        self.source = source
        self.webhookID = webhookID
    }

    /// Newest first: a later time, then a later (source, id), comes first.
    package static func < (a: WebhookCursor, b: WebhookCursor) -> Bool {
        (a.receivedAt, a.source, a.webhookID) > (b.receivedAt, b.source, b.webhookID)
    }
}

/// One stored webhook in a listing, with how many of its messages are in each state.
package struct WebhookSummary: Sendable, Equatable {
    /// Its source.
    package let source: String
    /// Its id.
    package let webhookID: String
    /// Its event type.
    package let eventType: String
    /// When it arrived.
    package let receivedAt: Date
    /// Messages by state, every destination counted.
    package let messages: [OutboxStatus: Int]

    /// Its place in a listing.
    package var cursor: WebhookCursor { WebhookCursor(receivedAt: receivedAt.timeIntervalSince1970, source: source, webhookID: webhookID) }
}

/// One outbox entry of a webhook, as the console shows it.
package struct MessageRecord: Sendable, Equatable {
    /// Where it goes.
    package let destination: Destination
    /// The idempotency key.
    package let messageID: String
    /// The route that produced it.
    package let route: String
    /// The endpoint it is sent to.
    package let endpoint: KoalaEndpoint
    /// Where it is in the outbox.
    package let state: OutboxStatus
    /// How many times it was sent.
    package let attempts: Int
    /// The destination's last answer when a send failed.
    package let lastError: String?
    /// Why it was dead-lettered.
    package let deadReason: String?
    /// The destination's answer that dead-lettered it.
    package let deadDetail: String?
    /// When it is tried next (while pending).
    package let nextAttemptAt: Date?
    /// When it was delivered, handled in dry run or dead-lettered.
    package let finishedAt: Date?
}

/// What one source has stored lately: across replicas and restarts, since it is read from the store.
package struct SourceActivity: Sendable, Equatable {
    /// When its latest stored webhook arrived.
    package var lastReceived: Date?
    /// Webhooks stored in the last hour.
    package var lastHour = 0
    /// Webhooks stored in the last day.
    package var lastDay = 0

    package init(lastReceived: Date? = nil, lastHour: Int = 0, lastDay: Int = 0) {
        self.lastReceived = lastReceived
        self.lastHour = lastHour
        self.lastDay = lastDay
    }
}

/// Queue depth and age, for metrics and `/readyz`.
package struct QueueStats: Sendable, Equatable {
    /// Messages due or backing off.
    package var pending = 0
    /// Messages waiting for an identity.
    package var waiting = 0
    /// Dead letters.
    package var dead = 0
    /// Seconds since the oldest pending message was stored.
    package var oldestPendingAge: Double = 0

    /// Counts `n` messages of `status`; `oldest` is the creation time of the oldest, for pending ones.
    mutating func add(_ status: OutboxStatus?, count n: Int, oldest: Double?, now: Date) {
        switch status {
        case .pending?:
            pending = n
            if let oldest { oldestPendingAge = max(0, now.timeIntervalSince1970 - oldest) }
        case .waiting?: waiting = n
        case .dead?: dead = n
        case .delivered?, .dryRun?, nil: break
        }
    }
}

/// Where a page of stored webhooks ended.
package struct StoredCursor: Sendable, Equatable {
    let receivedAt: Date
    let webhookID: String

    package init(receivedAt: Date, webhookID: String) {
        self.receivedAt = receivedAt
        self.webhookID = webhookID
    }
}

/// A message's place in the outbox. The raw values are what both backends keep in `outbox.status`; this is the one
/// place the states are defined, and every SQL text names them with `\(literal: .pending)` (scripts/check-architecture
/// refuses a bare number).
package enum OutboxStatus: Int64, Sendable, CaseIterable {
    case pending = 0, delivered = 1, dead = 2, waiting = 3
    /// Handled in dry run (no project key): the request was logged, never sent. Kept and aged out like a
    /// delivered message, but `replay` queues it again, and it never reads as delivered.
    case dryRun = 4

    /// The name people read (`replay`, `dead-letters`, `simulate --stored`).
    package var name: String {
        switch self {
        case .pending: "pending"
        case .delivered: "delivered"
        case .dead: "dead"
        case .waiting: "waiting"
        case .dryRun: "dry_run"
        }
    }

    /// The status as a literal in SQL text. A literal, not a bound parameter: PostgreSQL uses a partial index
    /// (`… WHERE status = 0`) only for a query whose predicate names the same constant.
    var sql: String { String(rawValue) }

    /// The status a newly accepted message starts in, as the router disposed of it.
    init(_ disposition: KoalaMessage.Disposition) {
        switch disposition {
        case .send: self = .pending
        case .dead: self = .dead
        case .wait: self = .waiting
        }
    }

    /// When a newly accepted message is first due: after the linger, or, when waiting, once its identity wait runs out.
    func firstDue(acceptedAt now: Double, linger: TimeInterval, identityWait: TimeInterval) -> Double {
        self == .waiting ? now + identityWait : now + linger
    }
}

/// The outbox's two queues. Live traffic is claimed first; messages an operator replayed wait in their own lane
/// and get a small, capped share of each claim round, so a large replay never delays new webhooks.
package enum OutboxLane: Int64, Sendable, CaseIterable {
    case live = 0, replay = 1

    /// The lane as a literal in SQL text (see `OutboxStatus.sql`).
    var sql: String { String(rawValue) }
}

/// Outbox states and lanes in the SQL text the stores build as strings (SQLite's statements, PostgreSQL's migrations
/// and dynamic filters).
extension DefaultStringInterpolation {
    mutating func appendInterpolation(literal status: OutboxStatus) { appendLiteral(status.sql) }
    mutating func appendInterpolation(literal states: [OutboxStatus]) { appendLiteral(states.map(\.sql).joined(separator: ", ")) }
    mutating func appendInterpolation(literal lane: OutboxLane) { appendLiteral(lane.sql) }
}

/// A message as stored, for comparing a replay with what was routed before.
package struct StoredMessage: Sendable, Equatable {
    /// Where the message is in the outbox.
    package typealias State = OutboxStatus
    /// Koala's idempotency key.
    package let messageID: String
    /// The route that produced it.
    package let route: String
    /// The item as sent.
    package let itemJSON: String
    /// Its status.
    package let state: State
}

/// What a retention run or a `forget` removed.
package struct PruneReport: Sendable, Equatable {
    /// Webhooks removed.
    package var webhooks = 0
    /// Messages removed.
    package var messages = 0
    /// Identity memory entries removed.
    package var identities = 0

    init(webhooks: Int = 0, messages: Int = 0, identities: Int = 0) {
        self.webhooks = webhooks
        self.messages = messages
        self.identities = identities
    }
}

/// What happened to some leased messages.
package enum DeliveryOutcome: Sendable, Equatable {
    case delivered([Int64], at: Date)
    /// Handled in dry run: logged, never sent.
    case dryRun([Int64], at: Date)
    /// Lease released; due again at `next`.
    case retry([Int64], next: Date, error: String)
    case dead([Int64], reason: String, detail: String?, at: Date)
}

/// How a message that waited for an identity is settled, each outcome with what it needs.
package enum WaitingResolution: Sendable, Equatable {
    /// Its identity is known now: pending, with the content of the routing done again.
    case released(KoalaMessage)
    /// Routed again, it waits for another memory entry.
    case stillWaiting(for: MemoryKey)
    /// It will not be sent: a dead letter, with why.
    case dead(reason: String)
}

/// A message that will not be sent without an operator's action.
package struct DeadLetter: Sendable, Equatable {
    let seq: Int64
    /// Koala's idempotency key.
    package let messageID: String
    /// The source it came from.
    package let source: String
    /// The webhook that produced it.
    package let webhookID: String
    /// The route that produced it.
    package let route: String
    /// Why it is dead.
    package let reason: String
    /// The destination's answer, when it rejected the message.
    package let detail: String?
    let itemJSON: String
    /// When it was dead-lettered.
    package let failedAt: Date
    /// Which output of the route (nil for a row whose output this version does not know).
    package var output: KoalaMessage.Output?
    /// The destination it failed to reach.
    package var destination: Destination = .koala
    var endpoint: KoalaEndpoint = .person
    /// Who it is about.
    package var identity = KoalaIdentity()
    /// How many times it was sent.
    package var attempts = 0
    var createdAt = Date(timeIntervalSince1970: 0)

    /// Whether a retry can send it: it has someone to send it for.
    var hasIdentity: Bool {
        identity.email != nil || identity.profileID != nil || identity.domain != nil || identity.accountID != nil
    }

    /// The dead letter as JSON, for `dead-letters --json` and the admin API.
    package var json: JSONValue {
        var object: [String: JSONValue] = [
            "message_id": .string(messageID), "destination": .string(destination.rawValue), "source": .string(source),
            "webhook_id": .string(webhookID), "route": .string(route), "endpoint": .string(endpoint.path),
            "reason": .string(reason), "failed_at": .string(Timestamps.iso(failedAt)),
            "accepted_at": .string(Timestamps.iso(createdAt)), "attempts": .int(Int64(attempts)),
            "item": (try? JSONValue.parse(Array(itemJSON.utf8))) ?? .string(itemJSON),
        ]
        if let detail { object["detail"] = .string(detail) }
        if let output { object["output"] = .string(output.rawValue) }
        var who: [String: JSONValue] = [:]
        for (k, v) in identity.topLevel { who[k] = .string(v) }
        object["identity"] = .object(who)
        return .object(object)
    }
}

/// Which dead letters an operator means. Empty fields match everything.
package struct DeadLetterFilter: Sendable, Equatable {
    /// Only these message ids (any, when empty).
    package var messageIDs: [String] = []
    /// Only this destination (any, when nil).
    package var destination: Destination?
    /// Only this source.
    package var source: String?
    /// Only this route.
    package var route: String?
    /// Matches when the reason contains this text.
    package var reason: String?
    /// Failed at or after.
    package var since: Date?
    /// Failed before.
    package var until: Date?

    package init(messageIDs: [String] = [], destination: Destination? = nil, source: String? = nil, route: String? = nil,
                reason: String? = nil, since: Date? = nil, until: Date? = nil) {
        self.messageIDs = messageIDs
        self.destination = destination
        self.source = source
        self.route = route
        self.reason = reason
        self.since = since
        self.until = until
    }
}

/// How many messages are in each state, and how many webhooks are stored.
package struct OutboxCounts: Sendable, Equatable {
    var pending: Int
    var delivered: Int
    var dead: Int
    var webhooks: Int
    var waiting: Int = 0
    /// Messages handled in dry run: logged, never sent.
    package var dryRun: Int = 0

    mutating func add(_ status: OutboxStatus?, count n: Int) {
        switch status {
        case .dryRun?: dryRun = n
        case .pending?: pending = n
        case .delivered?: delivered = n
        case .dead?: dead = n
        case .waiting?: waiting = n
        case nil: break
        }
    }
}

/// A message whose identity comes from a `recall` that missed when it was routed, and whose memory entry
/// has since arrived (or whose wait has run out).
package struct WaitingMessage: Sendable, Equatable {
    /// The outbox row.
    package let seq: Int64
    /// Koala's idempotency key.
    package let messageID: String
    /// The source it came from.
    package let source: String
    /// The webhook it came from.
    package let webhookID: String
    /// The memory key it waits for.
    package let waitingFor: MemoryKey
    /// When it stops waiting and is dead-lettered.
    package let deadline: Date
}

/// The durable store behind ingest and delivery. Accepting a webhook and queueing its messages is one
/// transaction; every other call moves messages through pending → delivered | dead.
/// Backends: SQLite (embedded default); PostgreSQL follows the same contract.
///
/// A store is a `Service`: `run()` holds what it runs in the background (SQLite's group-commit writer,
/// PostgreSQL's connection pool) and returns after graceful shutdown or cancellation, with the store closed.
/// `serve` runs it as the first service of its group, so it stops last; commands and tests use `whileRunning`.
///
/// The contract is split by role, so each part of the service depends on the few methods it uses: ingest on
/// `IngestStore`, the sender on `OutboxStore`, the identity resolver on `WaitingStore`, operators' tools (replay,
/// dead letters, the console, retention, backfill) on `OperatorStore`.
package protocol WebhookStore: Service, IngestStore, OutboxStore, WaitingStore, OperatorStore {
    /// Whether the store can take webhooks right now (for `/readyz`): it answers, and, when the last write was
    /// refused (a full disk, a read-only database), a small write now succeeds.
    func health() async -> StoreHealth
    /// Returns once `run()` has connected and migrated; throws why it could not. `serve` waits for it before
    /// it listens.
    func ready() async throws
}

/// What ingest needs of the store.
package protocol IngestStore: Sendable {
    /// Stores the verified webhook, its messages and the identities it remembers atomically, or reports a
    /// duplicate and changes nothing. Messages with a `problem` are stored directly as dead letters; messages
    /// waiting for a memory entry wait up to `identityWait`. Pending messages become due after `linger`.
    /// `resume` says where the caller continues once a group commit has stored it (nil: where the commit finishes).
    /// PostgreSQL's accepts checked against moved states commit on their own, and continue where that commit ends.
    func accept(_ webhook: VerifiedWebhook, messages: [KoalaMessage], remembers: [Remembered],
                linger: TimeInterval, identityWait: TimeInterval, resumingOn resume: AcceptResumer?) async throws -> AcceptOutcome

    /// What was remembered for `source` under these keys: identities and states.
    func recall(source: String, keys: [MemoryKey]) async throws -> [MemoryKey: Remembered]
    /// Why the database refuses writes, as the last write said (nil: it did not); no round trip.
    var writeRefusal: String? { get }
}

extension IngestStore {
    /// Accepts, the caller continuing wherever the commit finishes.
    package func accept(_ webhook: VerifiedWebhook, messages: [KoalaMessage], remembers: [Remembered],
                        linger: TimeInterval, identityWait: TimeInterval) async throws -> AcceptOutcome {
        try await accept(webhook, messages: messages, remembers: remembers, linger: linger, identityWait: identityWait, resumingOn: nil)
    }
}

/// What the identity resolver needs of the store: the messages waiting for an identity, and what releases them.
package protocol WaitingStore: Sendable {
    /// What was remembered for `source` under these keys: identities and states.
    func recall(source: String, keys: [MemoryKey]) async throws -> [MemoryKey: Remembered]
    /// Leases waiting messages whose memory entry now exists or whose wait has run out.
    func claimWaiting(now: Date, limit: Int) async throws -> [WaitingMessage]
    /// Settles a waiting message: released (pending, routed again), still waiting on another key, or dead.
    func resolveWaiting(_ seq: Int64, _ resolution: WaitingResolution, linger: TimeInterval, at: Date) async throws
    /// A stored webhook, as it was accepted.
    func storedWebhook(source: String, webhookID: String) async throws -> VerifiedWebhook?
}

/// What a sender needs of the store: the outbox of its destination.
package protocol OutboxStore: Sendable {
    /// Leases up to `limit` due messages, oldest first, skipping every person (or account) that has an
    /// earlier message still waiting or in flight, so one person's messages go out in order, one request at a time.
    func claimDue(now: Date, limit: Int, lease: TimeInterval, destination: Destination) async throws -> [OutboxMessage]

    /// Records many delivery outcomes in one transaction (the sender writes a whole round at once).
    func record(_ outcomes: [DeliveryOutcome]) async throws

    /// The W3C `traceparent` each of these webhooks was received in; those stored without one (tracing was off, or
    /// the webhook is gone) are left out. The sender asks only while tracing, so its spans join the webhooks' traces.
    func traceParents(of webhooks: Set<WebhookRef>) async throws -> [WebhookRef: String]
}

/// One stored webhook, by the key of the journal.
package struct WebhookRef: Hashable, Sendable {
    /// The source's name (its rule file's `source:`).
    package let source: String
    /// The provider's event id.
    package let webhookID: String

    package init(source: String, webhookID: String) {
        self.source = source
        self.webhookID = webhookID
    }
}

/// What operators' tools need of the store: retention and erasure, replay, dead letters, the console's
/// listings and sessions, and backfill's progress.
package protocol OperatorStore: Sendable {
    /// Deletes stored webhooks received before `cutoff` (except those whose messages still wait or are
    /// pending) and delivered messages finished before it. Dead letters stay until handled.
    func prune(before cutoff: Date) async throws -> PruneReport
    /// Removes everything stored about an email address: webhooks whose payload mentions it, its messages
    /// in any state, and identity memory entries.
    func forget(email: String) async throws -> PruneReport


    /// Stored webhooks of a source received in [since, until), oldest first, after `cursor` (paging).
    func storedWebhooks(source: String, since: Date, until: Date, after cursor: StoredCursor?, limit: Int) async throws -> [VerifiedWebhook]
    /// The messages stored for one webhook (any state), by message id.
    func storedMessages(source: String, webhookID: String, destination: Destination) async throws -> [String: StoredMessage]
    /// Queues replayed messages in the replay lane: new ids are inserted; existing ones not yet delivered
    /// take the new content and are queued again; delivered ones are left alone. Returns how many were queued.
    func enqueueReplay(_ messages: [KoalaMessage], at: Date) async throws -> Int
    /// Dead letters matching `filter`, oldest failure first.
    func deadLetters(matching filter: DeadLetterFilter, limit: Int) async throws -> [DeadLetter]
    /// Queues matching dead letters again with the same message ids and a fresh retry budget. Messages
    /// without an identity (nobody to send them for) are left in place; replay their webhook instead.
    /// Returns how many were queued.
    func retryDeadLetters(matching filter: DeadLetterFilter, at: Date) async throws -> Int
    /// Deletes matching dead letters. Returns how many.
    func dropDeadLetters(matching filter: DeadLetterFilter) async throws -> Int
    /// How many messages are in each state and how many webhooks are stored.
    func counts() async throws -> OutboxCounts
    /// Queue depth and age, for metrics.
    func queueStats(now: Date) async throws -> QueueStats
    /// Each source's latest webhook and how many it stored in the hour and the day before `now` (index range
    /// scans on `(source, received_at)`, so they stay fast on a large store).
    func sourceActivity(sources: [String], now: Date) async throws -> [String: SourceActivity]
    /// One source's stored webhooks matching `query`, newest first, after `cursor`: an index range scan on
    /// `(source, received_at)`. The console merges the sources.
    func webhooks(source: String, matching query: WebhookQuery, after cursor: WebhookCursor?, limit: Int) async throws -> [WebhookSummary]
    /// The stored webhooks that produced a message for this address (through the outbox's email index), newest first.
    func webhooks(email: String, limit: Int) async throws -> [WebhookSummary]
    /// Every outbox entry of one webhook, every destination.
    func messages(source: String, webhookID: String) async throws -> [MessageRecord]
    /// Ends one console session (by its nonce) on every replica and across restarts, until it would have
    /// expired anyway; expired revocations are removed on the way.
    func revokeConsoleSession(nonce: String, expires: Date, now: Date) async throws
    /// Ends every console session issued at or before `issuedBefore` (sign-out everywhere).
    func revokeConsoleSessions(issuedBefore: Date) async throws
    /// Whether a console session was ended: its nonce revoked, or issued at or before a sign-out everywhere.
    func consoleSessionRevoked(nonce: String, issuedAt: Date) async throws -> Bool
    /// Writes one progress entry of `backfill` or `reconcile` (nil removes it).
    func saveProgress(name: String, value: String?, at: Date) async throws
    /// The progress entries whose name begins with `prefix`, by name.
    func progress(prefix: String) async throws -> [ProgressEntry]
}

extension WebhookStore {
    /// Runs the store for as long as `body` runs, then stops it: for commands and tests that use a store
    /// outside a service group. An error from `body` wins; otherwise an error the store stopped with.
    package func whileRunning<T>(_ body: () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.run() }
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            group.cancelAll()
            do {
                while try await group.next() != nil {}
            } catch is CancellationError {
            } catch {
                if case .success = result { throw error }
            }
            return try result.get()
        }
    }
}

extension WebhookStore {
    /// Koala's entries of a stored webhook, by message id.
    package func storedMessages(source: String, webhookID: String) async throws -> [String: StoredMessage] {
        try await storedMessages(source: source, webhookID: webhookID, destination: .koala)
    }

    /// Koala's due messages (the destination every store call meant before there were several).
    package func claimDue(now: Date, limit: Int, lease: TimeInterval) async throws -> [OutboxMessage] {
        try await claimDue(now: now, limit: limit, lease: lease, destination: .koala)
    }

    func markDelivered(_ seqs: [Int64], at: Date) async throws {
        try await record([.delivered(seqs, at: at)])
    }

    /// Releases the lease and makes the messages due again at `at`.
    func scheduleRetry(_ seqs: [Int64], at: Date, error: String) async throws {
        try await record([.retry(seqs, next: at, error: error)])
    }

    func deadLetter(_ seqs: [Int64], reason: String, detail: String?, at: Date) async throws {
        try await record([.dead(seqs, reason: reason, detail: detail, at: at)])
    }

    /// The oldest dead letters, unfiltered.
    func deadLetters(limit: Int) async throws -> [DeadLetter] {
        try await deadLetters(matching: DeadLetterFilter(), limit: limit)
    }
}

/// The store's one error: why it cannot be opened or used, with a code to branch on and a message for a person
/// (what is wrong and what to do; never a password).
package struct StoreError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What kind of problem it is; stable, for code and tests to branch on.
    package struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String {
            case invalidAddress = "invalid_address"
            case notDurable = "not_durable"
            case stopped
            case unavailable
        }

        private let base: Base

        /// `KOALA_ROUTER_DATABASE` cannot be used: not a file path, `sqlite:` or `postgres://` address, or a bad option.
        package static let invalidAddress = Code(base: .invalidAddress)
        /// The database would not keep a committed webhook through a crash (`synchronous`, `fsync` off).
        package static let notDurable = Code(base: .notDurable)
        /// The store has stopped (the service is shutting down) or was started a second time.
        package static let stopped = Code(base: .stopped)
        /// The database did not answer in time: down, unreachable or overloaded.
        package static let unavailable = Code(base: .unavailable)

        package var description: String { base.rawValue }
    }

    /// What kind of problem it is.
    package let code: Code
    /// What is wrong and what to do.
    package let message: String

    package init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// A database address that cannot be used (the description names the setting).
    package static func invalidAddress(_ problem: String) -> StoreError { StoreError(.invalidAddress, problem) }

    /// An address that names no database kind we know.
    package static func unsupported(_ address: String) -> StoreError {
        .invalidAddress("unsupported database '\(PostgresURL.redacted(address))': use a file path, sqlite:PATH or postgres://…")
    }

    /// A database that would lose a committed webhook in a crash.
    package static func notDurable(_ detail: String) -> StoreError { StoreError(.notDurable, "the database is not configured durably: \(detail)") }

    /// The store has stopped; nothing more is stored.
    package static let stopped = StoreError(.stopped, "the store has stopped; nothing more is stored")

    /// A call that took longer than its deadline.
    package static func unavailable(operation: String, seconds: Double) -> StoreError {
        StoreError(.unavailable, "the database did not answer '\(operation)' within \(seconds) s (is PostgreSQL up and reachable?)")
    }

    package var description: String { code == .invalidAddress ? "KOALA_ROUTER_DATABASE: \(message)" : message }
}

extension Remembered {
    /// A memory row as both stores keep it: the state as JSON text with its time (seconds since 1970).
    static func stored(key: MemoryKey, email: String?, profileID: String?, domain: String?, state: String?, stateAt: Double?) -> Remembered {
        var values: [String: JSONValue]?
        if let state, case .object(let object)? = try? JSONValue.parse(Array(state.utf8)) { values = object }
        return Remembered(key: key, identity: KoalaIdentity(email: email, profileID: profileID, domain: domain),
                          state: values, stateAt: stateAt.map { Date(timeIntervalSince1970: $0) })
    }
}

/// One webhook to accept, with what routing made of it.
struct AcceptRequest: Sendable {
    let webhook: VerifiedWebhook
    let messages: [KoalaMessage]
    let remembers: [Remembered]
    let linger: TimeInterval
    let identityWait: TimeInterval
}

/// One accept waiting for a group commit, answered once the transaction holding it has committed.
struct QueuedAccept: Sendable {
    let request: AcceptRequest
    let continuation: CheckedContinuation<AcceptOutcome, any Error>
    /// Where the caller continues (nil: where the commit finishes).
    let resume: AcceptResumer?

    /// Answers the caller, where it asked to continue.
    func finish(_ result: Result<AcceptOutcome, any Error>) {
        guard let resume else { return continuation.resume(with: result) }
        let continuation = continuation
        resume { continuation.resume(with: result) }
    }

    func finish(returning outcome: AcceptOutcome) { finish(.success(outcome)) }
    func finish(throwing error: any Error) { finish(.failure(error)) }
}

/// Runs `work` where an accept's caller should continue once its webhook is committed. Ingest passes one that
/// runs it on the connection's event loop, so the handler resumes on the thread that owns its connection and
/// answers there. Without it the handler continued on whichever thread finished the commit, and under load
/// nearly half of all answers (47 % with `scripts/bench/run`'s load) then crossed to the other event loop to be
/// written.
package typealias AcceptResumer = @Sendable (_ work: @escaping @Sendable () -> Void) -> Void

/// How a memory entry merges into the one stored, the same SQL for SQLite and PostgreSQL: a known field is
/// never erased by a later webhook that lacks it, and a state is never replaced by an older one (webhooks
/// arrive out of order).
let identityMergeSQL = """
    ON CONFLICT (source, namespace, key) DO UPDATE SET
        email = coalesce(excluded.email, identities.email),
        profile_id = coalesce(excluded.profile_id, identities.profile_id),
        domain = coalesce(excluded.domain, identities.domain),
        updated_at = excluded.updated_at,
        state = CASE WHEN excluded.state IS NOT NULL AND (identities.state_at IS NULL OR excluded.state_at >= identities.state_at)
                     THEN excluded.state ELSE identities.state END,
        state_at = CASE WHEN excluded.state IS NOT NULL AND (identities.state_at IS NULL OR excluded.state_at >= identities.state_at)
                        THEN excluded.state_at ELSE identities.state_at END
    """

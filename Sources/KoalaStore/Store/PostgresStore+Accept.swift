package import Foundation
package import KoalaCore
import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// Accepting webhooks: group commit, one statement per batch.
extension PostgresStore {
    /// Accepts commit in batches (`commitQueued`): one statement stores a whole batch, so one round trip and
    /// one implicit transaction carry it. Its text is the same for every batch (every value is a bind in an
    /// array), so each connection parses and plans it once.
    package func accept(_ webhook: VerifiedWebhook, messages: [KoalaMessage], remembers: [Remembered],
                       linger: TimeInterval, identityWait: TimeInterval, resumingOn resume: AcceptResumer?) async throws -> AcceptOutcome {
        try await refusals.observing(Self.refusal) {
            try await store(webhook, messages: messages, remembers: remembers, linger: linger, identityWait: identityWait, resume: resume)
        }
    }

    /// Why an error means PostgreSQL refuses writes: its disk is full (53100) or out of another resource
    /// (class 53), or the database is read-only (25006: a standby after a failover, `default_transaction_read_only`).
    /// Nil for any other error.
    static func refusal(_ error: any Error) -> String? {
        guard let error = error as? PSQLError, let state = error.serverInfo?[.sqlState] else { return nil }
        let message = error.serverInfo?[.message].map { ": \(LogText.bounded(LogText.escaped($0), limit: 200))" } ?? ""
        switch state {
        case "53100": return "PostgreSQL's disk is full (53100)\(message); free space on the database server"
        case "25006": return "the database is read-only (25006)\(message); point the service at the primary, or make it writable"
        case let s where s.hasPrefix("53"): return "PostgreSQL is out of resources (\(s))\(message)"
        default: return nil
        }
    }

    package var writeRefusal: String? { refusals.current }

    func store(_ webhook: VerifiedWebhook, messages: [KoalaMessage], remembers: [Remembered],
               linger: TimeInterval, identityWait: TimeInterval, resume: AcceptResumer?) async throws -> AcceptOutcome {
        let request = AcceptRequest(webhook: webhook, messages: messages, remembers: remembers, linger: linger, identityWait: identityWait)
        // The states this webhook was routed against (and those it remembers): if another replica moved one
        // since, nothing is stored and ingest routes it again. Checked under transaction advisory locks on
        // those keys, taken in key order, so two replicas never both pass the check for one key.
        guard let routedStates = webhook.routedStates else { return try await commitWithOthers(request, resume: resume) }
        var expected: [MemoryKey: Double?] = [:]
        for entry in remembers where entry.state != nil { expected[entry.key] = .some(nil) }
        for entry in routedStates { expected[entry.key] = entry.stateAt?.timeIntervalSince1970 }
        guard !expected.isEmpty else { return try await commitWithOthers(request, resume: resume) }
        let guarded = expected.sorted { ($0.key.namespace, $0.key.key) < ($1.key.namespace, $1.key.key) }
        let source = webhook.source
        return try await withTransaction("accept") { connection, logger in
            for (key, _) in guarded {
                try await connection.perform("SELECT pg_advisory_xact_lock(\(Self.stateLockKey(source: source, key)))", logger: logger)
            }
            let rows = try await connection.query("""
                SELECT namespace, key, state_at FROM identities
                WHERE source = \(source) AND (namespace, key) IN (SELECT * FROM unnest(\(guarded.map(\.key.namespace)), \(guarded.map(\.key.key))))
                """, logger: logger).rows()
            var now: [MemoryKey: Double] = [:]
            for row in rows {
                if let at = try row.get("state_at", as: Double?.self) { now[MemoryKey(namespace: try row.get("namespace"), key: try row.get("key"))] = at }
            }
            for (key, then) in guarded {
                switch (then, now[key]) {
                case (nil, nil): continue
                case (let a?, let b?) where abs(a - b) < 0.000_5: continue
                default: return .stateChanged
                }
            }
            return try await Self.store([request], on: connection, logger: logger)[0]
        }
    }

    /// Stores a batch with the one accept statement; the outcomes in the batch's order.
    static func store(_ batch: [AcceptRequest], on connection: PostgresConnection, logger: Logger) async throws -> [AcceptOutcome] {
        var rows = AcceptRows()
        for request in batch { rows.add(request) }
        var stored: [AcceptKey: AcceptOutcome] = [:]
        for try await (source, webhookID, pending, dead, waiting) in try await connection.execute(AcceptStatement(rows: rows), logger: logger) {
            stored[AcceptKey(source: source, webhookID: webhookID)] = .accepted(queued: Int(pending), deadLettered: Int(dead), waiting: Int(waiting))
        }
        return batch.map { stored[$0.key] ?? .duplicate }
    }

    /// Group commit: an accept that needs no state check waits in a queue, and up to `committers` tasks
    /// each take what has queued and store it with one statement, so concurrent accepts share one round
    /// trip, one commit and one WAL flush. Each is answered only after that commit. A batch never holds one
    /// webhook twice or two webhooks remembering the same key (the later waits for the next batch), so it
    /// stores exactly what the accepts one after another would. If a batch fails (a deadlock with another
    /// replica, one bad row), each of its accepts is redone alone, so one failure never takes others along.
    func commitWithOthers(_ request: AcceptRequest, resume: AcceptResumer?) async throws -> AcceptOutcome {
        try await started.wait()
        return try await withCheckedThrowingContinuation { continuation in
            let queued = QueuedAccept(request: request, continuation: continuation, resume: resume)
            let start = acceptQueue.withLock { queue -> Bool? in
                guard !queue.stopped else { return nil }
                queue.requests.append(queued)
                guard queue.committers < Self.committers else { return false }
                queue.committers += 1
                return true
            }
            switch start {
            case nil: continuation.resume(throwing: StoreError.stopped)
            case true?: startJob.yield(.commit)
            case false?: break
            }
        }
    }

    /// Starts each job asked for as a child task, until graceful shutdown (when the connection pool stops too) or
    /// cancellation; then refuses new accepts, lets the running jobs finish, and answers the accepts still queued:
    /// stopped, never silently dropped.
    func runJobs() async {
        await withTaskGroup(of: Void.self) { group in
            for await job in jobs.cancelOnGracefulShutdown() {
                switch job {
                case .commit: group.addTask { await self.commitQueued() }
                case .analyze: group.addTask { await self.analyzeOutbox() }
                }
            }
            await group.waitForAll()
            let left = acceptQueue.withLock { queue -> [QueuedAccept] in
                queue.stopped = true
                defer { queue.requests = [] }
                return queue.requests
            }
            for queued in left { queued.finish(throwing: StoreError.stopped) }
        }
    }

    /// How many batches commit at once: while one waits for its commit, the next gathers and goes.
    static let committers = 2
    /// The most accepts one statement carries.
    static let batchLimit = 64

    /// One committer: takes batches until the queue is empty, then ends.
    func commitQueued() async {
        while true {
            let batch = acceptQueue.withLock { queue -> [QueuedAccept] in
                let taken = Self.takeBatch(from: &queue.requests, limit: Self.batchLimit, \.request)
                if taken.isEmpty { queue.committers -= 1 }
                return taken
            }
            if batch.isEmpty { return }
            do {
                let outcomes = try await withConnection("accept") { connection, logger in
                    try await Self.store(batch.map(\.request), on: connection, logger: logger)
                }
                for (queued, outcome) in zip(batch, outcomes) { queued.finish(returning: outcome) }
                continue
            } catch where batch.count == 1 {
                batch[0].finish(throwing: error)
                continue
            } catch {}
            await withTaskGroup(of: Void.self) { group in
                for queued in batch {
                    group.addTask {
                        do {
                            queued.finish(returning: try await self.withConnection("accept") { connection, logger in
                                try await Self.store([queued.request], on: connection, logger: logger)[0]
                            })
                        } catch {
                            queued.finish(throwing: error)
                        }
                    }
                }
            }
        }
    }

    /// The next batch, in queue order: a webhook already in the batch, or one remembering a key another of the
    /// batch remembers, stays queued for the next (one statement cannot insert or update one row twice).
    static func takeBatch<Item>(from queue: inout [Item], limit: Int, _ request: (Item) -> AcceptRequest) -> [Item] {
        var batch: [Item] = [], left: [Item] = []
        var webhooks = Set<AcceptKey>(), keys = Set<MemorySlot>()
        for queued in queue {
            let request = request(queued)
            let memory = request.remembers.map { MemorySlot(source: request.webhook.source, key: $0.key) }
            if batch.count < limit, !webhooks.contains(request.key), memory.allSatisfy({ !keys.contains($0) }) {
                batch.append(queued)
                webhooks.insert(request.key)
                keys.formUnion(memory)
            } else {
                left.append(queued)
            }
        }
        queue = left
        return batch
    }

    /// The transaction advisory lock of one state memory key (FNV-1a, so every replica computes the same).
    static func stateLockKey(source: String, _ key: MemoryKey) -> Int64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in Array(source.utf8) + [0] + Array(key.namespace.utf8) + [0] + Array(key.key.utf8) {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return Int64(bitPattern: hash)
    }

    package func recall(source: String, keys: [MemoryKey]) async throws -> [MemoryKey: Remembered] {
        guard !keys.isEmpty else { return [:] }
        let unique = Array(Set(keys))
        return try await withConnection("recall") { connection, logger in
            let rows = try await connection.query("""
                SELECT namespace, key, email, profile_id, domain, state, state_at FROM identities
                WHERE source = \(source) AND (namespace, key) IN (SELECT * FROM unnest(\(unique.map(\.namespace)), \(unique.map(\.key))))
                """, logger: logger).rows()
            var out: [MemoryKey: Remembered] = [:]
            for row in rows {
                let key = MemoryKey(namespace: try row.get("namespace"), key: try row.get("key"))
                out[key] = Remembered.stored(key: key, email: try row.get("email"), profileID: try row.get("profile_id"),
                                             domain: try row.get("domain"), state: try row.get("state"), stateAt: try row.get("state_at"))
            }
            return out
        }
    }

    package func claimWaiting(now: Date, limit: Int) async throws -> [WaitingMessage] {
        let t = now.timeIntervalSince1970
        return try await withTransaction("claim waiting") { [owner] connection, logger in
            try await connection.query("""
                WITH claimed AS (
                    SELECT o.seq FROM outbox o
                    WHERE o.status = \(literal: .waiting) AND o.lease_until <= \(t)
                      AND (o.next_attempt_at <= \(t) OR EXISTS (
                        SELECT 1 FROM identities i WHERE i.source = o.source AND i.namespace = o.wait_namespace AND i.key = o.wait_key))
                    ORDER BY o.seq LIMIT \(limit)
                    FOR UPDATE OF o SKIP LOCKED)
                UPDATE outbox SET lease_until = \(t + 60), lease_owner = \(owner) FROM claimed WHERE outbox.seq = claimed.seq
                RETURNING outbox.seq, outbox.message_id, outbox.source, outbox.webhook_id, outbox.wait_namespace, outbox.wait_key,
                          outbox.next_attempt_at
                """, logger: logger).rows().map { row in
                WaitingMessage(seq: try row.get("seq"), messageID: try row.get("message_id"), source: try row.get("source"),
                               webhookID: try row.get("webhook_id"),
                               waitingFor: MemoryKey(namespace: try row.get("wait_namespace", as: String?.self) ?? "",
                                                     key: try row.get("wait_key", as: String?.self) ?? ""),
                               deadline: Date(timeIntervalSince1970: try row.get("next_attempt_at")))
            }.sorted { $0.seq < $1.seq }
        }
    }

    package func resolveWaiting(_ seq: Int64, _ resolution: WaitingResolution, linger: TimeInterval, at: Date) async throws {
        let t = at.timeIntervalSince1970
        try await withConnection("resolve waiting") { connection, logger in
            switch resolution {
            case .dead(let deadReason):
                try await connection.query("""
                    UPDATE outbox SET status = \(literal: .dead), dead_reason = \(deadReason), finished_at = \(t), lease_until = 0, lease_owner = NULL
                    WHERE seq = \(seq) AND status = \(literal: .waiting)
                    """, logger: logger)
            case .stillWaiting(let waits):
                try await connection.query("""
                    UPDATE outbox SET wait_namespace = \(waits.namespace), wait_key = \(waits.key), lease_until = 0, lease_owner = NULL
                    WHERE seq = \(seq) AND status = \(literal: .waiting)
                    """, logger: logger)
            case .released(let message):
                try await connection.query("""
                    UPDATE outbox SET status = \(literal: .pending), person_key = \(message.identity.key), email = \(message.identity.email),
                        profile_id = \(message.identity.profileID), domain = \(message.identity.domain),
                        account_id = \(message.identity.accountID), item = \(message.item.encoded()), next_attempt_at = \(t + linger),
                        lease_until = 0, lease_owner = NULL, wait_namespace = NULL, wait_key = NULL, user_id = \(message.identity.userID)
                    WHERE seq = \(seq) AND status = \(literal: .waiting)
                    """, logger: logger)
            }
        }
    }

    package func storedWebhook(source: String, webhookID: String) async throws -> VerifiedWebhook? {
        try await withConnection("read webhook") { connection, logger in
            let rows = try await connection.query("""
                SELECT webhook_id, event_type, event_time, received_at, headers, body, secret_label, rules_version, routed_states, trace_parent
                FROM webhooks
                WHERE source = \(source) AND webhook_id = \(webhookID)
                """, logger: logger).rows()
            return try rows.first.map { try Self.webhook($0, source: source) }
        }
    }

    static func webhook(_ row: PostgresRandomAccessRow, source: String) throws -> VerifiedWebhook {
        let body = [UInt8](try row.get("body", as: ByteBuffer.self).readableBytesView)
        var headers: [String: String] = [:]
        if case .object(let object)? = try? JSONValue.parse(Array(try row.get("headers", as: String.self).utf8)) {
            for (k, v) in object { if let text = v.stringValue { headers[k] = text } }
        }
        var webhook = VerifiedWebhook(source: source, webhookID: try row.get("webhook_id"), eventType: try row.get("event_type"),
                                      eventTime: Date(timeIntervalSince1970: try row.get("event_time")),
                                      receivedAt: Date(timeIntervalSince1970: try row.get("received_at")), headers: headers, body: body,
                                      json: (try? JSONTape.parse(body)) ?? .null, secretLabel: try row.get("secret_label"),
                                      rulesVersion: try row.get("rules_version"))
        webhook.routedStates = VerifiedWebhook.routedStates(fromJSON: try row.get("routed_states", as: String?.self))
        webhook.traceParent = try row.get("trace_parent", as: String?.self)
        return webhook
    }
}

/// Which webhook.
struct AcceptKey: Hashable, Sendable {
    let source: String
    let webhookID: String
}

/// Which memory row: a key of one source.
struct MemorySlot: Hashable {
    let source: String
    let key: MemoryKey
}

extension AcceptRequest {
    var key: AcceptKey { AcceptKey(source: webhook.source, webhookID: webhook.webhookID) }
}

/// A batch of webhooks with their messages and memory entries as the columns `accept` binds: arrays cannot
/// hold NULL here, so absent text travels as "" (and becomes NULL again through NULLIF), an absent state time
/// as -1. Messages and memory entries name their webhook by (source, webhook id).
struct AcceptRows {
    var hookSources: [String] = [], hookIDs: [String] = [], types: [String] = [], hookTimes: [Double] = [], received: [Double] = []
    var headers: [String] = [], bodies: [ByteBuffer] = [], labels: [String] = [], versions: [String] = [], routedStates: [String] = []
    var traceParents: [String] = []
    var sources: [String] = [], webhookIDs: [String] = [], createdAt: [Double] = []
    var ids: [String] = [], routes: [String] = [], outputs: [String] = [], endpoints: [String] = [], kinds: [String] = []
    var personKeys: [String] = [], emails: [String] = [], profiles: [String] = [], domains: [String] = [], accounts: [String] = []
    var items: [String] = [], eventTimes: [Double] = [], statuses: [Int64] = [], dues: [Double] = [], problems: [String] = []
    var waitNamespaces: [String] = [], waitKeys: [String] = [], destinations: [String] = [], userIDs: [String] = []
    var memSources: [String] = [], memWebhookIDs: [String] = [], memAt: [Double] = []
    var namespaces: [String] = [], keys: [String] = [], memEmails: [String] = [], memProfiles: [String] = [], memDomains: [String] = []
    var memStates: [String] = [], memStateTimes: [Double] = []

    init() {}

    mutating func add(_ request: AcceptRequest) {
        let webhook = request.webhook
        let now = webhook.receivedAt.timeIntervalSince1970
        hookSources.append(webhook.source); hookIDs.append(webhook.webhookID); types.append(webhook.eventType)
        hookTimes.append(webhook.eventTime.timeIntervalSince1970); received.append(now)
        headers.append(JSONValue.object(webhook.headers.mapValues { .string($0) }).encoded()); bodies.append(ByteBuffer(bytes: webhook.body))
        labels.append(webhook.secretLabel); versions.append(webhook.rulesVersion); routedStates.append(webhook.routedStatesJSON ?? "")
        traceParents.append(webhook.traceParent ?? "")
        for message in request.messages {
            for destination in message.destinations {
                let status = OutboxStatus(message.disposition)
                sources.append(webhook.source); webhookIDs.append(webhook.webhookID); createdAt.append(now)
                destinations.append(destination.rawValue); userIDs.append(message.identity.userID ?? "")
                ids.append(message.messageID); routes.append(message.route); outputs.append(message.output.rawValue)
                endpoints.append(message.endpoint.rawValue); kinds.append(message.kind.rawValue); personKeys.append(message.identity.key)
                emails.append(message.identity.email ?? ""); profiles.append(message.identity.profileID ?? "")
                domains.append(message.identity.domain ?? ""); accounts.append(message.identity.accountID ?? "")
                items.append(message.item.encoded()); eventTimes.append(message.eventTime.timeIntervalSince1970)
                statuses.append(status.rawValue)
                dues.append(status.firstDue(acceptedAt: now, linger: request.linger, identityWait: request.identityWait))
                problems.append(message.problem ?? "")
                waitNamespaces.append(message.waitingFor?.namespace ?? ""); waitKeys.append(message.waitingFor?.key ?? "")
            }
        }
        // One entry per key (merged as sequential upserts would). The statement inserts webhooks and memory
        // entries in key order, so two batches holding the same keys wait for each other and never deadlock.
        // A state travels as JSON text with its time.
        var latest: [MemoryKey: Remembered] = [:]
        for entry in request.remembers { latest[entry.key] = latest[entry.key].map { $0.updated(by: entry) } ?? entry }
        for entry in latest.values {
            memSources.append(webhook.source); memWebhookIDs.append(webhook.webhookID); memAt.append(now)
            namespaces.append(entry.key.namespace); keys.append(entry.key.key)
            memEmails.append(entry.identity.email ?? ""); memProfiles.append(entry.identity.profileID ?? "")
            memDomains.append(entry.identity.domain ?? "")
            memStates.append(entry.state.map { JSONValue.object($0).encoded() } ?? "")
            memStateTimes.append(entry.stateAt?.timeIntervalSince1970 ?? -1)
        }
    }
}

extension PostgresStore {
    /// The accept statement with a batch's values bound. Its text is the same for every batch (every value is
    /// a bind), which is what lets `AcceptStatement` prepare it once. Only webhooks new to the database get
    /// their messages and memory entries stored; the result has one row for each of them.
    static func acceptQuery(_ rows: AcceptRows) -> PostgresQuery {
        return """
            WITH hook AS (
                INSERT INTO webhooks (source, webhook_id, event_type, event_time, received_at, headers, body, secret_label, rules_version,
                                      routed_states, trace_parent)
                SELECT w.source, w.webhook_id, w.event_type, w.event_time, w.received_at, w.headers, w.body, w.secret_label,
                       w.rules_version, NULLIF(w.routed_states, ''), NULLIF(w.trace_parent, '')
                FROM unnest(\(rows.hookSources)::text[], \(rows.hookIDs)::text[], \(rows.types)::text[], \(rows.hookTimes)::float8[],
                            \(rows.received)::float8[], \(rows.headers)::text[], \(rows.bodies)::bytea[], \(rows.labels)::text[],
                            \(rows.versions)::text[], \(rows.routedStates)::text[], \(rows.traceParents)::text[])
                     AS w(source, webhook_id, event_type, event_time, received_at, headers, body, secret_label, rules_version, routed_states,
                          trace_parent)
                ORDER BY w.source, w.webhook_id
                ON CONFLICT DO NOTHING RETURNING source, webhook_id
            ), queued AS (
                INSERT INTO outbox (message_id, destination, source, webhook_id, route, output, endpoint, kind, person_key, email, profile_id,
                    domain, account_id, item, event_time, created_at, status, next_attempt_at, dead_reason, finished_at,
                    wait_namespace, wait_key, user_id)
                SELECT m.id, m.destination, m.source, m.webhook_id, m.route, m.output, m.endpoint, m.kind, m.person_key,
                       NULLIF(m.email, ''), NULLIF(m.profile_id, ''), NULLIF(m.domain, ''), NULLIF(m.account_id, ''), m.item,
                       m.event_time, m.created_at, m.status, m.due, NULLIF(m.problem, ''),
                       CASE WHEN m.status = \(literal: .dead) THEN m.created_at END, NULLIF(m.wait_namespace, ''), NULLIF(m.wait_key, ''),
                       NULLIF(m.user_id, '')
                FROM unnest(\(rows.ids)::text[], \(rows.routes)::text[], \(rows.outputs)::text[], \(rows.endpoints)::text[], \(rows.kinds)::text[],
                            \(rows.personKeys)::text[], \(rows.emails)::text[], \(rows.profiles)::text[], \(rows.domains)::text[], \(rows.accounts)::text[],
                            \(rows.items)::text[], \(rows.eventTimes)::float8[], \(rows.statuses)::int8[], \(rows.dues)::float8[], \(rows.problems)::text[],
                            \(rows.waitNamespaces)::text[], \(rows.waitKeys)::text[], \(rows.destinations)::text[], \(rows.userIDs)::text[],
                            \(rows.sources)::text[], \(rows.webhookIDs)::text[], \(rows.createdAt)::float8[])
                     AS m(id, route, output, endpoint, kind, person_key, email, profile_id, domain, account_id, item, event_time,
                          status, due, problem, wait_namespace, wait_key, destination, user_id, source, webhook_id, created_at)
                WHERE (m.source, m.webhook_id) IN (SELECT source, webhook_id FROM hook)
                ON CONFLICT (\(unescaped: OutboxKey.columns)) DO NOTHING
                RETURNING source, webhook_id, message_id, status
            ), remembered AS (
                INSERT INTO identities (source, namespace, key, email, profile_id, domain, updated_at, state, state_at)
                SELECT r.source, r.namespace, r.key, NULLIF(r.email, ''), NULLIF(r.profile_id, ''), NULLIF(r.domain, ''), r.at,
                       NULLIF(r.state, ''), CASE WHEN r.state <> '' THEN r.state_at END
                FROM unnest(\(rows.namespaces)::text[], \(rows.keys)::text[], \(rows.memEmails)::text[], \(rows.memProfiles)::text[], \(rows.memDomains)::text[],
                            \(rows.memStates)::text[], \(rows.memStateTimes)::float8[], \(rows.memSources)::text[], \(rows.memWebhookIDs)::text[],
                            \(rows.memAt)::float8[])
                     AS r(namespace, key, email, profile_id, domain, state, state_at, source, webhook_id, at)
                WHERE (r.source, r.webhook_id) IN (SELECT source, webhook_id FROM hook)
                ORDER BY r.source, r.namespace, r.key
                \(unescaped: identityMergeSQL)
                RETURNING 1
            )
            SELECT h.source, h.webhook_id,
                   (SELECT count(DISTINCT q.message_id) FROM queued q WHERE q.source = h.source AND q.webhook_id = h.webhook_id AND q.status = \(literal: .pending)),
                   (SELECT count(DISTINCT q.message_id) FROM queued q WHERE q.source = h.source AND q.webhook_id = h.webhook_id AND q.status = \(literal: .dead)),
                   (SELECT count(DISTINCT q.message_id) FROM queued q WHERE q.source = h.source AND q.webhook_id = h.webhook_id AND q.status = \(literal: .waiting))
            FROM hook h
            """
    }
}

/// `accept` as a named prepared statement (postgres-nio prepares it once per connection).
struct AcceptStatement: PostgresPreparedStatement {
    static let sql = PostgresStore.acceptQuery(AcceptRows()).sql
    /// source, webhook id, then how many of its messages are pending, dead and waiting: one row per webhook stored.
    typealias Row = (String, String, Int64, Int64, Int64)

    let binds: PostgresBindings

    init(rows: AcceptRows) { binds = PostgresStore.acceptQuery(rows).binds }

    func makeBindings() throws -> PostgresBindings { binds }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

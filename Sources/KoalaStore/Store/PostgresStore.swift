import Foundation
import KoalaCore
import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// The shared store for several replicas: one PostgreSQL database (postgres-nio's pooled client).
///
/// Same contract as `SQLiteStore`, with what sharing needs on top:
/// - dedupe across replicas by the primary key (source, webhook_id): a second replica's insert waits for the
///   first's transaction and then finds the row;
/// - claims take `FOR UPDATE SKIP LOCKED` rows and stamp a lease (`lease_until`, `lease_owner`); a replica that
///   dies mid-batch leaves leases that run out and are claimed again by another;
/// - claims run one at a time across replicas (a transaction-scoped advisory lock) so the per-person check sees
///   every lease already taken: SKIP LOCKED alone would let two replicas each claim one message of the same person;
/// - an outcome other than "delivered" is recorded only by the lease holder (or once the lease has run out);
/// - concurrent accepts commit together: one statement stores a batch (group commit, as SQLite's writer does).
///
/// `run()` runs postgres-nio's connection pool, checks durability and applies migrations; store calls wait
/// for that (within their operation timeout) and fail with its error if it failed.
package final class PostgresStore: WebhookStore {
    let client: PostgresClient
    let settings: PostgresURL
    let logger: Logger
    /// Who holds the leases this process takes.
    let owner: String
    private let started = StartGate()
    /// This schema's claim lock: replicas of one service take turns, other schemas never wait for them.
    let claimLock: Int64
    private let running = Mutex(false)
    private let acceptQueue = Mutex<(requests: [QueuedAccept], committers: Int, stopped: Bool)>(([], 0, false))
    /// Work that `run()` starts as its own child tasks: a group-commit committer, or an ANALYZE of the outbox.
    private enum Job { case commit, analyze }
    private let (jobs, startJob) = AsyncStream.makeStream(of: Job.self, bufferingPolicy: .unbounded)

    static let migrationLock: Int64 = 0x6B6F_616C_615F_6D69 // "koala_mi"
    static let claimLockBase: Int64 = 0x6B6F_616C_615F_636C // "koala_cl"

    /// A claim slower than this has the outbox analyzed (`analyzeOutboxIfDue`).
    let slowClaim: Duration
    /// When this process last had PostgreSQL analyze the outbox.
    private let lastAnalyze = Mutex<ContinuousClock.Instant?>(nil)
    /// Whether the last accept found the database refusing writes (disk full, read-only).
    private let refusals = WriteRefusals()

    /// Reads the address (a malformed one throws here); nothing connects before `run()`.
    package init(url: String, logger: Logger, slowClaim: Duration = .milliseconds(250)) throws {
        settings = try PostgresURL(url)
        self.logger = logger
        self.slowClaim = slowClaim
        client = PostgresClient(configuration: settings.clientConfiguration, backgroundLogger: logger)
        claimLock = Self.claimLockBase ^ (Self.migrationLockKey(schema: settings.schema) ^ Self.migrationLock)
        owner = "\(ProcessInfo.processInfo.hostName)/\(ProcessInfo.processInfo.processIdentifier)/\(UUID().uuidString.prefix(8))"
    }

    /// Runs the connection pool until graceful shutdown or cancellation. Connecting, checking durability and
    /// migrating must succeed within `start_timeout_ms` (10 s), or `run()` throws (and so does every store call).
    /// The group-commit committers and the ANALYZE after a slow claim run as its children, so they end with it.
    package func run() async throws {
        guard !running.withLock({ running in defer { running = true }; return running }) else { throw StoreError.stopped }
        try await withThrowingTaskGroup(of: Void.self) { group in
            let client = self.client
            group.addTask { await client.run() }
            group.addTask { await self.runJobs() }
            do {
                try await withDeadline(Double(settings.startTimeoutMS) / 1000, "connect and migrate") { [settings, logger] in
                    try await client.withConnection { connection in
                        try await Self.checkDurable(connection, logger: logger)
                        try await Self.migrate(connection, schema: settings.schema, logger: logger)
                    }
                }
                started.settle(nil)
            } catch {
                started.settle(error)
                group.cancelAll()
                throw error
            }
            try await group.waitForAll()
            started.settle(StoreError.stopped)
        }
    }

    var timeout: Double { Double(settings.operationTimeoutMS) / 1000 }

    /// Runs one store call on a pooled connection, within the operation timeout.
    private func withConnection<T: Sendable>(_ name: String, _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T) async throws -> T {
        // Start-up (connecting, migrating) has its own deadline in `run()`; the operation's starts after it.
        try await started.wait()
        return try await withDeadline(timeout, name) { [client, logger] in
            try await client.withConnection { connection in try await body(connection, logger) }
        }
    }

    /// Runs one store call in a transaction, within the operation timeout.
    private func withTransaction<T: Sendable>(_ name: String, _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T) async throws -> T {
        // Start-up (connecting, migrating) has its own deadline in `run()`; the operation's starts after it.
        try await started.wait()
        return try await withDeadline(timeout, name) { [client, logger] in
            try await client.withTransaction(logger: logger) { connection in try await body(connection, logger) }
        }
    }

    // MARK: Schema

    static func checkDurable(_ connection: PostgresConnection, logger: Logger) async throws {
        for setting in ["fsync", "synchronous_commit"] {
            let rows = try await connection.query(PostgresQuery(unsafeSQL: "SHOW \(setting)"), logger: logger).rows()
            let value: String = try rows.first?.get(setting) ?? ""
            if value == "off" {
                throw StoreError.notDurable("PostgreSQL has \(setting) = off, so a committed webhook can be lost in a crash; turn it on")
            }
        }
    }

    /// Versioned migrations, those pending applied in one transaction, under a session advisory lock so replicas starting
    /// together apply each exactly once.
    static let migrations: [(version: Int64, name: String, statements: [String])] = [
        (1, "webhooks, outbox, identities", [
            """
            CREATE TABLE webhooks (
                source text NOT NULL, webhook_id text NOT NULL, event_type text NOT NULL,
                event_time double precision NOT NULL, received_at double precision NOT NULL,
                headers text NOT NULL, body bytea NOT NULL, secret_label text NOT NULL, rules_version text NOT NULL,
                PRIMARY KEY (source, webhook_id))
            """,
            "CREATE INDEX webhooks_received ON webhooks (source, received_at)",
            """
            CREATE TABLE outbox (
                seq bigserial PRIMARY KEY, message_id text NOT NULL UNIQUE,
                source text NOT NULL, webhook_id text NOT NULL, route text NOT NULL, output text NOT NULL,
                endpoint text NOT NULL, kind text NOT NULL, person_key text NOT NULL,
                email text, profile_id text, domain text, account_id text, item text NOT NULL,
                event_time double precision NOT NULL, created_at double precision NOT NULL,
                status bigint NOT NULL DEFAULT \(literal: .pending), attempts bigint NOT NULL DEFAULT 0,
                next_attempt_at double precision NOT NULL, lease_until double precision NOT NULL DEFAULT 0,
                lease_owner text, last_error text, dead_reason text, dead_detail text, finished_at double precision,
                wait_namespace text, wait_key text, lane bigint NOT NULL DEFAULT \(literal: .live))
            """,
            "CREATE INDEX outbox_due ON outbox (lane, next_attempt_at) WHERE status = \(literal: .pending)",
            "CREATE INDEX outbox_person ON outbox (person_key, seq) WHERE status = \(literal: .pending)",
            "CREATE INDEX outbox_dead ON outbox (finished_at) WHERE status = \(literal: .dead)",
            "CREATE INDEX outbox_waiting ON outbox (source, wait_namespace, wait_key) WHERE status = \(literal: .waiting)",
            "CREATE INDEX outbox_webhook ON outbox (source, webhook_id)",
            "CREATE INDEX outbox_email ON outbox (email)",
            """
            CREATE TABLE identities (
                source text NOT NULL, namespace text NOT NULL, key text NOT NULL,
                email text, profile_id text, domain text, updated_at double precision NOT NULL,
                PRIMARY KEY (source, namespace, key))
            """,
            "CREATE INDEX identities_email ON identities (email)",
        ]),
        (2, "state memory", [
            "ALTER TABLE identities ADD COLUMN state text",
            "ALTER TABLE identities ADD COLUMN state_at double precision",
            "ALTER TABLE webhooks ADD COLUMN routed_states text",
        ]),
        (3, "one outbox entry per destination", [
            "ALTER TABLE outbox ADD COLUMN destination text NOT NULL DEFAULT 'koala'",
            "ALTER TABLE outbox DROP CONSTRAINT outbox_message_id_key",
            "ALTER TABLE outbox ADD CONSTRAINT outbox_message_destination UNIQUE (message_id, destination)",
            "DROP INDEX outbox_person",
            "CREATE INDEX outbox_person ON outbox (destination, person_key, seq) WHERE status = \(literal: .pending)",
        ]),
        (4, "user id for Segment-compatible destinations", [
            "ALTER TABLE outbox ADD COLUMN user_id text",
        ]),
        // Claims read the queue in seq order and stop after `limit` rows, instead of sorting every due row.
        (5, "claims read the queue in order", [
            "CREATE INDEX outbox_claim ON outbox (destination, lane, seq) WHERE status = \(literal: .pending)",
        ]),
        // Since 5 no query reads pending messages by due time; the index only cost a write per message.
        (6, "no index the claim no longer reads", [
            "DROP INDEX IF EXISTS outbox_due",
        ]),
        // Console sign-outs, seen by every replica and kept across restarts.
        (7, "console sign-outs", [
            ConsoleRevocations.createTable(real: "double precision"),
        ]),
        // Where backfill and reconcile are: a rerun continues from the last page stored.
        (8, "backfill progress", [
            BackfillProgress.createTable(real: "double precision"),
        ]),
    ]

    /// The migration lock of one schema: replicas on the same schema take turns, other schemas (other
    /// services, or tests side by side) never wait for each other. FNV-1a, so every process computes the same key.
    static func migrationLockKey(schema: String?) -> Int64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in (schema ?? "public").utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return migrationLock ^ Int64(bitPattern: hash)
    }

    /// How long a replica waits for the migration lock while another replica migrates: most of the start-up
    /// deadline (10 s), not the statement timeout, so replicas starting together on a loaded database wait for
    /// the one migrating instead of failing after 5 s. A replica that cannot get it by then fails to start and
    /// changes nothing.
    static let migrationLockWait = 8.0

    static func migrate(_ connection: PostgresConnection, schema: String?, logger: Logger) async throws {
        let migrationLock = migrationLockKey(schema: schema)
        try await connection.perform(PostgresQuery(unsafeSQL: "SET statement_timeout = \(Int(migrationLockWait * 1000))"), logger: logger)
        try await connection.perform("SELECT pg_advisory_lock(\(migrationLock))", logger: logger)
        // Back to the connection's own statement timeout (its start-up value) for the migrations themselves.
        try await connection.perform("RESET statement_timeout", logger: logger)
        do {
            if let schema {
                try await connection.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(schema)"), logger: logger)
            }
            try await connection.query("""
                CREATE TABLE IF NOT EXISTS koala_router_migrations (
                    version bigint PRIMARY KEY, name text NOT NULL, applied_at double precision NOT NULL)
                """, logger: logger)
            let applied = Set(try await connection.query("SELECT version FROM koala_router_migrations", logger: logger)
                .rows().map { try $0.get("version", as: Int64.self) })
            // Every pending migration in one transaction: a new database (or schema) is created with one commit
            // instead of one per migration (replicas starting together on a loaded machine waited on each flush),
            // and an upgrade applies whole or not at all.
            let pending = migrations.filter { !applied.contains($0.version) }
            if !pending.isEmpty {
                try await connection.withTransaction(logger: logger) { connection in
                    for migration in pending {
                        for statement in migration.statements {
                            try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                        }
                        try await connection.query("""
                            INSERT INTO koala_router_migrations (version, name, applied_at)
                            VALUES (\(migration.version), \(migration.name), \(Date().timeIntervalSince1970))
                            """, logger: logger)
                    }
                }
                for migration in pending {
                    logger.info("database migrated", metadata: ["version": "\(migration.version)", "migration": "\(migration.name)"])
                }
            }
        } catch {
            do {
                try await connection.perform("SELECT pg_advisory_unlock(\(migrationLock))", logger: logger)
            } catch let unlockError {
                // The session lock goes with the connection; the migration error below is the one to act on.
                logger.warning("could not release the migration lock after a failed migration", metadata: ["error": "\(unlockError)"])
            }
            throw error
        }
        try await connection.perform("SELECT pg_advisory_unlock(\(migrationLock))", logger: logger)
    }

    // MARK: Ingest

    /// Accepts commit in batches (`commitQueued`): one statement stores a whole batch, so one round trip and
    /// one implicit transaction carry it. Its text is the same for every batch (every value is a bind in an
    /// array), so each connection parses and plans it once.
    package func accept(_ webhook: VerifiedWebhook, messages: [KoalaMessage], remembers: [Remembered],
                       linger: TimeInterval, identityWait: TimeInterval) async throws -> AcceptOutcome {
        try await refusals.observing(Self.refusal) {
            try await store(webhook, messages: messages, remembers: remembers, linger: linger, identityWait: identityWait)
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

    private func store(_ webhook: VerifiedWebhook, messages: [KoalaMessage], remembers: [Remembered],
                       linger: TimeInterval, identityWait: TimeInterval) async throws -> AcceptOutcome {
        let request = AcceptRequest(webhook: webhook, messages: messages, remembers: remembers, linger: linger, identityWait: identityWait)
        // The states this webhook was routed against (and those it remembers): if another replica moved one
        // since, nothing is stored and ingest routes it again. Checked under transaction advisory locks on
        // those keys, taken in key order, so two replicas never both pass the check for one key.
        guard let routedStates = webhook.routedStates else { return try await commitWithOthers(request) }
        var expected: [MemoryKey: Double?] = [:]
        for entry in remembers where entry.state != nil { expected[entry.key] = .some(nil) }
        for entry in routedStates { expected[entry.key] = entry.stateAt?.timeIntervalSince1970 }
        guard !expected.isEmpty else { return try await commitWithOthers(request) }
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
    private func commitWithOthers(_ request: AcceptRequest) async throws -> AcceptOutcome {
        try await started.wait()
        return try await withCheckedThrowingContinuation { continuation in
            let queued = QueuedAccept(request: request, continuation: continuation)
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
    private func runJobs() async {
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
            for queued in left { queued.continuation.resume(throwing: StoreError.stopped) }
        }
    }

    /// How many batches commit at once: while one waits for its commit, the next gathers and goes.
    static let committers = 2
    /// The most accepts one statement carries.
    static let batchLimit = 64

    /// One committer: takes batches until the queue is empty, then ends.
    private func commitQueued() async {
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
                for (queued, outcome) in zip(batch, outcomes) { queued.continuation.resume(returning: outcome) }
                continue
            } catch where batch.count == 1 {
                batch[0].continuation.resume(throwing: error)
                continue
            } catch {}
            await withTaskGroup(of: Void.self) { group in
                for queued in batch {
                    group.addTask {
                        do {
                            queued.continuation.resume(returning: try await self.withConnection("accept") { connection, logger in
                                try await Self.store([queued.request], on: connection, logger: logger)[0]
                            })
                        } catch {
                            queued.continuation.resume(throwing: error)
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
                SELECT webhook_id, event_type, event_time, received_at, headers, body, secret_label, rules_version, routed_states FROM webhooks
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
                                      json: (try? JSONValue.parse(body)) ?? .null, secretLabel: try row.get("secret_label"),
                                      rulesVersion: try row.get("rules_version"))
        webhook.routedStates = VerifiedWebhook.routedStates(fromJSON: try row.get("routed_states", as: String?.self))
        return webhook
    }

    // MARK: Delivery

    package func claimDue(now: Date, limit: Int, lease: TimeInterval, destination: Destination) async throws -> [OutboxMessage] {
        let t = now.timeIntervalSince1970
        // One claimer at a time across replicas, per destination: one destination's claims never wait for another's.
        // Koala's key is the one every earlier version takes, so a rolling upgrade keeps claims one at a time.
        let lock = destination == .koala ? claimLock : claimLock ^ Int64(destination.rawValue.utf8.reduce(0) { $0 &* 31 &+ Int($1) })
        let name = destination.rawValue
        let began = ContinuousClock.now
        defer { if ContinuousClock.now - began > slowClaim { analyzeOutboxIfDue() } }
        return try await withTransaction("claim") { [owner] connection, logger in
            // Released at commit, when the leases become visible.
            try await connection.perform("SELECT pg_advisory_xact_lock(\(lock))", logger: logger)
            // The due rows, locked, then each person's batch filled (as SQLite's claim does), then leased.
            // `OFFSET 0` keeps the NOT EXISTS a per-row probe of the person's index: planned as an anti join
            // while the table's statistics still describe it empty (a backlog that built up since the last
            // ANALYZE), it scanned every pending row for each candidate, 17 s for a 30,000-message backlog.
            func claim(lane: OutboxLane, limit: Int) async throws -> [OutboxMessage] {
                let due = try await connection.query("""
                    SELECT o.seq, o.message_id, o.source, o.route, o.endpoint, o.kind, o.email, o.profile_id, o.domain, o.account_id,
                           o.user_id, o.item, o.event_time, o.created_at, o.attempts, o.person_key
                    FROM outbox o
                    WHERE o.status = \(literal: .pending) AND o.destination = \(name) AND o.lane = \(literal: lane) AND o.next_attempt_at <= \(t) AND o.lease_until <= \(t)
                      AND NOT EXISTS (
                        SELECT 1 FROM outbox p
                        WHERE p.status = \(literal: .pending) AND p.destination = o.destination AND p.person_key = o.person_key AND p.seq < o.seq
                          AND (p.next_attempt_at > \(t) OR p.lease_until > \(t)) OFFSET 0)
                    ORDER BY o.seq LIMIT \(limit)
                    FOR UPDATE OF o SKIP LOCKED
                    """, logger: logger).rows().map { row in try ClaimedRow(row, destination: destination) }
                let round = limit > 1 ? try await fillPeople(due, limit: limit) : due
                guard !round.isEmpty else { return [] }
                try await connection.query("""
                    UPDATE outbox SET lease_until = \(t + lease), lease_owner = \(owner) WHERE seq = ANY(\(round.map(\.message.seq)))
                    """, logger: logger)
                return round.map(\.message)
            }
            /// Each person's next due messages after those claimed, in order, up to Koala's cap per request, stopping
            /// at one not due or leased; people in order of their first claimed message; the last people are left
            /// for the next round rather than going over the limit.
            func fillPeople(_ rows: [ClaimedRow], limit: Int) async throws -> [ClaimedRow] {
                var people: [String] = [], claimed: [String: [ClaimedRow]] = [:]
                for row in rows {
                    if claimed[row.personKey] == nil { people.append(row.personKey) }
                    claimed[row.personKey, default: []].append(row)
                }
                let cap = min(KoalaEndpoint.maxPerType, limit)
                let open = people.filter { (claimed[$0]?.count ?? 0) < cap }
                if !open.isEmpty {
                    let next = try await connection.query("""
                        SELECT x.* FROM unnest(\(open), \(open.map { claimed[$0]!.last!.message.seq })) AS c(person_key, after)
                        CROSS JOIN LATERAL (
                            SELECT o.seq, o.message_id, o.source, o.route, o.endpoint, o.kind, o.email, o.profile_id, o.domain,
                                   o.account_id, o.user_id, o.item, o.event_time, o.created_at, o.attempts, o.person_key,
                                   o.next_attempt_at <= \(t) AND o.lease_until <= \(t) AS ready
                            FROM outbox o
                            WHERE o.status = \(literal: .pending) AND o.destination = \(name) AND o.person_key = c.person_key AND o.seq > c.after
                            ORDER BY o.seq LIMIT \(cap)) x
                        ORDER BY x.person_key, x.seq
                        """, logger: logger).rows()
                    var stopped = Set<String>()
                    for row in next {
                        let claimedRow = try ClaimedRow(row, destination: destination)
                        let key = claimedRow.personKey
                        guard !stopped.contains(key), claimed[key]!.count < cap, try row.get("ready", as: Bool.self) else {
                            stopped.insert(key)
                            continue
                        }
                        claimed[key]!.append(claimedRow)
                    }
                }
                var round: [ClaimedRow] = []
                for key in people {
                    let mine = claimed[key] ?? []
                    if !round.isEmpty && round.count + mine.count > limit { break }
                    round += mine
                }
                return round
            }
            // Live traffic first; the replay lane gets a small, capped share of each round.
            var messages = try await claim(lane: .live, limit: limit)
            let replayShare = min(SQLiteStore.replayPerRound, max(0, limit - messages.count))
            if replayShare > 0 { messages += try await claim(lane: .replay, limit: replayShare) }
            return messages
        }
    }

    /// A slow claim usually means the planner still sees the outbox as it was at the last ANALYZE: a backlog
    /// that built up in seconds, before autovacuum's next look (a minute later, or never on a busy server),
    /// and then the claim probes the wrong index, a second per round for 30,000 messages instead of a few
    /// milliseconds. So a slow claim refreshes the statistics, at most once a minute per process.
    private func analyzeOutboxIfDue() {
        let now = ContinuousClock.now
        let due = lastAnalyze.withLock { last in
            if let last, now - last < .seconds(60) { return false }
            last = now
            return true
        }
        if due { startJob.yield(.analyze) }
    }

    private func analyzeOutbox() async {
        do {
            try await withConnection("analyze outbox") { connection, logger in
                try await connection.query("ANALYZE outbox", logger: logger)
            }
            logger.info("a delivery claim was slow: analyzed the outbox so the next claims are planned for its size")
        } catch {
            logger.warning("could not analyze the outbox after a slow claim", metadata: ["error": "\(error)"])
        }
    }

    /// A claimed row: the message and whose it is.
    struct ClaimedRow {
        let message: OutboxMessage
        let personKey: String

        init(_ row: PostgresRandomAccessRow, destination: Destination) throws {
            message = try OutboxMessage(row: row, destination: destination)
            personKey = try row.get("person_key")
        }
    }

    package func record(_ outcomes: [DeliveryOutcome]) async throws {
        guard !outcomes.isEmpty else { return }
        let now = Date().timeIntervalSince1970
        // A round is mostly deliveries: all of them go in one statement; retries and dead letters are rare.
        var deliveredSeqs: [Int64] = [], deliveredAt: [Double] = []
        var others: [DeliveryOutcome] = []
        for outcome in outcomes {
            if case .delivered(let seqs, let at) = outcome {
                deliveredSeqs += seqs
                deliveredAt += Array(repeating: at.timeIntervalSince1970, count: seqs.count)
            } else {
                others.append(outcome)
            }
        }
        try await withTransaction("record outcomes") { [owner, deliveredSeqs, deliveredAt, others] connection, logger in
            if !deliveredSeqs.isEmpty {
                // Delivered is a fact, whoever holds the lease now.
                try await connection.query("""
                    UPDATE outbox SET status = \(literal: .delivered), lease_until = 0, lease_owner = NULL, finished_at = d.at, attempts = attempts + 1
                    FROM unnest(\(deliveredSeqs)::int8[], \(deliveredAt)::float8[]) AS d(seq, at)
                    WHERE outbox.seq = d.seq AND outbox.status = \(literal: .pending)
                    """, logger: logger)
            }
            for outcome in others {
                switch outcome {
                case .delivered:
                    break
                case .dryRun(let seqs, let at):
                    // Handled in dry run is a fact too, whoever holds the lease now.
                    try await connection.query("""
                        UPDATE outbox SET status = \(literal: .dryRun), lease_until = 0, lease_owner = NULL,
                            finished_at = \(at.timeIntervalSince1970), attempts = attempts + 1
                        WHERE status = \(literal: .pending) AND seq = ANY(\(seqs))
                        """, logger: logger)
                case .retry(let seqs, let next, let error):
                    try await connection.query("""
                        UPDATE outbox SET lease_until = 0, lease_owner = NULL, next_attempt_at = \(next.timeIntervalSince1970),
                            last_error = \(error), attempts = attempts + 1
                        WHERE status = \(literal: .pending) AND seq = ANY(\(seqs)) AND (lease_owner = \(owner) OR lease_until <= \(now))
                        """, logger: logger)
                case .dead(let seqs, let reason, let detail, let at):
                    try await connection.query("""
                        UPDATE outbox SET status = \(literal: .dead), lease_until = 0, lease_owner = NULL, dead_reason = \(reason),
                            dead_detail = \(detail), finished_at = \(at.timeIntervalSince1970), attempts = attempts + 1
                        WHERE status = \(literal: .pending) AND seq = ANY(\(seqs)) AND (lease_owner = \(owner) OR lease_until <= \(now))
                        """, logger: logger)
                }
            }
        }
    }

    // MARK: Retention

    /// Runs a data-changing statement and returns how many rows it changed.
    private static func changed(_ connection: PostgresConnection, _ statement: SQLStatement, logger: Logger) async throws -> Int {
        var wrapped = statement
        wrapped.text = "WITH changed AS (\(statement.text) RETURNING 1) SELECT count(*) AS n FROM changed"
        let rows = try await connection.query(wrapped.query, logger: logger).rows()
        return Int(try rows.first?.get("n", as: Int64.self) ?? 0)
    }

    package func prune(before cutoff: Date) async throws -> PruneReport {
        let t = cutoff.timeIntervalSince1970
        return try await withTransaction("prune") { connection, logger in
            var changed: [Int] = []
            for statement in OutboxSQL.prune(before: t, .postgres) { changed.append(try await Self.changed(connection, statement, logger: logger)) }
            return PruneReport(webhooks: changed[1], messages: changed[0])
        }
    }

    package func forget(email raw: String) async throws -> PruneReport {
        let email = Identity.normalizeEmail(raw) ?? raw.lowercased()
        return try await withTransaction("forget") { connection, logger in
            var changed: [Int] = []
            for statement in OutboxSQL.forget(email: email, .postgres) { changed.append(try await Self.changed(connection, statement, logger: logger)) }
            return PruneReport(webhooks: changed[1], messages: changed[0], identities: changed[2])
        }
    }

    // MARK: Replay

    package func storedWebhooks(source: String, since: Date, until: Date, after cursor: StoredCursor?, limit: Int) async throws -> [VerifiedWebhook] {
        try await withConnection("read webhooks") { connection, logger in
            var sql = SQLStatement(.postgres)
            sql.text = """
                SELECT webhook_id, event_type, event_time, received_at, headers, body, secret_label, rules_version, routed_states FROM webhooks
                WHERE source = \(sql.bind(source)) AND received_at >= \(sql.bind(since.timeIntervalSince1970))
                  AND received_at < \(sql.bind(until.timeIntervalSince1970))
                """
            if let cursor {
                let at = sql.bind(cursor.receivedAt.timeIntervalSince1970)
                sql.text += " AND (received_at > \(at) OR (received_at = \(at) AND webhook_id > \(sql.bind(cursor.webhookID))))"
            }
            sql.text += " ORDER BY received_at, webhook_id LIMIT \(sql.bind(limit))"
            return try await connection.query(sql.query, logger: logger).rows().map { try Self.webhook($0, source: source) }
        }
    }

    package func storedMessages(source: String, webhookID: String, destination: Destination) async throws -> [String: StoredMessage] {
        let destinationName = destination.rawValue
        return try await withConnection("read messages") { connection, logger in
            var out: [String: StoredMessage] = [:]
            for row in try await connection.query("""
                SELECT message_id, route, item, status FROM outbox WHERE source = \(source) AND webhook_id = \(webhookID) AND destination = \(destinationName)
                """, logger: logger).rows() {
                let state = OutboxStatus(rawValue: try row.get("status", as: Int64.self)) ?? .pending
                let id: String = try row.get("message_id")
                out[id] = StoredMessage(messageID: id, route: try row.get("route"), itemJSON: try row.get("item"), state: state)
            }
            return out
        }
    }

    package func enqueueReplay(_ messages: [KoalaMessage], at: Date) async throws -> Int {
        let now = at.timeIntervalSince1970
        return try await withTransaction("enqueue replay") { connection, logger in
            var queued = 0
            for message in messages where message.disposition == .send {
              for destination in message.destinations {
                var upsert = OutboxSQL.enqueueReplay(message, destination: destination, at: now, .postgres)
                upsert.text += " RETURNING 1"
                queued += try await connection.query(upsert.query, logger: logger).count()
              }
            }
            return queued
        }
    }

    // MARK: Dead letters

    /// Appends the conditions selecting the dead letters a filter means.
    package func deadLetters(matching filter: DeadLetterFilter, limit: Int) async throws -> [DeadLetter] {
        let query = OutboxSQL.deadLetters(filter, limit: limit, .postgres).query
        return try await withConnection("read dead letters") { connection, logger in
            try await connection.query(query, logger: logger).rows().map { row in try DeadLetter(row: row) }
        }
    }

    package func retryDeadLetters(matching filter: DeadLetterFilter, at: Date) async throws -> Int {
        let statement = OutboxSQL.retryDeadLetters(filter, at: at, .postgres)
        return try await withTransaction("retry dead letters") { connection, logger in
            try await Self.changed(connection, statement, logger: logger)
        }
    }

    package func dropDeadLetters(matching filter: DeadLetterFilter) async throws -> Int {
        let statement = OutboxSQL.dropDeadLetters(filter, .postgres)
        return try await withTransaction("drop dead letters") { connection, logger in
            try await Self.changed(connection, statement, logger: logger)
        }
    }

    // MARK: Status

    package func counts() async throws -> OutboxCounts {
        try await withConnection("counts") { connection, logger in
            var counts = OutboxCounts(pending: 0, delivered: 0, dead: 0, webhooks: 0)
            for row in try await connection.query("SELECT status, count(*) AS n FROM outbox GROUP BY status", logger: logger).rows() {
                counts.add(OutboxStatus(rawValue: try row.get("status", as: Int64.self)), count: Int(try row.get("n", as: Int64.self)))
            }
            let webhooks = try await connection.query("SELECT count(*) AS n FROM webhooks", logger: logger).rows()
            counts.webhooks = Int(try webhooks.first?.get("n", as: Int64.self) ?? 0)
            return counts
        }
    }

    package func queueStats(now: Date) async throws -> QueueStats {
        try await withConnection("queue stats") { connection, logger in
            var stats = QueueStats()
            for row in try await connection.query("""
                SELECT status, count(*) AS n, min(created_at) AS oldest FROM outbox WHERE status IN (\(literal: [.pending, .dead, .waiting])) GROUP BY status
                """, logger: logger).rows() {
                stats.add(OutboxStatus(rawValue: try row.get("status", as: Int64.self)), count: Int(try row.get("n", as: Int64.self)),
                          oldest: try row.get("oldest", as: Double?.self), now: now)
            }
            return stats
        }
    }

    package func sourceActivity(sources: [String], now: Date) async throws -> [String: SourceActivity] {
        let t = now.timeIntervalSince1970
        return try await withConnection("source activity") { connection, logger in
            var out: [String: SourceActivity] = [:]
            for row in try await connection.query("""
                SELECT s.source,
                       (SELECT max(received_at) FROM webhooks w WHERE w.source = s.source) AS last,
                       (SELECT count(*) FROM webhooks w WHERE w.source = s.source AND w.received_at >= \(t - 3600)) AS hour,
                       (SELECT count(*) FROM webhooks w WHERE w.source = s.source AND w.received_at >= \(t - 86400)) AS day
                FROM unnest(\(sources)::text[]) AS s(source)
                """, logger: logger).rows() {
                out[try row.get("source")] = SourceActivity(
                    lastReceived: try row.get("last", as: Double?.self).map { Date(timeIntervalSince1970: $0) },
                    lastHour: Int(try row.get("hour", as: Int64.self)), lastDay: Int(try row.get("day", as: Int64.self)))
            }
            return out
        }
    }

    package func webhooks(source: String, matching query: WebhookQuery, after cursor: WebhookCursor?, limit: Int) async throws -> [WebhookSummary] {
        let (sql, binds) = WebhookListing.bySource(source, query: query, after: cursor, limit: limit) { "$\($0)" }
        return try await listing(sql, binds)
    }

    package func webhooks(email: String, limit: Int) async throws -> [WebhookSummary] {
        let (sql, binds) = WebhookListing.byEmail(email, limit: limit) { "$\($0)" }
        return try await listing(sql, binds)
    }

    private func listing(_ sql: String, _ binds: [ListingBind]) async throws -> [WebhookSummary] {
        var bindings = PostgresBindings()
        for bind in binds {
            switch bind {
            case .text(let text): bindings.append(text)
            case .real(let real): bindings.append(real)
            }
        }
        let query = PostgresQuery(unsafeSQL: sql, binds: bindings)
        return try await withConnection("list webhooks") { connection, logger in
            try await connection.query(query, logger: logger).rows().map { row in
                try WebhookListing.summary(source: try row.get("source"), webhookID: try row.get("webhook_id"), eventType: try row.get("event_type"),
                                           receivedAt: try row.get("received_at")) { Int(try row.get("n\($0.rawValue)", as: Int64.self)) }
            }
        }
    }

    package func messages(source: String, webhookID: String) async throws -> [MessageRecord] {
        var bindings = PostgresBindings()
        bindings.append(source)
        bindings.append(webhookID)
        let query = PostgresQuery(unsafeSQL: WebhookListing.messages { "$\($0)" }, binds: bindings)
        return try await withConnection("webhook messages") { connection, logger in
            try await connection.query(query, logger: logger).rows().map { row in try MessageRecord(row: row) }
        }
    }

    package func ready() async throws {
        try await started.wait()
    }

    package func revokeConsoleSession(nonce: String, expires: Date, now: Date) async throws {
        try await withTransaction("console sign-out") { connection, logger in
            try await connection.query(PostgresQuery(unsafeSQL: ConsoleRevocations.pruneExpired { "$\($0)" },
                                                     binds: Self.bindings(now.timeIntervalSince1970)), logger: logger)
            try await connection.query(PostgresQuery(unsafeSQL: ConsoleRevocations.upsert({ "$\($0)" }, greatest: "GREATEST"),
                                                     binds: Self.bindings(nonce, expires.timeIntervalSince1970)), logger: logger)
        }
    }

    package func revokeConsoleSessions(issuedBefore: Date) async throws {
        try await withConnection("console sign-out everywhere") { connection, logger in
            try await connection.query(PostgresQuery(unsafeSQL: ConsoleRevocations.upsert({ "$\($0)" }, greatest: "GREATEST"),
                                                     binds: Self.bindings(ConsoleRevocations.everywhere, issuedBefore.timeIntervalSince1970)),
                                       logger: logger)
        }
    }

    package func consoleSessionRevoked(nonce: String, issuedAt: Date) async throws -> Bool {
        try await withConnection("console session") { connection, logger in
            let rows = try await connection.query(PostgresQuery(unsafeSQL: ConsoleRevocations.isRevoked { "$\($0)" },
                                                                binds: Self.bindings(nonce, issuedAt.timeIntervalSince1970)), logger: logger).rows()
            return try rows.first?.get("revoked", as: Int32.self) == 1
        }
    }

    package func saveProgress(name: String, value: String?, at: Date) async throws {
        try await withConnection("backfill progress") { connection, logger in
            var binds = PostgresBindings()
            binds.append(name)
            if let value {
                binds.append(value)
                binds.append(at.timeIntervalSince1970)
                try await connection.query(PostgresQuery(unsafeSQL: BackfillProgress.upsert { "$\($0)" }, binds: binds), logger: logger)
            } else {
                try await connection.query(PostgresQuery(unsafeSQL: BackfillProgress.delete { "$\($0)" }, binds: binds), logger: logger)
            }
        }
    }

    package func progress(prefix: String) async throws -> [ProgressEntry] {
        let (low, high) = BackfillProgress.bounds(prefix)
        return try await withConnection("backfill progress") { connection, logger in
            var binds = PostgresBindings()
            binds.append(low)
            binds.append(high)
            var out: [ProgressEntry] = []
            for try await row in try await connection.query(PostgresQuery(unsafeSQL: BackfillProgress.select { "$\($0)" }, binds: binds), logger: logger) {
                let (name, value, at) = try row.decode((String, String, Double).self)
                out.append(ProgressEntry(name: name, value: value, updatedAt: at))
            }
            return out
        }
    }

    /// Bindings for a text and a number, or a number alone, in that order.
    private static func bindings(_ text: String, _ number: Double) -> PostgresBindings {
        var binds = PostgresBindings()
        binds.append(text)
        binds.append(number)
        return binds
    }

    private static func bindings(_ number: Double) -> PostgresBindings {
        var binds = PostgresBindings()
        binds.append(number)
        return binds
    }

    package func health() async -> StoreHealth {
        let client = self.client, logger = self.logger
        // Not ready before start-up has connected and migrated; never waits for it.
        guard started.isOpen else { return .unavailable }
        do {
            let answer = try await withDeadline(2, "ping") {
                try await client.withConnection { connection in
                    try await connection.query("SELECT 1 AS one", logger: logger).rows().first?.get("one", as: Int32.self)
                }
            }
            guard answer == 1 else { return .unavailable }
        } catch {
            logger.debug("database ping failed", metadata: ["error": "\(error)"])
            return .unavailable
        }
        guard let refused = refusals.current else { return .ok }
        // The last accept was refused: a small committed write tells whether the database takes writes again.
        do {
            try await refusals.observing(Self.refusal) {
                try await withDeadline(2, "write probe") {
                    try await client.withConnection { connection in
                        try await connection.perform("CREATE TABLE IF NOT EXISTS koala_router_probe (id int PRIMARY KEY, at double precision)", logger: logger)
                        try await connection.perform("INSERT INTO koala_router_probe (id, at) VALUES (1, \(Date().timeIntervalSince1970)) ON CONFLICT (id) DO UPDATE SET at = excluded.at", logger: logger)
                    }
                }
            }
            return .ok
        } catch {
            return .refusingWrites(refusals.current ?? refused)
        }
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
                                      routed_states)
                SELECT w.source, w.webhook_id, w.event_type, w.event_time, w.received_at, w.headers, w.body, w.secret_label,
                       w.rules_version, NULLIF(w.routed_states, '')
                FROM unnest(\(rows.hookSources)::text[], \(rows.hookIDs)::text[], \(rows.types)::text[], \(rows.hookTimes)::float8[],
                            \(rows.received)::float8[], \(rows.headers)::text[], \(rows.bodies)::bytea[], \(rows.labels)::text[],
                            \(rows.versions)::text[], \(rows.routedStates)::text[])
                     AS w(source, webhook_id, event_type, event_time, received_at, headers, body, secret_label, rules_version, routed_states)
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
                ON CONFLICT (message_id, destination) DO NOTHING
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

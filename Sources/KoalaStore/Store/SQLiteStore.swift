import Foundation
import GRDB
import KoalaCore
import ServiceLifecycle
import Synchronization

/// The embedded default store: one SQLite file in WAL mode with `synchronous=FULL`, so a webhook is on
/// disk before it is acknowledged.
package final class SQLiteStore: WebhookStore {
    let pool: DatabasePool
    let path: String
    /// Wakes `run()`'s writer when accepts are queued.
    private let wakeups: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation
    private let started = Mutex(false)
    /// Whether the last accept found the disk full (or the file read-only).
    private let refusals = WriteRefusals()

    /// `ownsDatabase`: the serving process owns the file, so leases left by a crashed predecessor are void.
    /// Operator commands open it alongside a running server and must leave its leases alone.
    package init(path: String, ownsDatabase: Bool = true) async throws {
        self.path = path
        (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        configuration.label = "koala-router"
        // Each accept in a group commit has its own savepoint, and SQLite journals the pages a savepoint changes
        // into a temporary file: half of all write syscalls under load. Kept in memory instead (a few pages per
        // webhook, gone at commit); the database and its WAL are untouched, so durability is the same.
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA temp_store = MEMORY")
        }
        pool = try DatabasePool(path: path, configuration: configuration)
        // GRDB puts a pool's writer in synchronous=NORMAL; a crash-safe acknowledgement needs FULL.
        try await pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            let level = try Int.fetchOne(db, sql: "PRAGMA synchronous")
            guard level == 2 else { throw StoreError.notDurable("PRAGMA synchronous is \(level ?? -1), expected 2 (FULL)") }
        }
        try Self.migrator.migrate(pool)
        // A single serving process owns a SQLite file: leases left by a previous run are void.
        if ownsDatabase {
            try await pool.write { db in
                try db.execute(sql: "UPDATE outbox SET lease_until = 0 WHERE status IN (\(literal: [.pending, .waiting])) AND lease_until > 0")
            }
        }
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE webhooks (
                    source TEXT NOT NULL,
                    webhook_id TEXT NOT NULL,
                    event_type TEXT NOT NULL,
                    event_time REAL NOT NULL,
                    received_at REAL NOT NULL,
                    headers TEXT NOT NULL,
                    body BLOB NOT NULL,
                    secret_label TEXT NOT NULL,
                    rules_version TEXT NOT NULL,
                    PRIMARY KEY (source, webhook_id)
                );
                CREATE INDEX webhooks_received ON webhooks(source, received_at);
                CREATE TABLE outbox (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    message_id TEXT NOT NULL UNIQUE,
                    source TEXT NOT NULL,
                    webhook_id TEXT NOT NULL,
                    route TEXT NOT NULL,
                    output TEXT NOT NULL,
                    endpoint TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    person_key TEXT NOT NULL,
                    email TEXT,
                    profile_id TEXT,
                    domain TEXT,
                    account_id TEXT,
                    item TEXT NOT NULL,
                    event_time REAL NOT NULL,
                    created_at REAL NOT NULL,
                    status INTEGER NOT NULL DEFAULT \(literal: .pending),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at REAL NOT NULL,
                    lease_until REAL NOT NULL DEFAULT 0,
                    last_error TEXT,
                    dead_reason TEXT,
                    dead_detail TEXT,
                    finished_at REAL
                );
                CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE status = \(literal: .pending);
                CREATE INDEX outbox_person ON outbox(person_key, seq) WHERE status = \(literal: .pending);
                CREATE INDEX outbox_dead ON outbox(finished_at) WHERE status = \(literal: .dead);
                """)
        }
        migrator.registerMigration("v2: identity memory") { db in
            try db.execute(sql: """
                CREATE TABLE identities (
                    source TEXT NOT NULL,
                    namespace TEXT NOT NULL,
                    key TEXT NOT NULL,
                    email TEXT,
                    profile_id TEXT,
                    domain TEXT,
                    updated_at REAL NOT NULL,
                    PRIMARY KEY (source, namespace, key)
                );
                CREATE INDEX identities_email ON identities(email);
                ALTER TABLE outbox ADD COLUMN wait_namespace TEXT;
                ALTER TABLE outbox ADD COLUMN wait_key TEXT;
                CREATE INDEX outbox_waiting ON outbox(source, wait_namespace, wait_key) WHERE status = \(literal: .waiting);
                """)
        }
        migrator.registerMigration("v3: replay lane") { db in
            try db.execute(sql: "ALTER TABLE outbox ADD COLUMN lane INTEGER NOT NULL DEFAULT \(literal: .live)")
        }
        migrator.registerMigration("v4: state memory") { db in
            try db.execute(sql: """
                ALTER TABLE identities ADD COLUMN state TEXT;
                ALTER TABLE identities ADD COLUMN state_at REAL;
                ALTER TABLE webhooks ADD COLUMN routed_states TEXT;
                """)
        }
        migrator.registerMigration("v5: one outbox entry per destination") { db in
            // SQLite cannot change a UNIQUE constraint in place: the table is rebuilt, rows and seq kept.
            try db.execute(sql: """
                CREATE TABLE outbox_v5 (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    message_id TEXT NOT NULL,
                    destination TEXT NOT NULL DEFAULT 'koala',
                    source TEXT NOT NULL, webhook_id TEXT NOT NULL, route TEXT NOT NULL, output TEXT NOT NULL,
                    endpoint TEXT NOT NULL, kind TEXT NOT NULL, person_key TEXT NOT NULL,
                    email TEXT, profile_id TEXT, domain TEXT, account_id TEXT, item TEXT NOT NULL,
                    event_time REAL NOT NULL, created_at REAL NOT NULL,
                    status INTEGER NOT NULL DEFAULT \(literal: .pending), attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at REAL NOT NULL, lease_until REAL NOT NULL DEFAULT 0,
                    last_error TEXT, dead_reason TEXT, dead_detail TEXT, finished_at REAL,
                    wait_namespace TEXT, wait_key TEXT, lane INTEGER NOT NULL DEFAULT \(literal: .live),
                    UNIQUE (message_id, destination)
                );
                INSERT INTO outbox_v5 (seq, message_id, source, webhook_id, route, output, endpoint, kind, person_key, email,
                    profile_id, domain, account_id, item, event_time, created_at, status, attempts, next_attempt_at, lease_until,
                    last_error, dead_reason, dead_detail, finished_at, wait_namespace, wait_key, lane)
                SELECT seq, message_id, source, webhook_id, route, output, endpoint, kind, person_key, email,
                    profile_id, domain, account_id, item, event_time, created_at, status, attempts, next_attempt_at, lease_until,
                    last_error, dead_reason, dead_detail, finished_at, wait_namespace, wait_key, lane FROM outbox;
                DROP TABLE outbox;
                ALTER TABLE outbox_v5 RENAME TO outbox;
                CREATE INDEX outbox_due ON outbox(destination, next_attempt_at) WHERE status = \(literal: .pending);
                CREATE INDEX outbox_person ON outbox(destination, person_key, seq) WHERE status = \(literal: .pending);
                CREATE INDEX outbox_dead ON outbox(finished_at) WHERE status = \(literal: .dead);
                CREATE INDEX outbox_waiting ON outbox(source, wait_namespace, wait_key) WHERE status = \(literal: .waiting);
                """)
        }
        migrator.registerMigration("v6: user id for Segment-compatible destinations") { db in
            try db.execute(sql: "ALTER TABLE outbox ADD COLUMN user_id TEXT")
        }
        migrator.registerMigration("v7: claims read the queue in order") { db in
            // The sender claims the oldest due messages: read in seq order, a claim stops after `limit` rows
            // instead of sorting every due message of the backlog on each round.
            try db.execute(sql: "CREATE INDEX outbox_claim ON outbox(destination, lane, seq) WHERE status = \(literal: .pending)")
        }
        migrator.registerMigration("v8: no index the claim no longer reads") { db in
            // Since v7 no query reads pending messages by due time; the index only cost a write per message.
            try db.execute(sql: "DROP INDEX IF EXISTS outbox_due")
        }
        migrator.registerMigration("v9: a webhook's messages and a person's webhooks by index") { db in
            // The console (one webhook's messages, search by email), `simulate --stored` and `forget --email`
            // read these; without the indexes each scanned the whole outbox. PostgreSQL has had both since v1.
            try db.execute(sql: """
                CREATE INDEX outbox_webhook ON outbox(source, webhook_id);
                CREATE INDEX outbox_email ON outbox(email);
                """)
        }
        migrator.registerMigration("v10: console sign-outs") { db in
            // Kept here, not in one process's memory, so a signed-out session stays out after a restart.
            try db.execute(sql: ConsoleRevocations.createTable(real: "REAL"))
        }
        migrator.registerMigration("v11: backfill progress") { db in
            try db.execute(sql: BackfillProgress.createTable(real: "REAL"))
        }
        return migrator
    }

    /// Group commit: concurrent accepts share one transaction and one fsync. A request is answered only
    /// after the transaction holding it has committed; each request has its own savepoint, so one that
    /// fails does not take the others with it. `run()` is the one writer.
    private let acceptQueue = Mutex<(requests: [QueuedAccept], stopped: Bool)>(([], false))

    package func accept(_ webhook: VerifiedWebhook, messages: [KoalaMessage], remembers: [Remembered],
                       linger: TimeInterval, identityWait: TimeInterval) async throws -> AcceptOutcome {
        try await refusals.observing(refusal) {
            try await queueAccept(webhook, messages: messages, remembers: remembers, linger: linger, identityWait: identityWait)
        }
    }

    /// Why an error means SQLite refuses writes: the disk holding the file is full, or the file (or its folder)
    /// is read-only. Nil for any other error.
    func refusal(_ error: any Error) -> String? {
        guard let error = error as? DatabaseError else { return nil }
        switch error.resultCode {
        case .SQLITE_FULL:
            return "the disk holding \(path) is full (SQLITE_FULL); free space on that volume, and accepting resumes by itself"
        case .SQLITE_READONLY:
            return "\(path) is read-only (SQLITE_READONLY); make the file and its folder writable by the service's user"
        case .SQLITE_IOERR, .SQLITE_CANTOPEN:
            return "\(path) cannot be written (\(error.resultCode)): is its volume full, gone or read-only?"
        default:
            return nil
        }
    }

    package var writeRefusal: String? { refusals.current }

    package func health() async -> StoreHealth {
        guard (try? await pool.read({ db in try Int.fetchOne(db, sql: "SELECT 1") })) == 1 else { return .unavailable }
        guard let refused = refusals.current else { return .ok }
        // The last accept was refused: try a write that needs room (64 KB), so readiness comes back by itself
        // once space does.
        do {
            try await refusals.observing(refusal) {
                try await pool.write { db in
                    try db.execute(sql: "CREATE TABLE IF NOT EXISTS koala_router_probe (id INTEGER PRIMARY KEY, room BLOB)")
                    try db.execute(sql: "INSERT OR REPLACE INTO koala_router_probe (id, room) VALUES (1, zeroblob(65536))")
                }
            }
            return .ok
        } catch {
            return .refusingWrites(refusals.current ?? refused)
        }
    }

    private func queueAccept(_ webhook: VerifiedWebhook, messages: [KoalaMessage], remembers: [Remembered],
                             linger: TimeInterval, identityWait: TimeInterval) async throws -> AcceptOutcome {
        try await withCheckedThrowingContinuation { continuation in
            let request = QueuedAccept(request: AcceptRequest(webhook: webhook, messages: messages, remembers: remembers, linger: linger,
                                                             identityWait: identityWait), continuation: continuation)
            let queued = acceptQueue.withLock { queue -> Bool in
                if queue.stopped { return false }
                queue.requests.append(request)
                return true
            }
            if queued {
                wake.yield()
            } else {
                continuation.resume(throwing: StoreError.stopped)
            }
        }
    }

    /// The group-commit writer: commits queued accepts until graceful shutdown (or cancellation), then
    /// refuses new ones, commits those already queued and closes the database.
    package func run() async throws {
        guard !started.withLock({ started in defer { started = true }; return started }) else { throw StoreError.stopped }
        for await _ in wakeups.cancelOnGracefulShutdown() {
            await drainAccepts()
        }
        acceptQueue.withLock { $0.stopped = true }
        await drainAccepts()
        wake.finish()
        try pool.close()
    }

    /// Commits whatever has queued up, again and again, until the queue is empty. While one transaction
    /// commits, the next batch gathers: the busier the service, the more each fsync carries.
    private func drainAccepts() async {
        while true {
            let batch = acceptQueue.withLock { queue -> [QueuedAccept] in
                defer { queue.requests = [] }
                return queue.requests
            }
            if batch.isEmpty { return }
            // Usually no accept fails: the whole batch goes in one transaction with no savepoint to journal.
            // If one does fail, that transaction is rolled back and the batch is redone with a savepoint each.
            if let outcomes = try? await pool.write({ db in try batch.map { try Self.acceptOne(db, $0.request) } }) {
                for (request, outcome) in zip(batch, outcomes) { request.continuation.resume(returning: outcome) }
                continue
            }
            do {
                let results = try await pool.write { db -> [Result<AcceptOutcome, any Error>] in
                    batch.map { request in
                        var outcome: AcceptOutcome = .duplicate
                        do {
                            try db.inSavepoint {
                                outcome = try Self.acceptOne(db, request.request)
                                return .commit
                            }
                            return .success(outcome)
                        } catch {
                            return .failure(error)
                        }
                    }
                }
                for (request, result) in zip(batch, results) {
                    request.continuation.resume(with: result)
                }
            } catch {
                for request in batch { request.continuation.resume(throwing: error) }
            }
        }
    }

    static func acceptOne(_ db: Database, _ request: AcceptRequest) throws -> AcceptOutcome {
        let webhook = request.webhook
        let headers = JSONValue.object(webhook.headers.mapValues { .string($0) }).encoded()
        try db.cachedStatement(sql: """
                INSERT INTO webhooks (source, webhook_id, event_type, event_time, received_at, headers, body, secret_label, rules_version,
                                      routed_states)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING
                """).execute(
            arguments: [webhook.source, webhook.webhookID, webhook.eventType, webhook.eventTime.timeIntervalSince1970,
                        webhook.receivedAt.timeIntervalSince1970, headers, Data(webhook.body), webhook.secretLabel,
                        webhook.rulesVersion, webhook.routedStatesJSON])
        guard db.changesCount == 1 else { return .duplicate }
        let insert = try db.cachedStatement(sql: """
            INSERT INTO outbox (message_id, destination, source, webhook_id, route, output, endpoint, kind, person_key, email, profile_id,
                domain, account_id, item, event_time, created_at, status, next_attempt_at, dead_reason, finished_at,
                wait_namespace, wait_key, user_id)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (message_id, destination) DO NOTHING
            """)
        let now = webhook.receivedAt.timeIntervalSince1970
        var queued = 0, dead = 0, waiting = 0
        for message in request.messages {
            let status = OutboxStatus(message.disposition)
            var stored = false
            for destination in message.destinations {
                try insert.execute(arguments: [
                    message.messageID, destination.rawValue, message.source, message.webhookID, message.route, message.output.rawValue,
                    message.endpoint.rawValue, message.kind.rawValue, message.identity.key, message.identity.email,
                    message.identity.profileID, message.identity.domain, message.identity.accountID, message.item.encoded(),
                    message.eventTime.timeIntervalSince1970, now, status.rawValue,
                    status.firstDue(acceptedAt: now, linger: request.linger, identityWait: request.identityWait), message.problem,
                    status == .dead ? now : nil, message.waitingFor?.namespace, message.waitingFor?.key, message.identity.userID,
                ])
                stored = stored || db.changesCount == 1
            }
            if stored {
                switch status {
                case .dead: dead += 1
                case .waiting: waiting += 1
                default: queued += 1
                }
            }
        }
        try remember(db, source: webhook.source, request.remembers, at: now)
        return .accepted(queued: queued, deadLettered: dead, waiting: waiting)
    }

    /// Upserts memory entries, merged as `identityMergeSQL` says.
    static func remember(_ db: Database, source: String, _ remembers: [Remembered], at now: Double) throws {
        guard !remembers.isEmpty else { return }
        let upsert = try db.cachedStatement(sql: """
            INSERT INTO identities (source, namespace, key, email, profile_id, domain, updated_at, state, state_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            \(identityMergeSQL)
            """)
        for entry in remembers {
            try upsert.execute(arguments: [source, entry.key.namespace, entry.key.key, entry.identity.email,
                                           entry.identity.profileID, entry.identity.domain, now,
                                           entry.state.map { JSONValue.object($0).encoded() }, entry.stateAt?.timeIntervalSince1970])
        }
    }

    package func recall(source: String, keys: [MemoryKey]) async throws -> [MemoryKey: Remembered] {
        guard !keys.isEmpty else { return [:] }
        return try await pool.read { db in
            var out: [MemoryKey: Remembered] = [:]
            let select = try db.cachedStatement(sql: """
                SELECT email, profile_id, domain, state, state_at FROM identities WHERE source = ? AND namespace = ? AND key = ?
                """)
            for key in Set(keys) {
                if let row = try Row.fetchOne(select, arguments: [source, key.namespace, key.key]) {
                    out[key] = Remembered.stored(key: key, email: row["email"], profileID: row["profile_id"], domain: row["domain"],
                                                 state: row["state"], stateAt: row["state_at"])
                }
            }
            return out
        }
    }

    package func claimWaiting(now: Date, limit: Int) async throws -> [WaitingMessage] {
        let t = now.timeIntervalSince1970
        return try await pool.write { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT seq, message_id, source, webhook_id, wait_namespace, wait_key, next_attempt_at FROM outbox o
                WHERE o.status = \(literal: .waiting) AND o.lease_until <= :now
                  AND (o.next_attempt_at <= :now OR EXISTS (
                    SELECT 1 FROM identities i WHERE i.source = o.source AND i.namespace = o.wait_namespace AND i.key = o.wait_key))
                ORDER BY o.seq LIMIT :limit
                """, arguments: ["now": t, "limit": limit])
            let waiting = rows.map { row in
                WaitingMessage(seq: row["seq"], messageID: row["message_id"], source: row["source"], webhookID: row["webhook_id"],
                               waitingFor: MemoryKey(namespace: row["wait_namespace"] ?? "", key: row["wait_key"] ?? ""),
                               deadline: Date(timeIntervalSince1970: row["next_attempt_at"]))
            }
            try Self.update(db, "UPDATE outbox SET lease_until = ? WHERE seq IN", [t + 60], waiting.map(\.seq))
            return waiting
        }
    }

    package func resolveWaiting(_ seq: Int64, _ resolution: WaitingResolution, linger: TimeInterval, at: Date) async throws {
        let t = at.timeIntervalSince1970
        try await pool.write { db in
            switch resolution {
            case .dead(let deadReason):
                try db.execute(sql: """
                    UPDATE outbox SET status = \(literal: .dead), dead_reason = ?, finished_at = ?, lease_until = 0 WHERE seq = ? AND status = \(literal: .waiting)
                    """, arguments: [deadReason, t, seq])
            case .stillWaiting(let waits):
                try db.execute(sql: "UPDATE outbox SET wait_namespace = ?, wait_key = ?, lease_until = 0 WHERE seq = ? AND status = \(literal: .waiting)",
                               arguments: [waits.namespace, waits.key, seq])
            case .released(let message):
                try db.execute(sql: """
                    UPDATE outbox SET status = \(literal: .pending), person_key = ?, email = ?, profile_id = ?, domain = ?, account_id = ?, item = ?,
                        next_attempt_at = ?, lease_until = 0, wait_namespace = NULL, wait_key = NULL, user_id = ? WHERE seq = ? AND status = \(literal: .waiting)
                    """, arguments: [message.identity.key, message.identity.email, message.identity.profileID, message.identity.domain,
                                     message.identity.accountID, message.item.encoded(), t + linger, message.identity.userID, seq])
            }
        }
    }

    package func storedWebhook(source: String, webhookID: String) async throws -> VerifiedWebhook? {
        try await pool.read { db in
            guard let row = try Row.fetchOne(db, sql: """
                SELECT event_type, event_time, received_at, headers, body, secret_label, rules_version, routed_states FROM webhooks
                WHERE source = ? AND webhook_id = ?
                """, arguments: [source, webhookID]) else { return nil }
            let body = [UInt8]((row["body"] as Data?) ?? Data())
            var headers: [String: String] = [:]
            if case .object(let object)? = try? JSONValue.parse(Array(((row["headers"] as String?) ?? "{}").utf8)) {
                for (k, v) in object { if let text = v.stringValue { headers[k] = text } }
            }
            var webhook = VerifiedWebhook(source: source, webhookID: webhookID, eventType: row["event_type"],
                                          eventTime: Date(timeIntervalSince1970: row["event_time"]),
                                          receivedAt: Date(timeIntervalSince1970: row["received_at"]), headers: headers, body: body,
                                          json: (try? JSONValue.parse(body)) ?? .null, secretLabel: row["secret_label"],
                                          rulesVersion: row["rules_version"])
            webhook.routedStates = VerifiedWebhook.routedStates(fromJSON: row["routed_states"])
            return webhook
        }
    }

    /// Replayed messages per round at most, so a replay never delays live traffic behind a backlog.
    static let replayPerRound = 100

    /// A backlog interleaves people, so the first due messages of a round are mostly one per person, and each
    /// would be a request of its own. This gives each person of the round their next due messages too (in
    /// order, stopping at the first one that is not due or is leased, up to a request: `KoalaEndpoint.maxPerType`), and keeps the
    /// round within `limit` by leaving the last people for the next round: fewer people per round, each
    /// request carrying more. People keep the order of their first message in the round (live lane first),
    /// and each person's messages stay in seq order.
    static func fillPeople(_ db: Database, _ rows: [Row], now t: Double, limit: Int, destination: String) throws -> [Row] {
        var people: [String] = [], claimed: [String: [Row]] = [:]
        for row in rows {
            let key: String = row["person_key"]
            if claimed[key] == nil { people.append(key) }
            claimed[key, default: []].append(row)
        }
        let next = try db.cachedStatement(sql: """
            SELECT seq, message_id, source, route, endpoint, kind, email, profile_id, domain, account_id, user_id, item,
                   event_time, created_at, attempts, person_key, next_attempt_at, lease_until
            FROM outbox INDEXED BY outbox_person
            WHERE status = \(literal: .pending) AND destination = ? AND person_key = ? AND seq > ?
            ORDER BY seq LIMIT ?
            """)
        var round: [Row] = []
        for key in people {
            var mine = claimed[key] ?? []
            let room = min(KoalaEndpoint.maxPerType, limit) - mine.count
            if room > 0, let last = mine.last {
                for row in try Row.fetchAll(next, arguments: [destination, key, last["seq"] as Int64, room]) {
                    guard (row["next_attempt_at"] as Double) <= t, (row["lease_until"] as Double) <= t else { break }
                    mine.append(row)
                }
            }
            if !round.isEmpty && round.count + mine.count > limit { break }
            round += mine
        }
        return round
    }

    package func claimDue(now: Date, limit: Int, lease: TimeInterval, destination: Destination) async throws -> [OutboxMessage] {
        let t = now.timeIntervalSince1970
        return try await pool.write { db in
            let select = """
                SELECT seq, message_id, source, route, endpoint, kind, email, profile_id, domain, account_id, user_id, item,
                       event_time, created_at, attempts, person_key
                FROM outbox o INDEXED BY outbox_claim
                WHERE o.status = \(literal: .pending) AND o.destination = :destination AND o.lane = :lane AND o.next_attempt_at <= :now AND o.lease_until <= :now
                  AND NOT EXISTS (
                    SELECT 1 FROM outbox p
                    WHERE p.status = \(literal: .pending) AND p.destination = o.destination AND p.person_key = o.person_key AND p.seq < o.seq
                      AND (p.next_attempt_at > :now OR p.lease_until > :now))
                ORDER BY o.seq
                LIMIT :limit
                """
            // Live traffic first; the replay lane gets a small, capped share of each round. Prepared once per connection.
            let statement = try db.cachedStatement(sql: select)
            var rows = try Row.fetchAll(statement, arguments: ["now": t, "limit": limit, "lane": OutboxLane.live.rawValue, "destination": destination.rawValue])
            let replayShare = min(Self.replayPerRound, max(0, limit - rows.count))
            if replayShare > 0 {
                // A replayed message of a person who also has live messages joins them in the same batch.
                rows += try Row.fetchAll(statement, arguments: ["now": t, "limit": replayShare, "lane": OutboxLane.replay.rawValue, "destination": destination.rawValue])
            }
            guard !rows.isEmpty else { return [] }
            if limit > 1 { rows = try Self.fillPeople(db, rows, now: t, limit: limit, destination: destination.rawValue) }
            let messages = try rows.map { row in try OutboxMessage(row: row, destination: destination) }
            try Self.update(db, "UPDATE outbox SET lease_until = ? WHERE seq IN", [t + lease], messages.map(\.seq))
            return messages
        }
    }

    package func record(_ outcomes: [DeliveryOutcome]) async throws {
        guard !outcomes.isEmpty else { return }
        try await pool.write { db in
            for outcome in outcomes {
                switch outcome {
                case .delivered(let seqs, let at):
                    try Self.update(db, "UPDATE outbox SET status = \(literal: .delivered), lease_until = 0, finished_at = ?, attempts = attempts + 1 WHERE status = \(literal: .pending) AND seq IN",
                                    [at.timeIntervalSince1970], seqs)
                case .dryRun(let seqs, let at):
                    try Self.update(db, "UPDATE outbox SET status = \(literal: .dryRun), lease_until = 0, finished_at = ?, attempts = attempts + 1 WHERE status = \(literal: .pending) AND seq IN",
                                    [at.timeIntervalSince1970], seqs)
                case .retry(let seqs, let next, let error):
                    try Self.update(db, "UPDATE outbox SET lease_until = 0, next_attempt_at = ?, last_error = ?, attempts = attempts + 1 WHERE status = \(literal: .pending) AND seq IN",
                                    [next.timeIntervalSince1970, error], seqs)
                case .dead(let seqs, let reason, let detail, let at):
                    try Self.update(db, "UPDATE outbox SET status = \(literal: .dead), lease_until = 0, dead_reason = ?, dead_detail = ?, finished_at = ?, attempts = attempts + 1 WHERE status = \(literal: .pending) AND seq IN",
                                    [reason, detail, at.timeIntervalSince1970], seqs)
                }
            }
        }
    }

    package func prune(before cutoff: Date) async throws -> PruneReport {
        let t = cutoff.timeIntervalSince1970
        return try await pool.write { db in
            let changed = try OutboxSQL.prune(before: t, .sqlite).map { try db.changes($0) }
            return PruneReport(webhooks: changed[1], messages: changed[0])
        }
    }

    package func forget(email raw: String) async throws -> PruneReport {
        let email = Identity.normalizeEmail(raw) ?? raw.lowercased()
        return try await pool.write { db in
            let changed = try OutboxSQL.forget(email: email, .sqlite).map { try db.changes($0) }
            return PruneReport(webhooks: changed[1], messages: changed[0], identities: changed[2])
        }
    }

    package func storedWebhooks(source: String, since: Date, until: Date, after cursor: StoredCursor?, limit: Int) async throws -> [VerifiedWebhook] {
        let keys = try await pool.read { db -> [(String, Double)] in
            let rows: [Row]
            if let cursor {
                rows = try Row.fetchAll(db, sql: """
                    SELECT webhook_id, received_at FROM webhooks WHERE source = ? AND received_at >= ? AND received_at < ?
                      AND (received_at > ? OR (received_at = ? AND webhook_id > ?))
                    ORDER BY received_at, webhook_id LIMIT ?
                    """, arguments: [source, since.timeIntervalSince1970, until.timeIntervalSince1970,
                                     cursor.receivedAt.timeIntervalSince1970, cursor.receivedAt.timeIntervalSince1970, cursor.webhookID, limit])
            } else {
                rows = try Row.fetchAll(db, sql: """
                    SELECT webhook_id, received_at FROM webhooks WHERE source = ? AND received_at >= ? AND received_at < ?
                    ORDER BY received_at, webhook_id LIMIT ?
                    """, arguments: [source, since.timeIntervalSince1970, until.timeIntervalSince1970, limit])
            }
            return rows.map { ($0["webhook_id"], $0["received_at"]) }
        }
        var out: [VerifiedWebhook] = []
        for (id, _) in keys {
            if let webhook = try await storedWebhook(source: source, webhookID: id) { out.append(webhook) }
        }
        return out
    }

    package func storedMessages(source: String, webhookID: String, destination: Destination) async throws -> [String: StoredMessage] {
        try await pool.read { db in
            var out: [String: StoredMessage] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT message_id, route, item, status FROM outbox WHERE source = ? AND webhook_id = ? AND destination = ?",
                                        arguments: [source, webhookID, destination.rawValue]) {
                let state = OutboxStatus(rawValue: row["status"]) ?? .pending
                let id: String = row["message_id"]
                out[id] = StoredMessage(messageID: id, route: row["route"], itemJSON: row["item"], state: state)
            }
            return out
        }
    }

    package func enqueueReplay(_ messages: [KoalaMessage], at: Date) async throws -> Int {
        let now = at.timeIntervalSince1970
        return try await pool.write { db in
            var queued = 0
            for message in messages where message.disposition == .send {
              for destination in message.destinations {
                try db.execute(OutboxSQL.enqueueReplay(message, destination: destination, at: now, .sqlite))
                queued += db.changesCount
              }
            }
            return queued
        }
    }

    /// SQL and arguments selecting the dead letters a filter means.
    package func deadLetters(matching filter: DeadLetterFilter, limit: Int) async throws -> [DeadLetter] {
        let statement = OutboxSQL.deadLetters(filter, limit: limit, .sqlite)
        return try await pool.read { db in
            try Row.fetchAll(db, sql: statement.text, arguments: statement.arguments).map { row in try DeadLetter(row: row) }
        }
    }

    package func retryDeadLetters(matching filter: DeadLetterFilter, at: Date) async throws -> Int {
        try await pool.write { db in try db.changes(OutboxSQL.retryDeadLetters(filter, at: at, .sqlite)) }
    }

    package func dropDeadLetters(matching filter: DeadLetterFilter) async throws -> Int {
        try await pool.write { db in try db.changes(OutboxSQL.dropDeadLetters(filter, .sqlite)) }
    }

    package func counts() async throws -> OutboxCounts {
        try await pool.read { db in
            var counts = OutboxCounts(pending: 0, delivered: 0, dead: 0, webhooks: 0)
            for row in try Row.fetchAll(db, sql: "SELECT status, COUNT(*) AS n FROM outbox GROUP BY status") {
                counts.add(OutboxStatus(rawValue: row["status"]), count: row["n"])
            }
            counts.webhooks = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM webhooks") ?? 0
            return counts
        }
    }

    package func queueStats(now: Date) async throws -> QueueStats {
        try await pool.read { db in
            var stats = QueueStats()
            for row in try Row.fetchAll(db, sql: "SELECT status, COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE status IN (\(literal: [.pending, .dead, .waiting])) GROUP BY status") {
                stats.add(OutboxStatus(rawValue: row["status"]), count: row["n"], oldest: row["oldest"], now: now)
            }
            return stats
        }
    }

    package func sourceActivity(sources: [String], now: Date) async throws -> [String: SourceActivity] {
        let t = now.timeIntervalSince1970
        return try await pool.read { db in
            var out: [String: SourceActivity] = [:]
            for source in sources {
                let last = try Double.fetchOne(db, sql: "SELECT MAX(received_at) FROM webhooks WHERE source = ?", arguments: [source])
                let count = "SELECT COUNT(*) FROM webhooks WHERE source = ? AND received_at >= ?"
                out[source] = SourceActivity(lastReceived: last.map { Date(timeIntervalSince1970: $0) },
                                             lastHour: try Int.fetchOne(db, sql: count, arguments: [source, t - 3600]) ?? 0,
                                             lastDay: try Int.fetchOne(db, sql: count, arguments: [source, t - 86400]) ?? 0)
            }
            return out
        }
    }

    package func webhooks(source: String, matching query: WebhookQuery, after cursor: WebhookCursor?, limit: Int) async throws -> [WebhookSummary] {
        let (sql, binds) = WebhookListing.bySource(source, query: query, after: cursor, limit: limit) { _ in "?" }
        return try await listing(sql, binds)
    }

    package func webhooks(email: String, limit: Int) async throws -> [WebhookSummary] {
        let (sql, binds) = WebhookListing.byEmail(email, limit: limit) { _ in "?" }
        return try await listing(sql, binds)
    }

    private func listing(_ sql: String, _ binds: [ListingBind]) async throws -> [WebhookSummary] {
        let arguments = StatementArguments(binds.map { bind -> (any DatabaseValueConvertible)? in
            switch bind {
            case .text(let text): text
            case .real(let real): real
            }
        })
        return try await pool.read { db in
            try Row.fetchAll(db, sql: sql, arguments: arguments).map { row in
                WebhookListing.summary(source: row["source"], webhookID: row["webhook_id"], eventType: row["event_type"],
                                       receivedAt: row["received_at"]) { row["n\($0.rawValue)"] }
            }
        }
    }

    package func messages(source: String, webhookID: String) async throws -> [MessageRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: WebhookListing.messages { _ in "?" }, arguments: [source, webhookID]).map { row in try MessageRecord(row: row) }
        }
    }

    /// Opening the file migrated it: ready at once.
    package func ready() async throws {}

    package func revokeConsoleSession(nonce: String, expires: Date, now: Date) async throws {
        try await pool.write { db in
            try db.execute(sql: ConsoleRevocations.pruneExpired { _ in "?" }, arguments: [now.timeIntervalSince1970])
            try db.execute(sql: ConsoleRevocations.upsert({ _ in "?" }, greatest: "max"), arguments: [nonce, expires.timeIntervalSince1970])
        }
    }

    package func revokeConsoleSessions(issuedBefore: Date) async throws {
        try await pool.write { db in
            try db.execute(sql: ConsoleRevocations.upsert({ _ in "?" }, greatest: "max"),
                           arguments: [ConsoleRevocations.everywhere, issuedBefore.timeIntervalSince1970])
        }
    }

    package func consoleSessionRevoked(nonce: String, issuedAt: Date) async throws -> Bool {
        try await pool.read { db in
            try Int.fetchOne(db, sql: ConsoleRevocations.isRevoked { _ in "?" }, arguments: [nonce, issuedAt.timeIntervalSince1970]) == 1
        }
    }

    package func saveProgress(name: String, value: String?, at: Date) async throws {
        try await pool.write { db in
            if let value {
                try db.execute(sql: BackfillProgress.upsert { _ in "?" }, arguments: [name, value, at.timeIntervalSince1970])
            } else {
                try db.execute(sql: BackfillProgress.delete { _ in "?" }, arguments: [name])
            }
        }
    }

    package func progress(prefix: String) async throws -> [ProgressEntry] {
        let (low, high) = BackfillProgress.bounds(prefix)
        return try await pool.read { db in
            try Row.fetchAll(db, sql: BackfillProgress.select { _ in "?" }, arguments: [low, high]).map {
                ProgressEntry(name: $0["name"], value: $0["value"], updatedAt: $0["updated_at"])
            }
        }
    }


    /// Runs `sql … seq IN` for every row of `seqs`. The sequence numbers travel as one JSON array, so the
    /// statement text never changes with their count and is prepared once per connection (a statement with
    /// one placeholder per row was compiled again for every round of the sender).
    private static func update(_ db: Database, _ sql: String, _ leading: [(any DatabaseValueConvertible)?], _ seqs: [Int64]) throws {
        guard !seqs.isEmpty else { return }
        var list = "["
        list.reserveCapacity(seqs.count * 8 + 2)
        for (index, seq) in seqs.enumerated() {
            if index > 0 { list += "," }
            list += String(seq)
        }
        list += "]"
        var arguments = StatementArguments(leading)
        arguments += [list]
        try db.cachedStatement(sql: "\(sql) (SELECT value FROM json_each(?))").execute(arguments: arguments)
    }
}

/// GRDB's rows for the shared decoders (StoreRows.swift).
extension Row: StoreRow {
    func text(_ column: String) -> String? { self[column] }
    func integer(_ column: String) -> Int64? { self[column] }
    func real(_ column: String) -> Double? { self[column] }
}

extension SQLStatement {
    /// The values as GRDB's arguments (built with SQLite's dialect, which binds no arrays).
    var arguments: StatementArguments {
        StatementArguments(values.map { value -> DatabaseValue in
            switch value {
            case .text(let text): text.databaseValue
            case .integer(let number): number.databaseValue
            case .real(let number): number.databaseValue
            case .texts: .null  // SQLite's dialect binds each element on its own (`SQLStatement.oneOf`)
            }
        })
    }
}

extension Database {
    func execute(_ statement: SQLStatement) throws { try execute(sql: statement.text, arguments: statement.arguments) }

    /// Runs a data-changing statement and returns how many rows it changed.
    func changes(_ statement: SQLStatement) throws -> Int {
        try execute(statement)
        return changesCount
    }
}

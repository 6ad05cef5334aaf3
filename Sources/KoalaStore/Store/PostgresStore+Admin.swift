package import Foundation
package import KoalaCore
import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// What operators read and change: retention and erasure, replay, dead letters, counts and the console's listings.
extension PostgresStore {
    // MARK: Retention

    /// Runs a data-changing statement and returns how many rows it changed.
    static func changed(_ connection: PostgresConnection, _ statement: SQLStatement, logger: Logger) async throws -> Int {
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
                SELECT webhook_id, event_type, event_time, received_at, headers, body, secret_label, rules_version, routed_states, trace_parent
                FROM webhooks
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

    package func traceParents(of webhooks: Set<WebhookRef>) async throws -> [WebhookRef: String] {
        guard !webhooks.isEmpty else { return [:] }
        let query = OutboxSQL.traceParents(webhooks, .postgres).query
        return try await withConnection("read trace parents") { connection, logger in
            var found: [WebhookRef: String] = [:]
            for row in try await connection.query(query, logger: logger).rows() {
                found[WebhookRef(source: try row.get("source"), webhookID: try row.get("webhook_id"))] = try row.get("trace_parent")
            }
            return found
        }
    }

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

    func listing(_ sql: String, _ binds: [ListingBind]) async throws -> [WebhookSummary] {
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
    static func bindings(_ text: String, _ number: Double) -> PostgresBindings {
        var binds = PostgresBindings()
        binds.append(text)
        binds.append(number)
        return binds
    }

    static func bindings(_ number: Double) -> PostgresBindings {
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

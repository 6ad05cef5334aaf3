package import Foundation
import GRDB
package import KoalaCore
import ServiceLifecycle
import Synchronization

/// What operators read and change: retention and erasure, replay, dead letters, counts, listings, console sessions, backfill progress.
extension SQLiteStore {
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

    package func traceParents(of webhooks: Set<WebhookRef>) async throws -> [WebhookRef: String] {
        guard !webhooks.isEmpty else { return [:] }
        let statement = OutboxSQL.traceParents(webhooks, .sqlite)
        return try await pool.read { db in
            var found: [WebhookRef: String] = [:]
            for row in try Row.fetchAll(db, sql: statement.text, arguments: statement.arguments) {
                found[WebhookRef(source: row["source"], webhookID: row["webhook_id"])] = row["trace_parent"]
            }
            return found
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

    func listing(_ sql: String, _ binds: [ListingBind]) async throws -> [WebhookSummary] {
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
}

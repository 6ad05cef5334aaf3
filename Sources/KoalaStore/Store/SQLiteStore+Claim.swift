package import Foundation
import GRDB
package import KoalaCore
import ServiceLifecycle
import Synchronization

/// What the sender and the identity resolver claim: due messages in order per person, waiting messages, and the outcomes recorded.
extension SQLiteStore {
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
                SELECT event_type, event_time, received_at, headers, body, secret_label, rules_version, routed_states, trace_parent FROM webhooks
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
                                          json: (try? JSONTape.parse(body)) ?? .null, secretLabel: row["secret_label"],
                                          rulesVersion: row["rules_version"])
            webhook.routedStates = VerifiedWebhook.routedStates(fromJSON: row["routed_states"])
            webhook.traceParent = row["trace_parent"]
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
            SELECT seq, message_id, source, webhook_id, route, endpoint, kind, email, profile_id, domain, account_id, user_id, item,
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
                SELECT seq, message_id, source, webhook_id, route, endpoint, kind, email, profile_id, domain, account_id, user_id, item,
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

    /// Runs `sql … seq IN` for every row of `seqs`. The sequence numbers travel as one JSON array, so the
    /// statement text never changes with their count and is prepared once per connection (a statement with
    /// one placeholder per row was compiled again for every round of the sender).
    static func update(_ db: Database, _ sql: String, _ leading: [(any DatabaseValueConvertible)?], _ seqs: [Int64]) throws {
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

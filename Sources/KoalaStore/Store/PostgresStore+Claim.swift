package import Foundation
package import KoalaCore
import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// Delivery: claims under the schema's claim lock, people filled in order, outcomes recorded in one transaction.
extension PostgresStore {
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
                    SELECT o.seq, o.message_id, o.source, o.webhook_id, o.route, o.endpoint, o.kind, o.email, o.profile_id, o.domain, o.account_id,
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
                            SELECT o.seq, o.message_id, o.source, o.webhook_id, o.route, o.endpoint, o.kind, o.email, o.profile_id, o.domain,
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
    func analyzeOutboxIfDue() {
        let now = ContinuousClock.now
        let due = lastAnalyze.withLock { last in
            if let last, now - last < .seconds(60) { return false }
            last = now
            return true
        }
        if due { startJob.yield(.analyze) }
    }

    func analyzeOutbox() async {
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
}

package import Foundation
import GRDB
package import KoalaCore
import ServiceLifecycle
import Synchronization

/// Accepting webhooks: the group-commit writer, one transaction per batch, a savepoint each only when one fails; and what is remembered.
extension SQLiteStore {
    package func accept(_ webhook: VerifiedWebhook, messages: [KoalaMessage], remembers: [Remembered],
                       linger: TimeInterval, identityWait: TimeInterval, resumingOn resume: AcceptResumer?) async throws -> AcceptOutcome {
        try await refusals.observing(refusal) {
            try await queueAccept(AcceptRequest(webhook: webhook, messages: messages, remembers: remembers, linger: linger,
                                                identityWait: identityWait), resume: resume)
        }
    }

    func queueAccept(_ accept: AcceptRequest, resume: AcceptResumer?) async throws -> AcceptOutcome {
        try await withCheckedThrowingContinuation { continuation in
            let request = QueuedAccept(request: accept, continuation: continuation, resume: resume)
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

    /// Commits whatever has queued up, again and again, until the queue is empty. While one transaction
    /// commits, the next batch gathers: the busier the service, the more each fsync carries.
    func drainAccepts() async {
        while true {
            let batch = acceptQueue.withLock { queue -> [QueuedAccept] in
                defer { queue.requests = [] }
                return queue.requests
            }
            if batch.isEmpty { return }
            // Usually no accept fails: the whole batch goes in one transaction with no savepoint to journal.
            // If one does fail, that transaction is rolled back and the batch is redone with a savepoint each.
            if let outcomes = try? await pool.write({ db in try batch.map { try Self.acceptOne(db, $0.request) } }) {
                for (request, outcome) in zip(batch, outcomes) { request.finish(returning: outcome) }
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
                    request.finish(result)
                }
            } catch {
                for request in batch { request.finish(throwing: error) }
            }
        }
    }

    static func acceptOne(_ db: Database, _ request: AcceptRequest) throws -> AcceptOutcome {
        let webhook = request.webhook
        let headers = JSONValue.object(webhook.headers.mapValues { .string($0) }).encoded()
        try db.cachedStatement(sql: """
                INSERT INTO webhooks (source, webhook_id, event_type, event_time, received_at, headers, body, secret_label, rules_version,
                                      routed_states, trace_parent)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING
                """).execute(
            arguments: [webhook.source, webhook.webhookID, webhook.eventType, webhook.eventTime.timeIntervalSince1970,
                        webhook.receivedAt.timeIntervalSince1970, headers, Data(webhook.body), webhook.secretLabel,
                        webhook.rulesVersion, webhook.routedStatesJSON, webhook.traceParent])
        guard db.changesCount == 1 else { return .duplicate }
        let insert = try db.cachedStatement(sql: """
            INSERT INTO outbox (message_id, destination, source, webhook_id, route, output, endpoint, kind, person_key, email, profile_id,
                domain, account_id, item, event_time, created_at, status, next_attempt_at, dead_reason, finished_at,
                wait_namespace, wait_key, user_id)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (\(OutboxKey.columns)) DO NOTHING
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
}

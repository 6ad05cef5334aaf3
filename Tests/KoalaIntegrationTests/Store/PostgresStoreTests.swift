import Foundation
import Logging
import PostgresNIO
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

/// What only the shared backend has to get right: several replicas on one database.
@Suite("PostgreSQL store: replicas on one database", .enabled(if: Backend.postgresConfigured, "needs the PostgreSQL server scripts/test starts"))
struct PostgresStoreTests {
    let logger = quietLogger

    func webhook(_ id: String) -> VerifiedWebhook {
        let body = Array(#"{"id":"\#(id)"}"#.utf8)
        return VerifiedWebhook(source: "stripe", webhookID: id, eventType: "t", eventTime: Date(timeIntervalSince1970: 100),
                               receivedAt: Date(), headers: [:], body: body, json: try! JSONTape.parse(body), secretLabel: "S",
                               rulesVersion: "v")
    }

    func message(_ webhookID: String, email: String) -> KoalaMessage {
        let id = MessageID.derive(source: "stripe", webhookID: webhookID, route: "r", output: .track)
        return KoalaMessage(messageID: id, source: "stripe", webhookID: webhookID, route: "r", output: .track, endpoint: .person,
                            kind: .track, identity: KoalaIdentity(email: email),
                            item: ["message_id": .string(id), "type": "track", "event": "E"],
                            eventTime: Date(timeIntervalSince1970: 100))
    }

    /// Several stores on one schema, started at the same moment (each runs the migrations), running while
    /// `body` runs.
    func replicas(_ n: Int, _ body: ([PostgresStore]) async throws -> Void) async throws {
        let url = try freshPostgresURL()
        let stores = try (0..<n).map { _ in try PostgresStore(url: url, logger: logger) }
        do {
            try await whileRunning(stores) {
                for store in stores { try await store.ready() }
                try await body(stores)
            }
        } catch let error as PSQLError {
            // PSQLError's description hides the server's message; a failing test needs it.
            Issue.record("\(String(reflecting: error))")
            throw error
        }
    }

    @Test func replicasStartingTogetherMigrateOnce() async throws {
        try await replicas(4) { stores in
            let rows = try await stores[0].client.query("SELECT version FROM koala_router_migrations", logger: logger).rows()
            #expect(rows.count == PostgresStore.migrations.count)
        }
    }

    /// A replica that cannot get the migration lock within `PostgresStore.migrationLockWait` fails to start and
    /// changes nothing (its own short statement timeout does not cut the wait short: replicas starting together
    /// on a loaded database wait for the one migrating). The lock's error used to arrive after `query` returned, unread: the replica then migrated without
    /// the lock, beside the one holding it (two replicas applied migration 6; one failed on the duplicate version).
    @Test func aReplicaThatCannotGetTheMigrationLockMigratesNothing() async throws {
        let url = try freshPostgresURL()
        let schema = String(try #require(url.split(separator: "schema=").last?.split(separator: "&").first))
        let holder = try PostgresStore(url: try freshPostgresURL(), logger: logger)
        try await whileRunning([holder]) {
            try await holder.ready()
            try await holder.client.withConnection { connection in
                let key = PostgresStore.migrationLockKey(schema: schema)
                try await connection.perform("SELECT pg_advisory_lock(\(key))", logger: logger)
                let late = try PostgresStore(url: url + "&statement_timeout_ms=300", logger: logger)
                await #expect(throws: PSQLError.self, "the lock wait ends in an error, and start-up fails with it") {
                    try await late.whileRunning { try await late.ready() }
                }
                let tables = try await connection.query(
                    "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = \(schema)", logger: logger).rows()
                #expect(try tables.first?.get("n", as: Int64.self) == 0, "nothing was created without the lock")
                try await connection.perform("SELECT pg_advisory_unlock(\(key))", logger: logger)
            }
        }
    }

    /// A slow claim has the outbox analyzed (once a minute at most), so a backlog that grew faster than
    /// autovacuum looks gets planned for its size; a fast one leaves the statistics alone.
    @Test func aSlowClaimAnalyzesTheOutbox() async throws {
        let url = try freshPostgresURL()
        let slow = try PostgresStore(url: url, logger: logger, slowClaim: .zero)
        let fast = try PostgresStore(url: url, logger: logger, slowClaim: .seconds(60))
        try await whileRunning([slow, fast]) {
            try await slow.ready()
            try await fast.ready()
            func analyzed() async throws -> Int64 {
                let rows = try await fast.client.query("""
                    SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'outbox' AND schemaname = current_schema()
                    """, logger: logger).rows()
                return try rows.first?.get("analyze_count", as: Int64.self) ?? -1
            }
            for i in 0..<3 {
                _ = try await fast.accept(webhook("evt_an_\(i)"), messages: [message("evt_an_\(i)", email: "a@x.io")], remembers: [],
                                         linger: 0, identityWait: 0)
            }
            _ = try await fast.claimDue(now: Date(), limit: 10, lease: 60, destination: .koala)
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await analyzed() == 0)
            _ = try await slow.claimDue(now: Date(), limit: 10, lease: 60, destination: .koala)
            _ = try await slow.claimDue(now: Date(), limit: 10, lease: 60, destination: .koala)
            var count: Int64 = 0
            for _ in 0..<50 where count == 0 {   // the analyze runs in the background
                try await Task.sleep(for: .milliseconds(100))
                count = try await analyzed()
            }
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await analyzed() == 1, "two slow claims within a minute analyze the outbox once")
        }
    }

    @Test func aWebhookSentToTwoReplicasAtOnceIsStoredOnce() async throws {
        try await replicas(2) { stores in
            let outcomes = try await withThrowingTaskGroup(of: AcceptOutcome.self) { group in
                for i in 0..<200 {
                    let store = stores[i % 2]
                    let id = "evt_dup_\(i / 2)"
                    group.addTask {
                        try await store.accept(self.webhook(id), messages: [self.message(id, email: "p\(i % 7)@x.io")],
                                               remembers: [], linger: 0, identityWait: 0)
                    }
                }
                var all: [AcceptOutcome] = []
                for try await outcome in group { all.append(outcome) }
                return all
            }
            #expect(outcomes.filter { $0 == .duplicate }.count == 100)
            #expect(outcomes.filter { $0 == .accepted(queued: 1, deadLettered: 0, waiting: 0) }.count == 100)
            let counts = try await stores[0].counts()
            #expect(counts.webhooks == 100 && counts.pending == 100)
        }
    }

    @Test func concurrentClaimsNeverShareAMessageOrAPerson() async throws {
        try await replicas(3) { stores in
            // 12 people, 25 messages each.
            for i in 0..<300 {
                let id = "evt_claim_\(i)"
                _ = try await stores[i % 3].accept(webhook(id), messages: [message(id, email: "person\(i % 12)@x.io")],
                                                    remembers: [], linger: 0, identityWait: 0)
            }
            let now = Date().addingTimeInterval(1)
            // Three replicas claim at once, again and again, without finishing anything: each person's messages
            // may be held by one replica only.
            var claimedBy: [String: Int] = [:]
            var seen = Set<Int64>()
            for _ in 0..<5 {
                let rounds = try await withThrowingTaskGroup(of: (Int, [OutboxMessage]).self) { group in
                    for (n, store) in stores.enumerated() {
                        group.addTask { (n, try await store.claimDue(now: now, limit: 7, lease: 60)) }
                    }
                    var all: [(Int, [OutboxMessage])] = []
                    for try await round in group { all.append(round) }
                    return all
                }
                for (replica, messages) in rounds {
                    for message in messages {
                        #expect(seen.insert(message.seq).inserted, "message \(message.seq) claimed twice")
                        let person = message.identity.email ?? ""
                        if let holder = claimedBy[person] {
                            #expect(holder == replica, "\(person) has messages leased by replicas \(holder) and \(replica)")
                        }
                        claimedBy[person] = replica
                    }
                }
            }
            #expect(claimedBy.count == 12)
        }
    }

    @Test func onlyTheLeaseHolderRecordsARetryAfterTheLeaseMoved() async throws {
        try await replicas(2) { stores in
            let (a, b) = (stores[0], stores[1])
            _ = try await a.accept(webhook("evt_lease"), messages: [message("evt_lease", email: "x@x.io")], remembers: [], linger: 0, identityWait: 0)
            let now = Date().addingTimeInterval(1)
            let first = try await a.claimDue(now: now, limit: 10, lease: 5)
            #expect(first.count == 1)
            // Replica a stalls past its lease; b takes the message over.
            #expect(try await b.claimDue(now: now.addingTimeInterval(2), limit: 10, lease: 5).isEmpty)
            let taken = try await b.claimDue(now: now.addingTimeInterval(6), limit: 10, lease: 60)
            #expect(taken.map(\.seq) == first.map(\.seq))
            // a's late verdict must not release b's lease (another replica would send it while b is sending).
            try await a.scheduleRetry(first.map(\.seq), at: now, error: "late")
            try await a.deadLetter(first.map(\.seq), reason: "late", detail: nil, at: now)
            #expect(try await a.claimDue(now: now.addingTimeInterval(7), limit: 10, lease: 60).isEmpty)
            #expect(try await a.counts().dead == 0)
            // Delivered is a fact whoever reports it.
            try await b.markDelivered(taken.map(\.seq), at: Date())
            #expect(try await a.counts().delivered == 1)
        }
    }

    @Test func anUnreachableDatabaseFailsFastAndIsNotReady() async throws {
        // Nothing listens on this port: connecting fails, calls give up within the operation timeout.
        let port = CrashTests.freePort()
        let url = "postgres://koala@127.0.0.1:\(port)/none?sslmode=disable&operation_timeout_ms=500"
        let started = Date()
        let store = try PostgresStore(url: url, logger: logger)
        await #expect(throws: (any Error).self) { try await store.whileRunning { try await store.ready() } }
        #expect(Date().timeIntervalSince(started) < 60)
        #expect(await store.health() == .unavailable)
    }

    /// The address itself is parsed and redacted in KoalaStoreTests (`PostgresURLTests`).
    @Test func aBadAddressStopsStartUpNamingTheSettingWithoutThePassword() async throws {
        // Start-up refuses a bad address and names the setting, without echoing the password.
        do {
            _ = try await RouterConfiguration.load(environment: ["KOALA_ROUTER_DATABASE": "postgres://u:hunter2@db/k?sslmode=nope"])
            Issue.record("a bad sslmode was accepted")
        } catch {
            #expect("\(error)".contains("KOALA_ROUTER_DATABASE"))
            #expect(!"\(error)".contains("hunter2"))
        }
        let config = try await RouterConfiguration.load(environment: ["KOALA_ROUTER_DATABASE": "postgres://u:hunter2@db/k"])
        #expect(!config.described.map(\.1).joined().contains("hunter2"))
    }
}

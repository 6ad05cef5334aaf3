import Foundation
import Synchronization
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

@Suite("Store (SQLite and PostgreSQL)")
struct StoreTests {
    func webhook(_ id: String, source: String = "stripe", receivedAt: Date = Date()) -> VerifiedWebhook {
        let body = Array(#"{"id":"\#(id)"}"#.utf8)
        return VerifiedWebhook(source: source, webhookID: id, eventType: "t", eventTime: Date(timeIntervalSince1970: 100),
                               receivedAt: receivedAt, headers: ["content-type": "application/json"], body: body,
                               json: try! JSONTape.parse(body), secretLabel: "S", rulesVersion: "v")
    }

    func message(_ webhookID: String, _ output: KoalaMessage.Output, email: String, problem: String? = nil, time: Double = 100) -> KoalaMessage {
        let id = MessageID.derive(source: "stripe", webhookID: webhookID, route: "r", output: output)
        return KoalaMessage(messageID: id, source: "stripe", webhookID: webhookID, route: "r", output: output, endpoint: .person,
                            kind: .track, identity: KoalaIdentity(email: email),
                            item: ["message_id": .string(id), "type": "track", "event": "E"],
                            eventTime: Date(timeIntervalSince1970: time), disposition: problem.map { .dead(reason: $0) } ?? .send)
    }

    @Test(arguments: Backend.configured) func acceptIsAtomicAndDeduplicates(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let first = try await store.accept(webhook("evt_1"), messages: [message("evt_1", .track, email: "a@x.io")], remembers: [], linger: 0, identityWait: 60)
            #expect(first == .accepted(queued: 1, deadLettered: 0, waiting: 0))
            let again = try await store.accept(webhook("evt_1"), messages: [message("evt_1", .track, email: "a@x.io")], remembers: [], linger: 0, identityWait: 60)
            #expect(again == .duplicate)
            // Same id from another source is a different webhook.
            let other = try await store.accept(webhook("evt_1", source: "paddle"), messages: [], remembers: [], linger: 0, identityWait: 60)
            #expect(other == .accepted(queued: 0, deadLettered: 0, waiting: 0))
            let counts = try await store.counts()
            #expect(counts.pending == 1)
            #expect(counts.webhooks == 2)
        }
    }

    /// Issue 30, item 2: an accept's caller is answered through the resumer it passed (ingest passes one that runs on
    /// the connection's event loop), once per accept, whether the webhook was new or a duplicate; without one the
    /// caller is answered where the commit finishes.
    @Test(arguments: Backend.configured) func anAcceptIsAnsweredThroughItsResumer(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        let resumed = Mutex(0)
        let resumer: AcceptResumer = { work in
            resumed.withLock { $0 += 1 }
            work()
        }
        try await store.whileRunning {
            let first = try await store.accept(webhook("evt_r"), messages: [message("evt_r", .track, email: "a@x.io")], remembers: [],
                                               linger: 0, identityWait: 60, resumingOn: resumer)
            #expect(first == .accepted(queued: 1, deadLettered: 0, waiting: 0))
            let again = try await store.accept(webhook("evt_r"), messages: [message("evt_r", .track, email: "a@x.io")], remembers: [],
                                               linger: 0, identityWait: 60, resumingOn: resumer)
            #expect(again == .duplicate)
            #expect(resumed.withLock { $0 } == 2)
            _ = try await store.accept(webhook("evt_s"), messages: [], remembers: [], linger: 0, identityWait: 60)
            #expect(resumed.withLock { $0 } == 2)
        }
    }

    /// Console sign-outs are stored: a revoked nonce and a sign-out everywhere hold for every replica and restart.
    @Test(arguments: Backend.configured) func consoleSignOutsAreKept(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        try await store.whileRunning {
            let a = String(repeating: "a", count: 32), b = String(repeating: "b", count: 32)
            #expect(try await store.consoleSessionRevoked(nonce: a, issuedAt: now) == false)
            try await store.revokeConsoleSession(nonce: a, expires: now.addingTimeInterval(3600), now: now)
            try await store.revokeConsoleSession(nonce: a, expires: now.addingTimeInterval(60), now: now)   // again: kept, not shortened
            #expect(try await store.consoleSessionRevoked(nonce: a, issuedAt: now) == true)
            #expect(try await store.consoleSessionRevoked(nonce: b, issuedAt: now) == false)
            // Everywhere: sessions issued until then are ended, later ones are not.
            try await store.revokeConsoleSessions(issuedBefore: now.addingTimeInterval(10))
            #expect(try await store.consoleSessionRevoked(nonce: b, issuedAt: now.addingTimeInterval(10)) == true)
            #expect(try await store.consoleSessionRevoked(nonce: b, issuedAt: now.addingTimeInterval(10.001)) == false)
            try await store.revokeConsoleSessions(issuedBefore: now)   // an older one does not move it back
            #expect(try await store.consoleSessionRevoked(nonce: b, issuedAt: now.addingTimeInterval(5)) == true)
            // A revocation that has expired is removed by the next sign-out; the everywhere row stays.
            try await store.revokeConsoleSession(nonce: b, expires: now.addingTimeInterval(7200), now: now.addingTimeInterval(3601))
            #expect(try await store.consoleSessionRevoked(nonce: a, issuedAt: now.addingTimeInterval(20)) == false)
            #expect(try await store.consoleSessionRevoked(nonce: b, issuedAt: now.addingTimeInterval(20)) == true)
        }
    }

    @Test(arguments: Backend.configured) func concurrentAcceptsShareCommitsAndStayExact(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            // 300 distinct webhooks, each offered twice at the same moment.
            let outcomes = try await withThrowingTaskGroup(of: (String, AcceptOutcome).self) { group in
                for i in 0..<600 {
                    let id = "evt_gc_\(i % 300)"
                    group.addTask {
                        (id, try await store.accept(self.webhook(id), messages: [self.message(id, .track, email: "p\(i % 300)@x.io")],
                                                    remembers: [], linger: 0, identityWait: 0))
                    }
                }
                var all: [(String, AcceptOutcome)] = []
                for try await outcome in group { all.append(outcome) }
                return all
            }
            let accepted = outcomes.filter { $0.1 == .accepted(queued: 1, deadLettered: 0, waiting: 0) }
            #expect(accepted.count == 300)
            #expect(Set(accepted.map(\.0)).count == 300)
            #expect(outcomes.filter { $0.1 == .duplicate }.count == 300)
            let counts = try await store.counts()
            #expect(counts.webhooks == 300 && counts.pending == 300)
            if let postgres = store as? PostgresStore {
                // Rows one transaction wrote share its xmin: the 300 webhooks went in far fewer commits.
                let rows = try await postgres.client.query("SELECT count(DISTINCT xmin::text) AS commits FROM webhooks", logger: quietLogger).rows()
                let commits = try rows.first?.get("commits", as: Int64.self) ?? 0
                #expect(commits >= 1 && commits < 150, "300 webhooks in \(commits) commits")
            }
        }
    }

    /// A group commit first tries its whole batch in one transaction. An accept that fails there (here a
    /// trigger refuses one webhook) must fail alone: the batch is redone (SQLite: with a savepoint each,
    /// PostgreSQL: each in its own transaction), and every other webhook of it is stored exactly once.
    @Test(arguments: Backend.configured) func anAcceptThatFailsInAGroupCommitFailsAlone(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            _ = try await store.counts()   // started and migrated
            if let sqlite = store as? SQLiteStore {
                try await sqlite.pool.write { db in
                    try db.execute(sql: """
                        CREATE TRIGGER poison BEFORE INSERT ON webhooks WHEN NEW.webhook_id LIKE 'evt_poison_%'
                        BEGIN SELECT RAISE(ABORT, 'poisoned'); END
                        """)
                }
            } else if let postgres = store as? PostgresStore {
                try await postgres.client.query("""
                    CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN IF NEW.webhook_id LIKE 'evt_poison_%' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$
                    """, logger: quietLogger)
                try await postgres.client.query("CREATE TRIGGER poison BEFORE INSERT ON webhooks FOR EACH ROW EXECUTE FUNCTION poison()",
                                                logger: quietLogger)
            }
            let ids = (0..<64).map { $0 % 16 == 5 ? "evt_poison_\($0)" : "evt_ok_\($0)" }
            let outcomes = await withTaskGroup(of: (String, Bool).self) { group in
                for id in ids {
                    group.addTask {
                        let outcome = try? await store.accept(self.webhook(id), messages: [self.message(id, .track, email: "\(id)@x.io")],
                                                             remembers: [], linger: 0, identityWait: 0)
                        return (id, outcome == .accepted(queued: 1, deadLettered: 0, waiting: 0))
                    }
                }
                var all: [String: Bool] = [:]
                for await (id, accepted) in group { all[id] = accepted }
                return all
            }
            for id in ids { #expect(outcomes[id] == !id.hasPrefix("evt_poison"), "\(id)") }
            let counts = try await store.counts()
            #expect(counts.webhooks == 60 && counts.pending == 60)
        }
    }

    /// Many webhooks at once remembering one shared key (and one key each): every one is stored, and the shared
    /// key ends with the latest state, as if they had been accepted one after another.
    @Test(arguments: Backend.configured) func concurrentAcceptsRememberingOneKeyMergeAsInSequence(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let shared = MemoryKey(namespace: "customer", key: "cus_shared")
            let outcomes = try await withThrowingTaskGroup(of: AcceptOutcome.self) { group in
                for i in 0..<120 {
                    let id = "evt_mem_\(i)"
                    group.addTask {
                        try await store.accept(self.webhook(id), messages: [self.message(id, .track, email: "p\(i)@x.io")], remembers: [
                            Remembered(key: shared, identity: KoalaIdentity(email: "billing@x.io"), state: ["n": .int(Int64(i))],
                                       stateAt: Date(timeIntervalSince1970: 1_000 + Double(i))),
                            Remembered(key: MemoryKey(namespace: "customer", key: "cus_\(i)"), identity: KoalaIdentity(email: "p\(i)@x.io")),
                        ], linger: 0, identityWait: 0)
                    }
                }
                var all: [AcceptOutcome] = []
                for try await outcome in group { all.append(outcome) }
                return all
            }
            #expect(outcomes.allSatisfy { $0 == .accepted(queued: 1, deadLettered: 0, waiting: 0) })
            let recalled = try await store.recall(source: "stripe", keys: [shared, MemoryKey(namespace: "customer", key: "cus_7")])
            #expect(recalled[shared]?.state == ["n": .int(119)])
            #expect(recalled[shared]?.identity.email == "billing@x.io")
            #expect(recalled[MemoryKey(namespace: "customer", key: "cus_7")]?.identity.email == "p7@x.io")
        }
    }

    /// The console's overview reads each source's latest webhook and its counts for the last hour and day.
    @Test(arguments: Backend.configured) func sourceActivityCountsTheLastHourAndDay(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let now = Date()
            for (id, source, ago) in [("a", "stripe", 60.0), ("b", "stripe", 7200), ("c", "stripe", 90_000), ("d", "paddle", 30)] {
                let hook = webhook("evt_act_\(id)", source: source, receivedAt: now.addingTimeInterval(-ago))
                _ = try await store.accept(hook, messages: [], remembers: [], linger: 0, identityWait: 0)
            }
            let activity = try await store.sourceActivity(sources: ["stripe", "paddle", "clerk"], now: now)
            #expect(activity["stripe"]?.lastHour == 1 && activity["stripe"]?.lastDay == 2)
            #expect(abs((activity["stripe"]?.lastReceived ?? .distantPast).timeIntervalSince(now.addingTimeInterval(-60))) < 0.01)
            #expect(activity["paddle"] == SourceActivity(lastReceived: activity["paddle"]?.lastReceived, lastHour: 1, lastDay: 1))
            #expect(activity["clerk"] == SourceActivity())
        }
    }

    /// The console's listings: one source's webhooks newest first with a cursor and filters, a person's webhooks
    /// by email, one webhook's messages in every state.
    @Test(arguments: Backend.configured) func listingsPageAndFilter(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let now = Date()
            for i in 0..<7 {
                let id = "evt_ls_\(i)"
                _ = try await store.accept(webhook(id, receivedAt: now.addingTimeInterval(Double(i - 10))),
                                           messages: i == 6 ? [] : [message(id, .track, email: "p\(i % 2)@x.io", problem: i == 5 ? "bad" : nil)],
                                           remembers: [], linger: 0, identityWait: 0)
            }
            let first = try await store.webhooks(source: "stripe", matching: WebhookQuery(), after: nil, limit: 3)
            #expect(first.map(\.webhookID) == ["evt_ls_6", "evt_ls_5", "evt_ls_4"])
            #expect(first[1].messages == [.dead: 1] && first[0].messages.isEmpty && first[2].messages == [.pending: 1])
            let second = try await store.webhooks(source: "stripe", matching: WebhookQuery(), after: first.last!.cursor, limit: 3)
            #expect(second.map(\.webhookID) == ["evt_ls_3", "evt_ls_2", "evt_ls_1"])
            #expect(try await store.webhooks(source: "stripe", matching: WebhookQuery(state: .dead), after: nil, limit: 9).map(\.webhookID) == ["evt_ls_5"])
            #expect(try await store.webhooks(source: "stripe", matching: WebhookQuery(noMessages: true), after: nil, limit: 9).map(\.webhookID) == ["evt_ls_6"])
            #expect(try await store.webhooks(source: "stripe", matching: WebhookQuery(since: now.addingTimeInterval(-5.5)), after: nil, limit: 9).count == 2)
            #expect(try await store.webhooks(source: "paddle", matching: WebhookQuery(), after: nil, limit: 9).isEmpty)
            #expect(try await store.webhooks(email: "p1@x.io", limit: 9).map(\.webhookID) == ["evt_ls_5", "evt_ls_3", "evt_ls_1"])
            let messages = try await store.messages(source: "stripe", webhookID: "evt_ls_5")
            #expect(messages.count == 1 && messages[0].state == .dead && messages[0].deadReason == "bad" && messages[0].destination == .koala && messages[0].endpoint == .person)
        }
    }

    /// A backlog interleaves people. A round takes each person's next due messages together, so one request
    /// carries many of them, and stays within its limit by leaving the last people for the next round.
    @Test(arguments: Backend.configured) func aRoundTakesEachPersonsMessagesTogether(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            for i in 0..<50 {
                let id = "evt_fill_\(i)"
                _ = try await store.accept(webhook(id), messages: [message(id, .track, email: "p\(i % 10)@x.io", time: Double(100 + i))],
                                           remembers: [], linger: 0, identityWait: 0)
            }
            let now = Date().addingTimeInterval(1)
            let first = try await store.claimDue(now: now, limit: 12, lease: 60, destination: .koala)
            #expect(first.map(\.identity.email) == Array(repeating: "p0@x.io", count: 5) + Array(repeating: "p1@x.io", count: 5))
            #expect(first.map(\.seq) == [1, 11, 21, 31, 41, 2, 12, 22, 32, 42])   // each person's in order
            // p0 and p1 are leased now: the next round is p2 and p3, five each, in order.
            let second = try await store.claimDue(now: now, limit: 12, lease: 60, destination: .koala)
            #expect(second.map(\.identity.email) == Array(repeating: "p2@x.io", count: 5) + Array(repeating: "p3@x.io", count: 5))
            #expect(second.map(\.seq) == [3, 13, 23, 33, 43, 4, 14, 24, 34, 44])
            // A probe still takes one message.
            let probe = try await store.claimDue(now: now, limit: 1, lease: 60, destination: .koala)
            #expect(probe.count == 1 && probe[0].identity.email == "p4@x.io")
        }
    }

    @Test func synchronousIsFull() async throws {
        let store = try await SQLiteStore(path: temporaryDirectory() + "/db.sqlite")
        try await store.whileRunning {
            let level = try await store.pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
            #expect(level == 2)
            let mode = try await store.pool.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
            #expect(mode == "wal")
        }
    }

    @Test(arguments: Backend.configured) func problemsAreDeadLetteredAtOnce(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let outcome = try await store.accept(webhook("evt_2"), messages: [message("evt_2", .track, email: "", problem: "identity missing")], remembers: [], linger: 0, identityWait: 60)
            #expect(outcome == .accepted(queued: 0, deadLettered: 1, waiting: 0))
            let dead = try await store.deadLetters(limit: 10)
            #expect(dead.map(\.reason) == ["identity missing"])
            #expect(try await store.claimDue(now: Date(), limit: 10, lease: 60).isEmpty)
        }
    }

    @Test(arguments: Backend.configured) func lingerDelaysAndLeasesHideClaimedMessages(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let now = Date()
            _ = try await store.accept(webhook("evt_3"), messages: [message("evt_3", .track, email: "a@x.io")], remembers: [], linger: 5, identityWait: 60)
            #expect(try await store.claimDue(now: now, limit: 10, lease: 60).isEmpty)
            let accepted = Date()   // the store stamped the message by the real clock, somewhere in between
            let claimed = try await store.claimDue(now: accepted.addingTimeInterval(10), limit: 10, lease: 60)
            #expect(claimed.count == 1)
            #expect(try await store.claimDue(now: accepted.addingTimeInterval(11), limit: 10, lease: 60).isEmpty)
            // After the lease runs out the message is due again (a crashed sender's work is picked up).
            #expect(try await store.claimDue(now: accepted.addingTimeInterval(80), limit: 10, lease: 60).count == 1)
        }
    }

    @Test(arguments: Backend.configured) func aWaitingMessageBlocksLaterOnesOfTheSamePersonOnly(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            _ = try await store.accept(webhook("w1"), messages: [message("w1", .track, email: "a@x.io")], remembers: [], linger: 0, identityWait: 60)
            let now = Date().addingTimeInterval(1)
            let first = try await store.claimDue(now: now, limit: 10, lease: 60)
            try await store.scheduleRetry(first.map(\.seq), at: now.addingTimeInterval(30), error: "503")
            _ = try await store.accept(webhook("w2"), messages: [message("w2", .track, email: "a@x.io")], remembers: [], linger: 0, identityWait: 60)
            _ = try await store.accept(webhook("w3"), messages: [message("w3", .track, email: "b@x.io")], remembers: [], linger: 0, identityWait: 60)
            // Due as of after both accepts (the store stamps them with the real clock, which a loaded machine
            // may have moved on by seconds), and still long before a's retry.
            let next = try await store.claimDue(now: max(now, Date()).addingTimeInterval(1), limit: 10, lease: 60)
            #expect(next.map(\.identity.email) == ["b@x.io"])
            let later = try await store.claimDue(now: now.addingTimeInterval(31), limit: 10, lease: 60)
            #expect(later.map(\.identity.email) == ["a@x.io", "a@x.io"])
            #expect(later.first?.attempts == 1)
        }
    }

    @Test func outcomesMoveMessagesAndSurviveReopen() async throws {
        let path = temporaryDirectory() + "/db.sqlite"
        do {
            let store = try await SQLiteStore(path: path)
            try await store.whileRunning {
                _ = try await store.accept(webhook("w1"), messages: [
                    message("w1", .track, email: "a@x.io"), message("w1", .identify, email: "b@x.io"), message("w1", .account, email: "c@x.io"),
                ], remembers: [], linger: 0, identityWait: 60)
                let claimed = try await store.claimDue(now: Date().addingTimeInterval(1), limit: 10, lease: 600)
                #expect(claimed.count == 3)
                try await store.markDelivered([claimed[0].seq], at: Date())
                try await store.deadLetter([claimed[1].seq], reason: "koala rejected (400)", detail: "{\"error\":\"bad\"}", at: Date())
                // claimed[2] stays leased: the process "dies" here.
            }
        }
        let reopened = try await SQLiteStore(path: path)
        try await reopened.whileRunning {
            let counts = try await reopened.counts()
            #expect(counts == OutboxCounts(pending: 1, delivered: 1, dead: 1, webhooks: 1))
            // The lease of the dead process is void on reopen: the message is due at once.
            let due = try await reopened.claimDue(now: Date().addingTimeInterval(1), limit: 10, lease: 600)
            #expect(due.map(\.identity.email) == ["c@x.io"])
            let dead = try await reopened.deadLetters(limit: 10)
            #expect(dead.first?.detail == "{\"error\":\"bad\"}")
        }
    }
}

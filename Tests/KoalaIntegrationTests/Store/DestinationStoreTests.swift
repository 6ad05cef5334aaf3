import Foundation
import GRDB
import Testing
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

/// Issue 15, part 3: each destination has its own outbox entries: claimed, ordered per person, retried and
/// dead-lettered apart, so one destination being down never holds another back.
@Suite("One outbox entry per destination")
struct DestinationStoreTests {
    func webhook(_ id: String) -> VerifiedWebhook {
        let body = Array(#"{"id":"\#(id)"}"#.utf8)
        return VerifiedWebhook(source: "stripe", webhookID: id, eventType: "t", eventTime: Date(timeIntervalSince1970: 100),
                               receivedAt: Date(), headers: [:], body: body, json: try! JSONTape.parse(body), secretLabel: "S", rulesVersion: "v")
    }

    func message(_ webhookID: String, email: String, to destinations: [Destination]) -> KoalaMessage {
        let id = MessageID.derive(source: "stripe", webhookID: webhookID, route: "r", output: .track)
        var message = KoalaMessage(messageID: id, source: "stripe", webhookID: webhookID, route: "r", output: .track, endpoint: .person,
                                   kind: .track, identity: KoalaIdentity(email: email),
                                   item: ["message_id": .string(id), "type": "track", "event": "E"],
                                   eventTime: Date(timeIntervalSince1970: 100), disposition: .send)
        message.destinations = destinations
        return message
    }

    @Test(arguments: Backend.configured) func eachDestinationClaimsAndFailsOnItsOwn(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let outcome = try await store.accept(webhook("w1"), messages: [message("w1", email: "a@x.io", to: [.koala, .segment])],
                                                 remembers: [], linger: 0, identityWait: 60)
            #expect(outcome == .accepted(queued: 1, deadLettered: 0, waiting: 0))   // one message, two entries
            _ = try await store.accept(webhook("w2"), messages: [message("w2", email: "a@x.io", to: [.koala, .segment])],
                                       remembers: [], linger: 0, identityWait: 60)
            let now = Date().addingTimeInterval(1)
            let koala = try await store.claimDue(now: now, limit: 10, lease: 60, destination: .koala)
            let segment = try await store.claimDue(now: now, limit: 10, lease: 60, destination: .segment)
            #expect(koala.count == 2 && segment.count == 2)
            #expect(koala.map(\.messageID) == segment.map(\.messageID))          // the same message ids
            #expect(Set(koala.map(\.seq)).isDisjoint(with: segment.map(\.seq)))   // separate entries
            #expect(segment.allSatisfy { $0.destination == .segment })
            // Segment is down: its first message is retried later, so its second waits (per-person order);
            // Koala delivers both meanwhile.
            try await store.record([.delivered(koala.map(\.seq), at: now),
                                    .retry([segment[0].seq], next: now.addingTimeInterval(300), error: "503"),
                                    .retry([segment[1].seq], next: now, error: "503")])
            #expect(try await store.claimDue(now: now.addingTimeInterval(61), limit: 10, lease: 60, destination: .segment).isEmpty)
            #expect(try await store.claimDue(now: now.addingTimeInterval(61), limit: 10, lease: 60, destination: .koala).isEmpty)
            // A dead letter says which destination it failed to reach, and filters by it.
            let later = now.addingTimeInterval(301)
            let retried = try await store.claimDue(now: later, limit: 10, lease: 60, destination: .segment)
            #expect(retried.map(\.seq) == segment.map(\.seq))
            try await store.record([.dead(retried.map(\.seq), reason: "segment rejected (400)", detail: "bad", at: later)])
            let dead = try await store.deadLetters(matching: DeadLetterFilter(destination: .segment), limit: 10)
            #expect(dead.count == 2 && dead.allSatisfy { $0.destination == .segment })
            #expect(dead.first?.json["destination"] == "segment")
            #expect(try await store.deadLetters(matching: DeadLetterFilter(destination: .koala), limit: 10).isEmpty)
        }
    }

    /// The trace a webhook was received in is stored with it, for the sender's spans: read back by webhook, several
    /// sources at once; a webhook stored while tracing was off, or unknown, is left out.
    @Test(arguments: Backend.configured) func theTraceParentIsStoredWithTheWebhook(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            var traced = webhook("w_t")
            traced.traceParent = parent
            _ = try await store.accept(traced, messages: [message("w_t", email: "a@x.io", to: [.koala])], remembers: [], linger: 0, identityWait: 60)
            _ = try await store.accept(webhook("w_plain"), messages: [message("w_plain", email: "b@x.io", to: [.koala])], remembers: [],
                                       linger: 0, identityWait: 60)
            let asked: Set<WebhookRef> = [WebhookRef(source: "stripe", webhookID: "w_t"), WebhookRef(source: "stripe", webhookID: "w_plain"),
                                          WebhookRef(source: "paddle", webhookID: "w_t"), WebhookRef(source: "stripe", webhookID: "w_none")]
            #expect(try await store.traceParents(of: asked) == [WebhookRef(source: "stripe", webhookID: "w_t"): parent])
            #expect(try await store.traceParents(of: []).isEmpty)
            // A stored webhook read again (a message that waited for an identity, a replay) keeps it too.
            #expect(try await store.storedWebhook(source: "stripe", webhookID: "w_t")?.traceParent == parent)
            #expect(try await store.storedWebhook(source: "stripe", webhookID: "w_plain")?.traceParent == nil)
            // Claims do not read it (the sender asks only while tracing).
            let claimed = try await store.claimDue(now: Date().addingTimeInterval(1), limit: 10, lease: 60, destination: .koala)
            #expect(claimed.count == 2 && claimed.allSatisfy { $0.traceParent == nil })
        }
    }

    /// `person.user_id` travels with the message to every destination's entry (Koala's request never shows it).
    @Test(arguments: Backend.configured) func theUserIDIsKeptForTheSegmentEntry(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            var m = message("w_u", email: "a@x.io", to: [.koala, .segment])
            m = KoalaMessage(messageID: m.messageID, source: m.source, webhookID: m.webhookID, route: m.route, output: m.output, endpoint: .person,
                             kind: .track, identity: KoalaIdentity(email: "a@x.io", userID: "cus_42"), item: m.item, eventTime: m.eventTime, disposition: .send)
            m.destinations = [.koala, .segment]
            _ = try await store.accept(webhook("w_u"), messages: [m], remembers: [], linger: 0, identityWait: 60)
            let now = Date().addingTimeInterval(1)
            let segment = try await store.claimDue(now: now, limit: 10, lease: 60, destination: .segment)
            #expect(segment.first?.identity.userID == "cus_42")
            let koala = try await store.claimDue(now: now, limit: 10, lease: 60, destination: .koala)
            let body = try #require(Batcher.plan(koala).first?.first?.body)
            #expect(!body.contains("cus_42"))
        }
    }

    /// A database written by the previous version (one entry per message id) is migrated in place: its
    /// entries are Koala's, keep their order, and the same message id can now have a Segment entry too.
    @Test func aDatabaseFromBeforeDestinationsIsMigrated() async throws {
        let path = temporaryDirectory() + "/old.sqlite"
        let queue = try DatabaseQueue(path: path)
        let migrator = SQLiteStore.migrator
        try migrator.migrate(queue, upTo: "v4: state memory")
        try await queue.write { db in
            try db.execute(sql: """
                INSERT INTO outbox (seq, message_id, source, webhook_id, route, output, endpoint, kind, person_key, item, event_time,
                                    created_at, status, next_attempt_at)
                VALUES (41, 'm_old', 'stripe', 'w_old', 'r', 'track', 'person', 'track', 'e:a@x.io', '{"message_id":"m_old","type":"track","event":"E"}',
                        100, 100, 0, 0)
                """)
        }
        try queue.close()
        let store = try await SQLiteStore(path: path)
        try await store.whileRunning {
            let due = try await store.claimDue(now: Date(), limit: 10, lease: 60, destination: .koala)
            #expect(due.map(\.seq) == [41])
            #expect(due.map(\.messageID) == ["m_old"])
            _ = try await store.accept(webhook("w_new"), messages: [message("w_new", email: "b@x.io", to: [.koala])], remembers: [], linger: 0, identityWait: 60)
            let next = try await store.claimDue(now: Date().addingTimeInterval(1), limit: 10, lease: 60, destination: .koala)
            #expect(next.first.map { $0.seq > 41 } == true)     // seq keeps growing after the rebuild
        }
    }

    /// Issue 30, item 3: an outbox written before entries were keyed by their webhook (v12) keeps its entries, their
    /// order and its AUTOINCREMENT counter (a seq once used, even by a deleted entry, is never reused); a message is
    /// still stored once per destination however often it comes; and no index keyed by the message id's hash is left.
    @Test func anOutboxKeyedByMessageIDIsRekeyedByWebhook() async throws {
        let path = temporaryDirectory() + "/v11.sqlite"
        let queue = try DatabaseQueue(path: path)
        try SQLiteStore.migrator.migrate(queue, upTo: "v11: backfill progress")
        try await queue.write { db in
            for (seq, webhookID) in [(41, "w_a"), (99, "w_b")] {
                try db.execute(sql: """
                    INSERT INTO outbox (seq, message_id, destination, source, webhook_id, route, output, endpoint, kind, person_key, email,
                                        item, event_time, created_at, status, next_attempt_at)
                    VALUES (?, ?, 'koala', 'stripe', ?, 'r', 'track', 'person', 'track', 'e:a@x.io', 'a@x.io', '{}', 100, 100, 0, 0)
                    """, arguments: [seq, MessageID.derive(source: "stripe", webhookID: webhookID, route: "r", output: .track), webhookID])
            }
            try db.execute(sql: "DELETE FROM outbox WHERE seq = 99")
        }
        try queue.close()
        let store = try await SQLiteStore(path: path)
        try await store.whileRunning {
            #expect(try await store.claimDue(now: Date(), limit: 10, lease: 60, destination: .koala).map(\.seq) == [41])
            let new = message("w_new", email: "b@x.io", to: [.koala, .segment])
            _ = try await store.accept(webhook("w_new"), messages: [new, new], remembers: [], linger: 0, identityWait: 60)
            #expect(try await store.enqueueReplay([new], at: Date()) == 2)   // the same two entries, queued again, not new ones
            let later = Date().addingTimeInterval(1)
            let koala = try await store.claimDue(now: later, limit: 10, lease: 60, destination: .koala)
            #expect(koala.map(\.messageID) == [new.messageID])
            #expect(koala.first.map { $0.seq > 99 } == true)
            #expect(try await store.claimDue(now: later, limit: 10, lease: 60, destination: .segment).count == 1)
        }
        let reopened = try DatabaseQueue(path: path)
        defer { try? reopened.close() }
        try await reopened.read { db in
            let indexes = try String.fetchAll(db, sql: "SELECT name FROM pragma_index_list('outbox') ORDER BY name")
            #expect(!indexes.contains("outbox_webhook"))
            var keyed: [[String]] = []
            for name in indexes {
                keyed.append(try String.fetchAll(db, sql: "SELECT name FROM pragma_index_info(?) ORDER BY seqno", arguments: [name]))
            }
            #expect(keyed.contains(["source", "webhook_id", "route", "output", "destination"]))
            #expect(!keyed.contains { $0.first == "message_id" })
            // A webhook's messages are found through the key.
            let detail = try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN SELECT seq FROM outbox WHERE source = 'stripe' AND webhook_id = 'w_a'")
                .map { $0["detail"] as String? ?? "" }.joined(separator: "; ")
            #expect(detail.contains("INDEX sqlite_autoindex_outbox_1 (source=? AND webhook_id=?)"), "\(detail)")
        }
    }
}

import Foundation
import Testing
@testable import KoalaCore
@testable import KoalaStore

/// What the store layer decides without a database server: batching for group commit, the address of a
/// PostgreSQL database, the SQL text both backends share, and how rows decode.
@Suite("Store layer without a database")
struct StoreLayerTests {
    func webhook(_ id: String, source: String = "stripe") -> VerifiedWebhook {
        let body = Array(#"{"id":"\#(id)"}"#.utf8)
        return VerifiedWebhook(source: source, webhookID: id, eventType: "t", eventTime: Date(timeIntervalSince1970: 100),
                               receivedAt: Date(timeIntervalSince1970: 100), headers: [:], body: body, json: try! JSONTape.parse(body),
                               secretLabel: "S", rulesVersion: "v")
    }

    /// A PostgreSQL batch is one statement, which cannot insert or update one row twice: a second copy of a
    /// webhook, or a webhook remembering a key another of the batch remembers, waits for the next batch, in order.
    @Test func aPostgresBatchNeverHoldsOneWebhookOrMemoryKeyTwice() {
        func request(_ id: String, source: String = "stripe", keys: [String] = []) -> AcceptRequest {
            AcceptRequest(webhook: webhook(id, source: source), messages: [],
                          remembers: keys.map { Remembered(key: MemoryKey(namespace: "customer", key: $0), identity: KoalaIdentity(email: "a@x.io")) },
                          linger: 0, identityWait: 0)
        }
        var queue = [request("a", keys: ["k1"]), request("b", keys: ["k1"]), request("a"), request("c", keys: ["k2"]),
                     request("a", source: "paddle", keys: ["k1"]), request("d"), request("e")]
        let first = PostgresStore.takeBatch(from: &queue, limit: 4) { $0 }
        #expect(first.map { "\($0.webhook.source)/\($0.webhook.webhookID)" } == ["stripe/a", "stripe/c", "paddle/a", "stripe/d"])
        #expect(queue.map { "\($0.webhook.source)/\($0.webhook.webhookID)" } == ["stripe/b", "stripe/a", "stripe/e"])
        let second = PostgresStore.takeBatch(from: &queue, limit: 4) { $0 }
        #expect(second.map(\.webhook.webhookID) == ["b", "a", "e"] && queue.isEmpty)
    }

    @Test func postgresAddressesAreParsedAndPasswordsRedacted() throws {
        let url = try PostgresURL("postgres://router:s3cr%40t@db.internal:6432/koala?sslmode=require&schema=koala&pool_size=4&statement_timeout_ms=2000")
        #expect(url.host == "db.internal" && url.port == 6432 && url.username == "router" && url.password == "s3cr@t")
        #expect(url.database == "koala" && url.sslmode == .require && url.schema == "koala" && url.poolSize == 4)
        #expect(url.statementTimeoutMS == 2000)
        #expect(!PostgresURL.redacted("postgres://router:s3cr3t@db/koala").contains("s3cr3t"))
        for address in ["postgres://db/koala?sslmode=maybe", "postgres://db/koala?schema=Robert';DROP", "postgres://db/koala?pool=3"] {
            #expect { try PostgresURL(address) } throws: { ($0 as? StoreError)?.code == .invalidAddress }
        }
        #expect(StoreError.unsupported("mysql://u:hunter2@db/x").description.hasPrefix("KOALA_ROUTER_DATABASE: unsupported database"))
    }

    /// Outbox states and lanes reach SQL as literals from their enums, so partial indexes (`WHERE status = 0`) match.
    @Test func statesAndLanesAreLiteralsFromTheirEnums() {
        #expect("status = \(literal: .pending)" == "status = 0")
        #expect("status IN (\(literal: [.delivered, .dryRun]))" == "status IN (1, 4)")
        #expect("lane = \(literal: .replay)" == "lane = 1")
        #expect(OutboxStatus.allCases.map(\.sql) == ["0", "1", "2", "3", "4"])
    }

    /// One SQL text for both databases: the same statement, SQLite's `?` or PostgreSQL's `$n`, the same values in
    /// the same order, and a list bound per element or as one array.
    @Test func aDeadLetterFilterIsOneTextForBothDatabases() {
        let filter = DeadLetterFilter(messageIDs: ["m1", "m2"], destination: .segment, source: "stripe", route: nil, reason: "rejected",
                                      since: Date(timeIntervalSince1970: 10), until: Date(timeIntervalSince1970: 20))
        let sqlite = OutboxSQL.deadLetters(filter, limit: 50, .sqlite)
        let postgres = OutboxSQL.deadLetters(filter, limit: 50, .postgres)
        #expect(sqlite.text.hasSuffix("""
            WHERE status = 2 AND message_id IN (?, ?) AND destination = ? AND source = ? AND instr(dead_reason, ?) > 0 \
            AND finished_at >= ? AND finished_at < ? ORDER BY finished_at, seq LIMIT ?
            """))
        #expect(postgres.text.hasSuffix("""
            WHERE status = 2 AND message_id = ANY($1) AND destination = $2 AND source = $3 AND strpos(dead_reason, $4) > 0 \
            AND finished_at >= $5 AND finished_at < $6 ORDER BY finished_at, seq LIMIT $7
            """))
        #expect(sqlite.values == [.text("m1"), .text("m2"), .text("segment"), .text("stripe"), .text("rejected"), .real(10), .real(20), .integer(50)])
        #expect(postgres.values == [.texts(["m1", "m2"]), .text("segment"), .text("stripe"), .text("rejected"), .real(10), .real(20), .integer(50)])
    }

    /// Every statement binds exactly as many values as its text has placeholders, in both dialects.
    @Test func placeholdersAndValuesAgree() {
        let message = KoalaMessage(messageID: "m1", source: "stripe", webhookID: "evt_1", route: "r", output: .track, endpoint: .person,
                                   kind: .track, identity: KoalaIdentity(email: "ada@acme-corp.io"), item: .object([:]),
                                   eventTime: Date(timeIntervalSince1970: 5))
        for dialect in [SQLDialect.sqlite, .postgres] {
            let statements = [OutboxSQL.deadLetters(DeadLetterFilter(reason: "x"), limit: 1, dialect),
                              OutboxSQL.retryDeadLetters(DeadLetterFilter(source: "stripe"), at: Date(), dialect),
                              OutboxSQL.dropDeadLetters(DeadLetterFilter(messageIDs: ["a", "b", "c"]), dialect),
                              OutboxSQL.enqueueReplay(message, destination: .koala, at: 7, dialect)]
                + OutboxSQL.prune(before: 1, dialect) + OutboxSQL.forget(email: "ada@acme-corp.io", dialect)
            for statement in statements {
                let placeholders = dialect.bindsArrays
                    ? Set(statement.text.matches(of: /\$([0-9]+)/).map { Int($0.1)! }).count
                    : statement.text.filter { $0 == "?" }.count
                #expect(placeholders == statement.values.count, "\(statement.text)")
            }
        }
        let replay = OutboxSQL.enqueueReplay(message, destination: .koala, at: 7, .postgres)
        #expect(replay.text.contains("lease_owner = NULL") && !OutboxSQL.enqueueReplay(message, destination: .koala, at: 7, .sqlite).text.contains("lease_owner"))
    }

    /// A row decodes the same from either database; a text this version does not know falls back as stated, a NULL
    /// is nil.
    @Test func rowsDecodeAlikeAndTotally() throws {
        struct Row: StoreRow {
            var columns: [String: Any]
            func text(_ column: String) -> String? { columns[column] as? String }
            func integer(_ column: String) -> Int64? { columns[column] as? Int64 }
            func real(_ column: String) -> Double? { columns[column] as? Double }
        }
        let record = try MessageRecord(row: Row(columns: [
            "destination": "rudderstack", "message_id": "m1", "route": "r", "endpoint": "account", "status": Int64(2),
            "attempts": Int64(3), "dead_reason": "koala rejected (400)", "finished_at": 20.0,
        ]))
        #expect(record.destination == .rudderstack && record.endpoint == .account && record.state == .dead && record.attempts == 3)
        #expect(record.finishedAt == Date(timeIntervalSince1970: 20) && record.nextAttemptAt == nil && record.lastError == nil)
        let odd = try DeadLetter(row: Row(columns: ["seq": Int64(9), "message_id": "m9", "output": "fax", "destination": "carrier-pigeon",
                                                    "status": Int64(99)]))
        #expect(odd.output == nil && odd.destination == .koala && odd.endpoint == .person && odd.reason == "")
        let claimed = try OutboxMessage(row: Row(columns: ["seq": Int64(4), "kind": "identify", "email": "ada@acme-corp.io",
                                                           "user_id": "u1", "attempts": Int64(Int64.max)]), destination: .segment)
        #expect(claimed.kind == .identify && claimed.identity.userID == "u1" && claimed.destination == .segment)
        #expect(claimed.attempts == Int(Int64.max))
    }
}

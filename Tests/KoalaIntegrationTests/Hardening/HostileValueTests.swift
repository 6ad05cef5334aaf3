import Foundation
import HTTPTypes
import Logging
import Synchronization
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

/// Correctly signed webhooks whose values are hostile: each case once crashed the process, stored
/// something other than what arrived, or sent a wrong identity to Koala.
@Suite("Hostile values in signed webhooks")
struct HostileValueTests {
    static let environment = ["STRIPE_WEBHOOK_SECRET": testSecret, "CLERK_WEBHOOK_SECRET": clerkSecret]
    static let clerkSecret = "whsec_" + Base64.encode(Array("koala-router-clerk-test-key!".utf8))

    /// Ingest over the shipped routes with a real SQLite store.
    func withIngest(_ body: (Ingest, any WebhookStore) async throws -> Void) async throws {
        let table = try RuleLoader(environment: Self.environment).load(directory: repositoryRoot + "/routes")
        let store = try await SQLiteStore(path: temporaryDirectory() + "/db.sqlite")
        try await store.whileRunning { try await body(Ingest(rules: RulesHolder(table), store: store, linger: 0, logger: quietLogger), store) }
    }

    /// A Stripe `invoice.paid` whose `created` is the given JSON text, byte for byte.
    static func invoicePaid(id: String, created: String, email: String = "ada@acme-corp.io") -> [UInt8] {
        Array(#"{"id":"\#(id)","object":"event","type":"invoice.paid","created":\#(created),"data":{"object":{"id":"in_1","object":"invoice","customer_email":"\#(email)","amount_paid":4900,"currency":"usd","customer":"cus_1"}}}"#.utf8)
    }

    func outbox(_ store: any WebhookStore, source: String = "stripe", webhookID: String) async throws -> [StoredMessage] {
        Array(try await store.storedMessages(source: source, webhookID: webhookID).values)
    }

    // MARK: Defect 1: numbers out of range

    @Test(arguments: ["1e999", "-1e999", "10000000000000000", "\"1e300\"", "\"nan\"", "\"inf\"", "1e308"])
    func anOutOfRangeEventTimeFallsBackToTheTimeOfReceipt(created: String) async throws {
        try await withIngest { (ingest, store) async throws in
            let now = Date(timeIntervalSince1970: 1_764_000_000)
            let id = "evt_time_\(abs(created.hashValue))"
            let body = Self.invoicePaid(id: id, created: created)
            let answer = await ingest.handle(source: "stripe", headers: stripeHeaders(body, timestamp: Int64(now.timeIntervalSince1970)), body: body, now: now)
            #expect(answer.status == .ok, "\(answer.body)")
            #expect(answer.body["status"] == "accepted")
            let stored = try #require(try await store.storedWebhook(source: "stripe", webhookID: id))
            #expect(stored.eventTime == now)
            let messages = try await outbox(store, webhookID: id)
            #expect(messages.count == 1)
            let item = try JSONValue.parse(Array(try #require(messages.first).itemJSON.utf8))
            #expect(item["sent_at"] == .string(Timestamps.iso(now)))
            #expect(!item.encoded().contains("null"))
        }
    }

    @Test func aHugeClerkTimestampIsNoCrash() async throws {
        try await withIngest { (ingest, store) async throws in
            let body = Array(#"{"data":{"id":"user_1","first_name":"Alan","primary_email_address_id":"idn_1","email_addresses":[{"id":"idn_1","email_address":"alan@bletchley-park.io"}],"external_accounts":[],"created_at":10000000000000000000},"object":"event","timestamp":10000000000000000000,"type":"user.created"}"#.utf8)
            let now = Date()
            let ts = Int64(now.timeIntervalSince1970)
            let key = try #require(StandardWebhooksVerifier.decodeSecret(Self.clerkSecret))
            let headers: HTTPFields = [
                HTTPField.Name("svix-id")!: "msg_huge_time", HTTPField.Name("svix-timestamp")!: String(ts),
                HTTPField.Name("svix-signature")!: StandardWebhooksVerifier.sign(id: "msg_huge_time", timestamp: ts, body: body, key: key),
            ]
            let answer = await ingest.handle(source: "clerk", headers: headers, body: body, now: now)
            #expect(answer.status == .ok, "\(answer.body)")
            let messages = try await outbox(store, source: "clerk", webhookID: "msg_huge_time")
            #expect(messages.count == 2)
            for message in messages {
                let item = try JSONValue.parse(Array(message.itemJSON.utf8))
                #expect(item["traits"]?["signed_up_at"] == nil, "an out-of-range time is left out, not sent")
                #expect(item["sent_at"] == .string(Timestamps.iso(now)))
            }
        }
    }

    // MARK: Defect 5: NUL and control characters

    @Test func idsWithControlCharactersAreRefusedNotTruncated() async throws {
        try await withIngest { (ingest, store) async throws in
            for (id, escaped) in [("evt_a\u{0}x", #"evt_a\u0000x"#), ("evt_a\u{0}y", #"evt_a\u0000y"#), ("evt_b\nc", #"evt_b\nc"#)] {
                _ = id
                let body = Array(#"{"id":"\#(escaped)","object":"event","type":"invoice.paid","created":1732871520,"data":{"object":{"customer_email":"ada@acme-corp.io","amount_paid":1}}}"#.utf8)
                let answer = await ingest.handle(source: "stripe", headers: stripeHeaders(body), body: body)
                #expect(answer.status == .badRequest)
                #expect(answer.body["error"]?.stringValue?.contains("control character") == true, "\(answer.body)")
            }
            // The prefix a C string would have cut them to is a different, new event.
            let body = Self.invoicePaid(id: "evt_a", created: "1732871520")
            let answer = await ingest.handle(source: "stripe", headers: stripeHeaders(body), body: body)
            #expect(answer.body["status"] == "accepted")
            #expect(try await store.counts().webhooks == 1)
        }
    }

    /// What the id rule lets through (any printable text up to 255 bytes) is stored and read back exactly by
    /// both backends, and so is a body whose JSON carries a NUL.
    @Test(arguments: Backend.configured) func allowedTextRoundTripsThroughTheStore(_ backend: Backend) async throws {
        let table = try RuleLoader(environment: Self.environment).load(directory: repositoryRoot + "/routes")
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let ingest = Ingest(rules: RulesHolder(table), store: store, linger: 0, logger: quietLogger)
            let id = "évt_😀_\u{05D0}\u{2028}_" + String(repeating: "x", count: 200)
            let body = Array(#"{"id":"\#(id)","object":"event","type":"invoice.paid","created":1732871520,"data":{"object":{"customer_email":"ada@acme-corp.io","amount_paid":1,"number":"INV\u0000-1"}}}"#.utf8)
            let answer = await ingest.handle(source: "stripe", headers: stripeHeaders(body), body: body)
            #expect(answer.body["status"] == "accepted", "\(answer.body)")
            let stored = try #require(try await store.storedWebhook(source: "stripe", webhookID: id))
            #expect(stored.webhookID.unicodeScalars.elementsEqual(id.unicodeScalars))
            #expect(stored.body == body)
            let message = try #require(try await store.storedMessages(source: "stripe", webhookID: id).values.first)
            #expect(try JSONValue.parse(Array(message.itemJSON.utf8))["properties"]?["invoice_number"] == .string("INV\u{0}-1"))
        }
    }

    @Test func anOverlongIdIsRefused() async throws {
        try await withIngest { (ingest, _) async throws in
            let id = String(repeating: "é", count: 200)  // 200 characters, 400 bytes
            let body = Self.invoicePaid(id: id, created: "1732871520")
            let answer = await ingest.handle(source: "stripe", headers: stripeHeaders(body), body: body)
            #expect(answer.status == .badRequest)
            #expect(answer.body["error"]?.stringValue?.contains("400 bytes") == true)
        }
    }

    @Test func anEmailWithANulIsADeadLetterNotAnotherPerson() async throws {
        try await withIngest { (ingest, store) async throws in
            let body = Self.invoicePaid(id: "evt_nul_email", created: "1732871520", email: #"victim\u0000@acme-corp.io"#)
            let answer = await ingest.handle(source: "stripe", headers: stripeHeaders(body), body: body)
            #expect(answer.body["status"] == "accepted")
            #expect(answer.body["dead_lettered"] == 1)
            let dead = try await store.deadLetters(limit: 10)
            #expect(dead.count == 1)
            #expect(dead.first?.identity.email == nil)
            #expect(dead.first?.reason == #"person.email ← body.data.object.customer_email: "victim\u{0}@acme-corp.io" (text), not an email address (it holds a control or invisible formatting character)"#)
        }
    }

    // MARK: Defect 6: email validation

    // MARK: Defect 7: free mail

    // MARK: Defect 9: a reload between admission and handling

    @Test func aWebhookAdmittedBeforeAReloadIsHandledByThatTable() async throws {
        try await withIngest { (ingest, _) async throws in
            let body = Self.invoicePaid(id: "evt_reload", created: "1732871520")
            let headers = stripeHeaders(body)
            guard case .admitted(let admitted) = ingest.admit(source: "stripe", headers: headers) else {
                Issue.record("stripe was not admitted")
                return
            }
            // The source disappears, then comes back disabled.
            ingest.rules.replace(with: RuleTable(version: "empty", sources: [:]))
            let disabled = try RuleLoader(environment: [:]).load(directory: repositoryRoot + "/routes")
            let answer = await ingest.handle(admitted, headers: headers, body: body)
            #expect(answer.body["status"] == "accepted")
            ingest.rules.replace(with: disabled)
            let again = await ingest.handle(source: "stripe", headers: headers, body: body)
            #expect(again.status == .serviceUnavailable)
        }
    }

    @Test func reloadsThatDropAndDisableTheSourceNeverCrashARequest() async throws {
        try await withIngest { (ingest, _) async throws in
            let enabled = ingest.rules.table
            let disabled = try RuleLoader(environment: [:]).load(directory: repositoryRoot + "/routes")
            let empty = RuleTable(version: "empty", sources: [:])
            // A thread of its own swaps the table as fast as it can, so swaps land between any two reads.
            let stop = Atomic<Bool>(false)
            let rules = ingest.rules
            let flipper = Thread {
                var i = 0
                while !stop.load(ordering: .relaxed) {
                    rules.replace(with: [enabled, disabled, empty][i % 3])
                    i += 1
                }
            }
            flipper.start()
            let statuses = await withTaskGroup(of: Set<Int>.self) { group in
                for worker in 0..<4 {
                    group.addTask {
                        var seen = Set<Int>()
                        for i in 0..<2000 {
                            let body = Self.invoicePaid(id: "evt_flip_\(worker)_\(i)", created: "1732871520")
                            let answer = await ingest.handle(source: "stripe", headers: stripeHeaders(body), body: body)
                            seen.insert(Int(answer.status.code))
                        }
                        return seen
                    }
                }
                return await group.reduce(into: Set<Int>()) { $0.formUnion($1) }
            }
            stop.store(true, ordering: .relaxed)
            #expect(statuses.isSubset(of: [200, 404, 503]), "\(statuses)")
        }
    }
}

/// Credentials the rule file's scheme reads are never stored, whatever header carries them.
@Suite("Credentials are never stored")
struct CredentialStorageTests {
    static let rules = [
        ("routes/token.yaml", """
        source: token
        verify: { scheme: bearer-token, header: X-Webhook-Key, secrets: [TOKEN_SECRET] }
        id: body.id
        type: body.type
        routes:
          - name: r
            when: { type: signup }
            person: { email: body.email }
            track: { event: Signed Up, properties: { key: headers.x-webhook-key, trace: headers.x-trace } }
        """),
        ("routes/acme.yaml", """
        source: acme
        verify: { scheme: hmac, header: X-Acme-Sig, secrets: [ACME_SECRET] }
        id: body.id
        type: body.type
        routes:
          - name: r
            when: { type: signup }
            person: { email: body.email }
            track: { event: Signed Up }
        """),
    ]
    static let environment = ["TOKEN_SECRET": "tok_live_very_secret_value", "ACME_SECRET": "acme-hmac-secret"]

    @Test(arguments: Backend.configured) func theVerifiersHeadersAreDropped(_ backend: Backend) async throws {
        let table = try RuleLoader(environment: Self.environment).load(files: Self.rules)
        #expect(table.sources["token"]?.credentialHeaders == ["X-Webhook-Key"])
        let store = try await makeStore(backend)
        let acmeBody = Array(#"{"id":"w2","type":"signup","email":"ada@acme-corp.io"}"#.utf8)
        let signature = Hex.encode(Crypto.hmac(.sha256, key: Array("acme-hmac-secret".utf8), data: acmeBody))
        try await store.whileRunning {
            let ingest = Ingest(rules: RulesHolder(table), store: store, linger: 0, logger: quietLogger)
            let tokenBody = Array(#"{"id":"w1","type":"signup","email":"ada@acme-corp.io"}"#.utf8)
            let tokenAnswer = await ingest.handle(source: "token", headers: [
                HTTPField.Name("X-Webhook-Key")!: "Bearer tok_live_very_secret_value", HTTPField.Name("X-Trace")!: "t-1",
                HTTPField.Name("X-Session-Id")!: "sess_secret",
            ], body: tokenBody)
            #expect(tokenAnswer.body["status"] == "accepted")
            let acmeAnswer = await ingest.handle(source: "acme", headers: [HTTPField.Name("X-Acme-Sig")!: signature], body: acmeBody)
            #expect(acmeAnswer.body["status"] == "accepted")

            let token = try #require(try await store.storedWebhook(source: "token", webhookID: "w1"))
            #expect(token.headers == ["x-trace": "t-1"])
            let acme = try #require(try await store.storedWebhook(source: "acme", webhookID: "w2"))
            #expect(acme.headers["x-acme-sig"] == nil)
            // Nor can a route copy the credential into a message.
            let message = try #require(try await store.storedMessages(source: "token", webhookID: "w1").values.first)
            #expect(!message.itemJSON.contains("tok_live"))
            #expect(message.itemJSON.contains("t-1"))
        }
        if backend == .sqlite, let sqlite = store as? SQLiteStore {
            for suffix in ["", "-wal"] {
                let bytes = FileManager.default.contents(atPath: sqlite.path + suffix) ?? Data()
                #expect(bytes.range(of: Data("tok_live_very_secret_value".utf8)) == nil)
                #expect(bytes.range(of: Data(signature.utf8)) == nil)
                #expect(bytes.range(of: Data("sess_secret".utf8)) == nil)
            }
        }
    }

    @Test func aRequestWithoutTheCredentialHeaderIsRefusedBeforeItsBodyIsRead() throws {
        let table = try RuleLoader(environment: Self.environment).load(files: Self.rules)
        let ingest = Ingest(rules: RulesHolder(table), store: NeverCalledStore(), linger: 0, logger: quietLogger)
        guard case .refused(let answer) = ingest.admit(source: "acme", headers: [.contentType: "application/json"]) else {
            Issue.record("admitted without a signature header")
            return
        }
        #expect(answer.status == .unauthorized)
        #expect(answer.body == ["error": "missing header X-Acme-Sig"])
    }

    @Test func databaseAddressesAreRedactedEvenWhenNoURLParserTakesThem() {
        #expect(PostgresURL.redacted("postgres://router:s3cret@db:5432/koala") == "postgres://router:REDACTED@db:5432/koala")
        #expect(PostgresURL.redacted("postgres://router:p@ss/w#rd@db/koala?sslmode=require") == "postgres://router:REDACTED@db/koala?sslmode=require")
        #expect(PostgresURL.redacted("postgres://router@db/koala") == "postgres://router@db/koala")
        #expect(PostgresURL.redacted("data/koala-router.sqlite") == "data/koala-router.sqlite")
        #expect(!StoreError.unsupported("mysql://u:hunter2@db/x").description.contains("hunter2"))
    }
}

/// A store for tests that must decide before touching the store: any call fails the test.
struct NeverCalledStore: WebhookStore {
    struct Called: Error {}
    func fail<T>() throws -> T { Issue.record("the store was called"); throw Called() }
    func accept(_ webhook: VerifiedWebhook, messages: [KoalaMessage], remembers: [Remembered], linger: TimeInterval, identityWait: TimeInterval,
                resumingOn resume: AcceptResumer?) async throws -> AcceptOutcome { try fail() }
    func recall(source: String, keys: [MemoryKey]) async throws -> [MemoryKey: Remembered] { try fail() }
    func claimWaiting(now: Date, limit: Int) async throws -> [WaitingMessage] { try fail() }
    func resolveWaiting(_ seq: Int64, _ resolution: WaitingResolution, linger: TimeInterval, at: Date) async throws { try fail() as Void }
    func storedWebhook(source: String, webhookID: String) async throws -> VerifiedWebhook? { try fail() }
    func claimDue(now: Date, limit: Int, lease: TimeInterval, destination: Destination) async throws -> [OutboxMessage] { try fail() }
    func record(_ outcomes: [DeliveryOutcome]) async throws { try fail() as Void }
    func traceParents(of webhooks: Set<WebhookRef>) async throws -> [WebhookRef: String] { try fail() }
    func prune(before cutoff: Date) async throws -> PruneReport { try fail() }
    func forget(email: String) async throws -> PruneReport { try fail() }
    func storedWebhooks(source: String, since: Date, until: Date, after cursor: StoredCursor?, limit: Int) async throws -> [VerifiedWebhook] { try fail() }
    func storedMessages(source: String, webhookID: String, destination: Destination) async throws -> [String: StoredMessage] { try fail() }
    func enqueueReplay(_ messages: [KoalaMessage], at: Date) async throws -> Int { try fail() }
    func deadLetters(matching filter: DeadLetterFilter, limit: Int) async throws -> [DeadLetter] { try fail() }
    func retryDeadLetters(matching filter: DeadLetterFilter, at: Date) async throws -> Int { try fail() }
    func dropDeadLetters(matching filter: DeadLetterFilter) async throws -> Int { try fail() }
    func counts() async throws -> OutboxCounts { try fail() }
    func queueStats(now: Date) async throws -> QueueStats { try fail() }
    func sourceActivity(sources: [String], now: Date) async throws -> [String: SourceActivity] { try fail() }
    func webhooks(source: String, matching query: WebhookQuery, after cursor: WebhookCursor?, limit: Int) async throws -> [WebhookSummary] { try fail() }
    func webhooks(email: String, limit: Int) async throws -> [WebhookSummary] { try fail() }
    func messages(source: String, webhookID: String) async throws -> [MessageRecord] { try fail() }
    func revokeConsoleSession(nonce: String, expires: Date, now: Date) async throws { try fail() as Void }
    func revokeConsoleSessions(issuedBefore: Date) async throws { try fail() as Void }
    func consoleSessionRevoked(nonce: String, issuedAt: Date) async throws -> Bool { try fail() }
    func saveProgress(name: String, value: String?, at: Date) async throws { try fail() as Void }
    func progress(prefix: String) async throws -> [ProgressEntry] { try fail() }
    func health() async -> StoreHealth { .unavailable }
    var writeRefusal: String? { nil }
    func ready() async throws { try fail() as Void }
    func run() async throws {}
}

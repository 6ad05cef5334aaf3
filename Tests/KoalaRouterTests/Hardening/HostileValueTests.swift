import Foundation
import HTTPTypes
import Logging
import Synchronization
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore

/// Correctly signed webhooks whose values are hostile: each case once crashed the process, stored
/// something other than what arrived, or sent a wrong identity to Koala.
@Suite("Hostile values in signed webhooks")
struct HostileValueTests {
    static let environment = ["STRIPE_WEBHOOK_SECRET": testSecret, "CLERK_WEBHOOK_SECRET": clerkSecret]
    static let clerkSecret = "whsec_" + Base64.encode(Array("koala-router-clerk-test-key!".utf8))

    /// Ingest over the shipped routes with a real SQLite store.
    func ingest() async throws -> (Ingest, any WebhookStore) {
        let table = try RuleLoader(environment: Self.environment).load(directory: repositoryRoot + "/routes")
        let store = try await SQLiteStore(path: temporaryDirectory() + "/db.sqlite")
        return (Ingest(rules: RulesHolder(table), store: store, linger: 0, logger: quietLogger), store)
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
        let (ingest, store) = try await ingest()
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

    @Test func anOutOfRangeTimeIsMissingInEveryFilter() throws {
        let context = EvaluationContext(body: try JSONValue.parse(Array(#"{"big":1e999,"huge":1e300,"ms":10000000000000000000,"neg":-1e999,"s":"1e300","x":2.5}"#.utf8)),
                                        headers: [:], webhook: [:])
        func eval(_ text: String) throws -> JSONValue? {
            var parser = try ExpressionParser(text)
            return try parser.parseComplete().evaluate(in: context)
        }
        for path in ["body.big", "body.huge", "body.ms", "body.neg", "body.s"] {
            for filter in ["unix_seconds", "unix_millis", "timestamp"] {
                let value = try eval("\(path) | \(filter)")
                #expect(value == nil || path == "body.ms" && filter == "unix_millis" && value == nil, "\(path) | \(filter) gave \(String(describing: value))")
            }
        }
        #expect(try eval("body.big | cents") == nil)
        #expect(try eval("body.big | number") == nil)
        #expect(try eval("body.big | round") == nil)
        #expect(try eval("body.huge | round(12)") == nil)
        #expect(try eval("body.x | round(99999999999999999999)") == nil)
        #expect(try eval("body.x | round(-1)") == nil)
        #expect(try eval("body.x | round(1.5)") == nil)
        #expect(try eval("body.x | round(1)") == .double(2.5))
        #expect(try eval("body.big | string") == nil)
        let template = Expression.template([.text("n="), .expression(.path(Path(root: .body, components: [.key("big")])))])
        #expect(template.evaluate(in: context) == .string("n="))
        #expect(Timestamps.iso(Date(timeIntervalSince1970: .infinity)) == "9999-12-31T23:59:59.999Z")
        #expect(Timestamps.iso(Date(timeIntervalSince1970: -.infinity)) == "0001-01-01T00:00:00.000Z")
        #expect(Timestamps.iso(Date(timeIntervalSince1970: .nan)) == "1970-01-01T00:00:00.000Z")
        #expect(KoalaClient.parseRetryAfter("inf") == nil)
        #expect(KoalaClient.parseRetryAfter("1e300") == KoalaClient.maxRetryAfter)
    }

    @Test func aHugeClerkTimestampIsNoCrash() async throws {
        let (ingest, store) = try await ingest()
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

    // MARK: Defect 5: NUL and control characters

    @Test func idsWithControlCharactersAreRefusedNotTruncated() async throws {
        let (ingest, store) = try await ingest()
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

    /// What the id rule lets through (any printable text up to 255 bytes) is stored and read back exactly by
    /// both backends, and so is a body whose JSON carries a NUL.
    @Test(arguments: Backend.allCases) func allowedTextRoundTripsThroughTheStore(_ backend: Backend) async throws {
        let table = try RuleLoader(environment: Self.environment).load(directory: repositoryRoot + "/routes")
        let store = try await makeStore(backend)
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
        try await store.close()
    }

    @Test func anOverlongIdIsRefused() async throws {
        let (ingest, _) = try await ingest()
        let id = String(repeating: "é", count: 200)  // 200 characters, 400 bytes
        let body = Self.invoicePaid(id: id, created: "1732871520")
        let answer = await ingest.handle(source: "stripe", headers: stripeHeaders(body), body: body)
        #expect(answer.status == .badRequest)
        #expect(answer.body["error"]?.stringValue?.contains("400 bytes") == true)
    }

    @Test func anEmailWithANulIsADeadLetterNotAnotherPerson() async throws {
        let (ingest, store) = try await ingest()
        let body = Self.invoicePaid(id: "evt_nul_email", created: "1732871520", email: #"victim\u0000@acme-corp.io"#)
        let answer = await ingest.handle(source: "stripe", headers: stripeHeaders(body), body: body)
        #expect(answer.body["status"] == "accepted")
        #expect(answer.body["dead_lettered"] == 1)
        let dead = try await store.deadLetters(limit: 10)
        #expect(dead.count == 1)
        #expect(dead.first?.identity.email == nil)
        #expect(dead.first?.reason.contains("not a valid email") == true)
    }

    @Test func aProviderIdWithANulIsNeverRememberedOrRecalled() throws {
        let table = try RuleLoader(environment: Self.environment).load(directory: repositoryRoot + "/routes")
        let router = WebhookRouter(source: try #require(table.sources["stripe"]))
        let body = stripeEvent(id: "evt_c", type: "customer.created", object: ["id": "cus_9\u{0}x", "object": "customer", "email": "ada@acme-corp.io"])
        let webhook = VerifiedWebhook(source: "stripe", webhookID: "evt_c", eventType: "customer.created", eventTime: Date(), receivedAt: Date(),
                                      headers: [:], body: body, json: try JSONValue.parse(body), secretLabel: "S", rulesVersion: "v")
        #expect(router.routing(webhook).remembers.isEmpty)
        let subscription = stripeEvent(id: "evt_s", type: "customer.subscription.created", object: [
            "id": "sub_1", "object": "subscription", "customer": "cus_9\u{0}x", "status": "active",
        ])
        let sub = VerifiedWebhook(source: "stripe", webhookID: "evt_s", eventType: "customer.subscription.created", eventTime: Date(),
                                  receivedAt: Date(), headers: [:], body: subscription, json: try JSONValue.parse(subscription),
                                  secretLabel: "S", rulesVersion: "v")
        #expect(router.recallKeys(sub).isEmpty)
        #expect(router.route(sub).allSatisfy { $0.waitingFor == nil && $0.problem != nil })
    }

    // MARK: Defect 6: email validation

    @Test(arguments: [
        ("Ada@Example.IO", "ada@example.io"),
        (" ada@acme-corp.io\n", "ada@acme-corp.io"),
        ("a.b+tag@acme-corp.io", "a.b+tag@acme-corp.io"),
        ("\u{212A}elvin@acme-corp.io", "\u{212A}elvin@acme-corp.io"),  // the Kelvin sign stays itself
        ("İLKER@acme-corp.io", "İlker@acme-corp.io"),                  // not i̇lker
        ("jürgen@müller.de", "jürgen@xn--mller-kva.de"),
        ("ada@ＡＣＭＥ-corp．io", "ada@acme-corp.io"),
        ("ada@ｇｍａｉｌ.com", "ada@gmail.com"),
        ("ada@bücher.example", "ada@xn--bcher-kva.example"),
        ("ada@例え。テスト", "ada@xn--r8jz45g.xn--zckzah"),
    ])
    func addressesNormalise(raw: String, expected: String) {
        #expect(Identity.normalizeEmail(raw) == expected)
    }

    @Test(arguments: [
        "victim\u{0}@acme-corp.io", "vic\u{7}tim@acme-corp.io", "ad\u{202E}a@acme-corp.io", "ada@acme\u{202E}corp.io",
        "ada\u{200B}@acme-corp.io", "\"john doe\"@acme-corp.io", "\"ada\"@acme-corp.io", ".ada@acme-corp.io", "ada.@acme-corp.io",
        "a..b@acme-corp.io", "ada@acme-corp.io.", "ada@.acme-corp.io", "ada@-acme.io", "ada@acme_corp.io", "ada@[127.0.0.1]",
        "a b@acme-corp.io", "ada@acme corp.io", "ada@localhost", "ada@acme.123", "two@@ats.io", "no-at-sign", "@acme.io", "ada@",
        String(repeating: "a", count: 65) + "@acme-corp.io",
        String(repeating: "é", count: 33) + "@acme-corp.io",  // 33 characters, 66 bytes
        "ada@" + String(repeating: "a", count: 64) + ".io",
        "ada@" + Array(repeating: String(repeating: "b", count: 60), count: 5).joined(separator: ".") + ".io",
        String(repeating: "x", count: 5000) + "@acme-corp.io",
        "ada\u{2028}x@acme-corp.io",
    ])
    func addressesAreRefused(raw: String) {
        #expect(Identity.normalizeEmail(raw) == nil, "\(raw.debugDescription) was accepted as \(String(describing: Identity.normalizeEmail(raw)))")
    }

    @Test func aFullwidthFreeMailDomainIsNoCompany() {
        #expect(Identity.companyDomain(ofEmail: "ada@ｇｍａｉｌ.com") == nil)
        #expect(Identity.companyDomain(from: "ＡＣＭＥ-corp.io") == "acme-corp.io")
        #expect(Identity.companyDomain(from: "acme\u{202E}corp.io") == nil)
    }

    // MARK: Defect 7: free mail

    @Test func freeMailMatchesWholeRegistrableDomainsOnly() {
        for company in ["mail.acme-corp.io", "web.acme.de", "live.acme-corp.com", "free.acme.fr", "orange.com", "sky.io", "yahoo-inc.com", "mail-acme.com"] {
            #expect(Identity.companyDomain(from: company) == company, "\(company) is a company")
        }
        for free in ["gmail.com", "yahoo.co.uk", "mail.yahoo.co.uk", "hotmail.fr", "gmx.de", "web.de", "yahoo.com", "hotmail.com",
                     "outlook.com", "aol.com", "libero.it", "wp.pl", "bigpond.net.au", "yahoo.co.jp", "mail.ru", "eu.mailinator.com"] {
            #expect(Identity.companyDomain(from: free) == nil, "\(free) is free mail")
        }
    }

    // MARK: Defect 9: a reload between admission and handling

    @Test func aWebhookAdmittedBeforeAReloadIsHandledByThatTable() async throws {
        let (ingest, _) = try await ingest()
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

    @Test func reloadsThatDropAndDisableTheSourceNeverCrashARequest() async throws {
        let (ingest, _) = try await ingest()
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

/// What the log handlers print for hostile text.
@Suite("Log escaping")
struct LogEscapingTests {
    final class Capture: LogHandler, @unchecked Sendable {
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        let lines = Mutex<[String]>([])
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { $1 }
            lines.withLock { $0.append("\(event.message) \(all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))") }
        }
    }

    @Test func controlAndBidiCharactersAreEscapedInTextLogs() {
        let capture = Capture()
        var logger = Logger(label: "t") { _ in EscapingLogHandler(capture) }
        logger[metadataKey: "request_id"] = "r\n1"
        logger.warning("webhook \u{202E}rejected\r\n2026-11-29 critical koala-router: forged", metadata: ["webhook_id": "evt_1\n2026-11-29T00:00:00+0000 critical forged", "list": ["a\u{0}b"]])
        let line = capture.lines.withLock { $0.joined() }
        #expect(!line.contains("\n") && !line.contains("\r") && !line.contains("\u{202E}") && !line.contains("\u{0}"))
        #expect(line.contains(#"evt_1\u{A}2026-11-29T00:00:00+0000 critical forged"#))
        #expect(line.contains(#"\u{202E}rejected\u{D}\u{A}2026"#))
        #expect(line.contains(#"r\u{A}1"#))
    }

    @Test func jsonLogLinesEscapeBidiCharactersToo() {
        #expect(JSONLogHandler.json(LogText.escaped(.string("a\u{202E}b\u{0}"))) == .string(#"a\u{202E}b\u{0}"#))
        #expect(LogText.escaped("plain text") == "plain text")
        #expect(LogText.bounded("ééé", limit: 5) == "éé…")
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

    @Test(arguments: Backend.allCases) func theVerifiersHeadersAreDropped(_ backend: Backend) async throws {
        let table = try RuleLoader(environment: Self.environment).load(files: Self.rules)
        #expect(table.sources["token"]?.credentialHeaders == ["X-Webhook-Key"])
        let store = try await makeStore(backend)
        let ingest = Ingest(rules: RulesHolder(table), store: store, linger: 0, logger: quietLogger)
        let tokenBody = Array(#"{"id":"w1","type":"signup","email":"ada@acme-corp.io"}"#.utf8)
        let tokenAnswer = await ingest.handle(source: "token", headers: [
            HTTPField.Name("X-Webhook-Key")!: "Bearer tok_live_very_secret_value", HTTPField.Name("X-Trace")!: "t-1",
            HTTPField.Name("X-Session-Id")!: "sess_secret",
        ], body: tokenBody)
        #expect(tokenAnswer.body["status"] == "accepted")
        let acmeBody = Array(#"{"id":"w2","type":"signup","email":"ada@acme-corp.io"}"#.utf8)
        let signature = Hex.encode(Crypto.hmac(.sha256, key: Array("acme-hmac-secret".utf8), data: acmeBody))
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
        try await store.close()
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
        #expect(!StoreError.unsupportedURL("mysql://u:hunter2@db/x").description.contains("hunter2"))
    }
}

/// A store for tests that must decide before touching the store: any call fails the test.
struct NeverCalledStore: WebhookStore {
    struct Called: Error {}
    func fail<T>() throws -> T { Issue.record("the store was called"); throw Called() }
    func accept(_ webhook: VerifiedWebhook, messages: [KoalaMessage], remembers: [Remembered], linger: TimeInterval, identityWait: TimeInterval) async throws -> AcceptOutcome { try fail() }
    func recall(source: String, keys: [MemoryKey]) async throws -> [MemoryKey: KoalaIdentity] { try fail() }
    func claimWaiting(now: Date, limit: Int) async throws -> [WaitingMessage] { try fail() }
    func resolveWaiting(_ seq: Int64, with message: KoalaMessage?, deadReason: String?, linger: TimeInterval, at: Date) async throws { try fail() as Void }
    func storedWebhook(source: String, webhookID: String) async throws -> VerifiedWebhook? { try fail() }
    func claimDue(now: Date, limit: Int, lease: TimeInterval) async throws -> [OutboxMessage] { try fail() }
    func record(_ outcomes: [DeliveryOutcome]) async throws { try fail() as Void }
    func prune(before cutoff: Date) async throws -> PruneReport { try fail() }
    func forget(email: String) async throws -> PruneReport { try fail() }
    func storedWebhooks(source: String, since: Date, until: Date, after cursor: StoredCursor?, limit: Int) async throws -> [VerifiedWebhook] { try fail() }
    func storedMessages(source: String, webhookID: String) async throws -> [String: StoredMessage] { try fail() }
    func enqueueReplay(_ messages: [KoalaMessage], at: Date) async throws -> Int { try fail() }
    func deadLetters(matching filter: DeadLetterFilter, limit: Int) async throws -> [DeadLetter] { try fail() }
    func retryDeadLetters(matching filter: DeadLetterFilter, at: Date) async throws -> Int { try fail() }
    func dropDeadLetters(matching filter: DeadLetterFilter) async throws -> Int { try fail() }
    func counts() async throws -> OutboxCounts { try fail() }
    func queueStats(now: Date) async throws -> QueueStats { try fail() }
    func ping() async -> Bool { false }
    func close() async throws {}
}

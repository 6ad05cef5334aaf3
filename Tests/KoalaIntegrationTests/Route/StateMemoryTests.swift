import Foundation
import HTTPTypes
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaStore
import KoalaTestSupport

/// Issue 14, part 5: for providers that send no previous state, a route remembers a few values per key and a
/// later route compares against them; an update older than the remembered one never overwrites it and
/// produces nothing. On both backends, through the real ingest path and the shipped Paddle routes.
@Suite("State memory")
struct StateMemoryTests {
    static let secret = "pdl_ntfset_01_state"

    func webhook(_ id: String, at seconds: Double, state: [String: JSONValue]?, identity: KoalaIdentity = KoalaIdentity()) throws -> (VerifiedWebhook, [Remembered]) {
        let body = Array(#"{"id":"\#(id)"}"#.utf8)
        let time = Date(timeIntervalSince1970: seconds)
        let w = VerifiedWebhook(source: "paddle", webhookID: id, eventType: "t", eventTime: time, receivedAt: Date(), headers: [:],
                                body: body, json: try JSONTape.parse(body), secretLabel: "S", rulesVersion: "v")
        return (w, [Remembered(key: MemoryKey(namespace: "sub", key: "s1"), identity: identity, state: state, stateAt: time)])
    }

    @Test(arguments: Backend.configured) func aStateIsNeverReplacedByAnOlderOne(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let key = MemoryKey(namespace: "sub", key: "s1")
            for (id, at, state, identity) in [("w2", 2.0, ["mrr": JSONValue.int(20), "plan": "Scale"], KoalaIdentity(email: "a@acme.io")),
                                              ("w1", 1.0, ["mrr": 10, "plan": "Team"], KoalaIdentity()),       // late: kept out
                                              ("w0", 5.0, nil, KoalaIdentity(domain: "acme.io"))] as [(String, Double, [String: JSONValue]?, KoalaIdentity)] {
                let (w, remembers) = try webhook(id, at: at, state: state, identity: identity)
                _ = try await store.accept(w, messages: [], remembers: remembers, linger: 0, identityWait: 0)
            }
            var entry = try #require(try await store.recall(source: "paddle", keys: [key])[key])
            #expect(entry.state == ["mrr": 20, "plan": "Scale"])
            #expect(entry.stateAt == Date(timeIntervalSince1970: 2))
            #expect(entry.identity == KoalaIdentity(email: "a@acme.io", domain: "acme.io"))   // an identity-only entry keeps the state
            // A newer state replaces the old one whole: a value it lacks is not carried over.
            let (w3, r3) = try webhook("w3", at: 3, state: ["plan": "Solo"])
            _ = try await store.accept(w3, messages: [], remembers: r3, linger: 0, identityWait: 0)
            entry = try #require(try await store.recall(source: "paddle", keys: [key])[key])
            #expect(entry.state == ["plan": "Solo"])
            #expect(entry.value["remembered_at"] == "1970-01-01T00:00:03.000Z")
        }
    }

    func paddleUpdate(_ id: String, at time: String, price: String, amount: String, quantity: Int = 1) -> [UInt8] {
        let body: JSONValue = [
            "event_id": .string(id), "event_type": "subscription.updated", "occurred_at": .string(time),
            "data": ["id": "sub_1", "customer_id": "ctm_1", "status": "active", "currency_code": "USD",
                     "billing_cycle": ["interval": "month", "frequency": 1],
                     "items": [["quantity": .int(Int64(quantity)), "price": ["id": .string(price), "description": .string(price),
                                "unit_price": ["amount": .string(amount), "currency_code": "USD"], "billing_cycle": ["interval": "month", "frequency": 1]]]]],
        ]
        return Array(body.encoded().utf8)
    }

    func send(_ ingest: Ingest, _ body: [UInt8]) async -> Ingest.Answer {
        let now = Date()
        let seconds = Int64(now.timeIntervalSince1970)
        let h = Hex.encode(Crypto.hmac(.sha256, key: Self.secret, data: Array("\(seconds):".utf8) + body))
        return await ingest.handle(source: "paddle", headers: fields(["Paddle-Signature": "ts=\(seconds);h1=\(h)"]), body: body, now: now)
    }

    func ingest(_ store: any WebhookStore) throws -> Ingest {
        let table = try RuleLoader(environment: ["PADDLE_WEBHOOK_SECRET": Self.secret]).load(directory: repositoryRoot + "/routes")
        return Ingest(rules: RulesHolder(table), store: store, linger: 0, logger: quietLogger)
    }

    /// The events of one subscription's life, one of them late: the upgrade is told from the remembered
    /// state, the late one sends nothing and leaves the newer state in place.
    @Test(arguments: Backend.configured) func paddleTransitionsComeFromTheRememberedState(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let ingest = try ingest(store)
            let customer = Array(#"{"event_id":"evt_c","event_type":"customer.created","occurred_at":"2024-12-01T09:00:00Z","data":{"id":"ctm_1","email":"ana@brightco.io"}}"#.utf8)
            #expect(await send(ingest, customer).status == .ok)
            let first = await send(ingest, paddleUpdate("evt_1", at: "2024-12-01T10:00:00Z", price: "team", amount: "2000"))
            #expect(first.body["messages"] == 2)          // account traits + MRR Changed (baseline); no state yet, so no transition
            let second = await send(ingest, paddleUpdate("evt_2", at: "2024-12-02T10:00:00Z", price: "scale", amount: "5000"))
            #expect(second.body["messages"] == 3)         // Subscription Upgraded + account traits + MRR Changed (expansion)
            let late = await send(ingest, paddleUpdate("evt_late", at: "2024-12-01T12:00:00Z", price: "solo", amount: "900"))
            #expect(late.body["status"] == "accepted")
            #expect(late.body["messages"] == 0)

            let due = try await store.claimDue(now: Date().addingTimeInterval(1), limit: 100, lease: 60)
            let upgrades = due.filter { $0.route == "subscription-upgraded" }
            #expect(upgrades.count == 1)
            let item = try JSONValue.parse(Array(try #require(upgrades.first).itemJSON.utf8))
            #expect(item["properties"]?["previous_mrr"] == 20)
            #expect(item["properties"]?["mrr"] == 50)
            // The delta travels on the MRR movement, once per change of the account's MRR.
            let moves = try due.filter { $0.route == "subscription-revenue" && $0.kind == .track }.map { try JSONValue.parse(Array($0.itemJSON.utf8))["properties"] }
            #expect(moves.map { $0?["mrr_movement"] } == ["baseline", "expansion"] && moves.map { $0?["mrr_delta"] } == [20, 30])
            let key = MemoryKey(namespace: "paddle_subscription", key: "sub_1")
            #expect(try await store.recall(source: "paddle", keys: [key])[key]?.state?["price_id"] == "scale")
        }
    }

    /// The customer, a first state, then `rounds` rounds of two updates of one subscription sent at once,
    /// one through `first` and one through `second` (the same ingest, or two replicas).
    func race(_ first: Ingest, _ second: Ingest, rounds: Int) async {
        let customer = Array(#"{"event_id":"evt_c","event_type":"customer.created","occurred_at":"2024-12-01T09:00:00Z","data":{"id":"ctm_1","email":"ana@brightco.io"}}"#.utf8)
        _ = await send(first, customer)
        _ = await send(first, paddleUpdate("evt_0", at: "2024-12-01T10:00:00Z", price: "team", amount: "1000"))
        for round in 0..<rounds {
            async let a = send(first, paddleUpdate("evt_a\(round)", at: "2024-12-0\(2 + round)T10:00:00Z", price: "scale\(round)", amount: "\(2000 + 100 * round)"))
            async let b = send(second, paddleUpdate("evt_b\(round)", at: "2024-12-0\(2 + round)T11:00:00Z", price: "max\(round)", amount: "\(3000 + 100 * round)"))
            let answers = await [a, b]
            #expect(answers.allSatisfy { $0.status == .ok }, "\(answers)")
        }
    }

    /// Two updates of one subscription at once: they are routed one after the other, so the second compares
    /// against the first (or is out of order), and one upgrade is never counted twice from the same state.
    @Test(arguments: Backend.configured) func concurrentUpdatesOfOneSubscriptionAreSerialised(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let ingest = try ingest(store)
            await race(ingest, ingest, rounds: 5)
            let due = try await store.claimDue(now: Date().addingTimeInterval(1), limit: 1000, lease: 60)
            var previous: [JSONValue] = []
            for message in due where message.route == "subscription-upgraded" || message.route == "subscription-downgraded" {
                previous.append(try JSONValue.parse(Array(message.itemJSON.utf8))["properties"]?["previous_mrr"] ?? .null)
            }
            // Each transition starts from a different state: none is computed twice from one.
            #expect(previous.count == Set(previous.map { $0.encoded() }).count, "\(previous)")
            let key = MemoryKey(namespace: "paddle_subscription", key: "sub_1")
            #expect(try await store.recall(source: "paddle", keys: [key])[key]?.state?["price_id"] == "max4")
        }
    }

    /// An upgrade whose customer is not known yet waits for the email; when it is released, it is routed
    /// against the state it was compared with at ingest (journaled with the webhook), not the state it
    /// left itself, so the upgrade and its previous MRR survive the wait. `replay` sees the same.
    @Test(arguments: Backend.configured) func aTransitionThatWaitedForItsIdentityKeepsItsPreviousState(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let table = try RuleLoader(environment: ["PADDLE_WEBHOOK_SECRET": Self.secret]).load(directory: repositoryRoot + "/routes")
            let holder = RulesHolder(table)
            let ingest = Ingest(rules: holder, store: store, linger: 0, identityWait: 600, logger: quietLogger)
            let resolver = IdentityResolver(store: store, rules: holder, linger: 0, logger: quietLogger)
            _ = await send(ingest, paddleUpdate("evt_1", at: "2024-12-01T10:00:00Z", price: "team", amount: "2000"))
            let upgrade = await send(ingest, paddleUpdate("evt_2", at: "2024-12-02T10:00:00Z", price: "scale", amount: "5000"))
            #expect(upgrade.body["waiting_for_identity"] == 3)    // the upgrade, the account traits and the MRR movement

            let customer = Array(#"{"event_id":"evt_c","event_type":"customer.updated","occurred_at":"2024-12-03T09:00:00Z","data":{"id":"ctm_1","email":"ana@brightco.io"}}"#.utf8)
            #expect(await send(ingest, customer).status == .ok)
            #expect(try await resolver.runOnce() == true)
            #expect(try await store.counts().dead == 0)
            let due = try await store.claimDue(now: Date().addingTimeInterval(1), limit: 100, lease: 60)
            let upgraded = try #require(due.first { $0.route == "subscription-upgraded" })
            #expect(upgraded.identity == KoalaIdentity(email: "ana@brightco.io"))
            let item = try JSONValue.parse(Array(upgraded.itemJSON.utf8))
            #expect(item["properties"]?["previous_mrr"] == 20)
            #expect(item["properties"]?["mrr"] == 50)

            // The journal holds the state it was compared against; routing it again decides the same.
            let stored = try #require(try await store.storedWebhook(source: "paddle", webhookID: "evt_2"))
            #expect(stored.routedStates?.first { $0.key.namespace == "paddle_subscription" }?.state?["price_id"] == "team")
            let router = WebhookRouter(source: try #require(table.sources["paddle"]))
            let now = try await store.recall(source: "paddle", keys: router.recallKeys(stored))
            #expect(router.route(stored, memory: stored.memoryAsRouted(now)).map(\.route).contains("subscription-upgraded"))
            #expect(!router.route(stored, memory: now).map(\.route).contains("subscription-upgraded"))   // against today's state: no upgrade
        }
    }

    /// `simulate --stored` (the real binary) explains a stored webhook against the states it was routed with,
    /// and prints the state a route remembers.
    @Test func simulateStoredShowsTheStateItWasComparedWith() async throws {
        let binary = try #require(CrashTests.binary, "build the koala-router executable first (swift build --build-tests)")
        let database = temporaryDirectory() + "/db.sqlite"
        let store = try await SQLiteStore(path: database)
        try await store.whileRunning {
            let ingest = try ingest(store)
            let customer = Array(#"{"event_id":"evt_c","event_type":"customer.created","occurred_at":"2024-12-01T09:00:00Z","data":{"id":"ctm_1","email":"ana@brightco.io"}}"#.utf8)
            _ = await send(ingest, customer)
            _ = await send(ingest, paddleUpdate("evt_1", at: "2024-12-01T10:00:00Z", price: "team", amount: "2000"))
            _ = await send(ingest, paddleUpdate("evt_2", at: "2024-12-02T10:00:00Z", price: "scale", amount: "5000"))
            _ = await send(ingest, paddleUpdate("evt_3", at: "2024-12-03T10:00:00Z", price: "solo", amount: "900"))
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["simulate", "paddle", "--stored", "evt_2", "--routes", repositoryRoot + "/routes"]
        process.environment = ["PADDLE_WEBHOOK_SECRET": Self.secret, "KOALA_ROUTER_DATABASE": database, "LOG_LEVEL": "critical"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(output)")
        #expect(output.contains("✓ subscription-upgraded"), "\(output)")
        #expect(output.contains(#""previous_mrr":20"#), "\(output)")
        #expect(output.contains(#"remembers paddle_subscription 'sub_1' → {"mrr":50,"plan":"scale","price_id":"scale","remembered_at":"2024-12-02T10:00:00.000Z","seats":1,"status":"active"}"#), "\(output)")
    }

    /// Two replicas on one PostgreSQL schema take updates of one subscription at the same moment. Their
    /// in-process locks do not see each other; the store's check does: a webhook whose state moved between
    /// recall and accept is routed again, so no transition is computed twice from one state.
    @Test func replicasNeverComputeTwoTransitionsFromOneState() async throws {
        guard Backend.postgresConfigured else { return }
        let url = try freshPostgresURL()
        let a = try PostgresStore(url: url, logger: quietLogger), b = try PostgresStore(url: url, logger: quietLogger)
        try await whileRunning([a, b]) {
            try await a.ready()
            try await b.ready()
            await race(try ingest(a), try ingest(b), rounds: 6)
            let due = try await a.claimDue(now: Date().addingTimeInterval(1), limit: 1000, lease: 60)
            var previous: [String] = []
            for message in due where message.route == "subscription-upgraded" || message.route == "subscription-downgraded" {
                previous.append((try JSONValue.parse(Array(message.itemJSON.utf8))["properties"]?["previous_mrr"] ?? .null).encoded())
            }
            #expect(!previous.isEmpty)
            #expect(previous.count == Set(previous).count, "\(previous)")
            let key = MemoryKey(namespace: "paddle_subscription", key: "sub_1")
            #expect(try await a.recall(source: "paddle", keys: [key])[key]?.state?["price_id"] == "max5")
        }
    }
}

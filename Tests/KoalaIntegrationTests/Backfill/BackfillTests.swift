import AsyncHTTPClient
import Foundation
import HTTPTypes
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport
import Synchronization

/// Issue 27: `backfill` and `reconcile` read a provider's list API (a loopback fake written from its reference:
/// its list shapes, pagination, expansion, 429s, 5xx and slow pages) and route each object through the shipped
/// rule files into a real store. What Koala would get is read from the store's outbox.
@Suite("Backfill and reconcile")
struct BackfillTests {
    static let environment = ShippedRoutesTests.environment

    /// What Koala would get, in the sender's order.
    struct Sent {
        var messages: [OutboxMessage]
        var events: [(email: String?, name: String, properties: JSONValue)] {
            messages.filter { $0.kind == .track }.compactMap { m in
                let item = try? JSONValue.parse(Array(m.itemJSON.utf8))
                return (m.identity.email, item?["event"]?.stringValue ?? "", item?["properties"] ?? .null)
            }
        }
        /// The account traits of each domain, later identifies written over earlier ones.
        var accounts: [String: [String: JSONValue]] {
            var out: [String: [String: JSONValue]] = [:]
            for m in messages where m.endpoint == .account {
                guard let domain = m.identity.domain, case .object(let traits)? = (try? JSONValue.parse(Array(m.itemJSON.utf8)))?["traits"] else { continue }
                out[domain, default: [:]].merge(traits) { _, new in new }
            }
            return out
        }
        var people: [String: [String: JSONValue]] {
            var out: [String: [String: JSONValue]] = [:]
            for m in messages where m.endpoint == .person && m.kind == .identify {
                guard let email = m.identity.email, case .object(let traits)? = (try? JSONValue.parse(Array(m.itemJSON.utf8)))?["traits"] else { continue }
                out[email, default: [:]].merge(traits) { _, new in new }
            }
            return out
        }
    }

    /// A store, the shipped rules, and a backfill over them.
    struct Rig {
        let store: any WebhookStore
        let ingest: Ingest
        let backfill: Backfill
        let metrics = RouterMetrics()

        init(store: any WebhookStore) throws {
            self.store = store
            let table = try RuleLoader(environment: BackfillTests.environment).load(directory: repositoryRoot + "/routes")
            ingest = Ingest(rules: RulesHolder(table), store: store, linger: 0, identityWait: 3600, metrics: metrics, logger: quietLogger)
            backfill = Backfill(ingest: ingest, store: store, logger: quietLogger)
        }

        /// Everything queued since the last call, then marked delivered (as the sender would).
        func sent() async throws -> Sent {
            let messages = try await store.claimDue(now: Date().addingTimeInterval(1), limit: 10_000, lease: 3600)
            try await store.record([.delivered(messages.map(\.seq), at: Date())])
            return Sent(messages: messages)
        }
    }

    static func options(_ api: FakeProviderAPI, source: String? = nil, mode: Backfill.Mode = .backfill) -> Backfill.Options {
        var options = Backfill.Options(source: source ?? api.provider.rawValue, provider: api.provider, apiKey: api.key, apiURL: api.baseURL, mode: mode)
        options.requestsPerSecond = 500
        return options
    }

    // MARK: Stripe

    static func stripeCustomer(_ id: String, _ email: String, _ name: String, created: Int = 1_700_000_000) -> JSONValue {
        ["id": .string(id), "object": "customer", "email": .string(email), "name": .string(name), "created": .int(Int64(created)),
         "currency": "usd", "delinquent": false, "livemode": false, "metadata": [:]]
    }

    static func stripeSubscription(_ id: String, customer: String, status: String, plan: String, amount: Int, quantity: Int,
                                   percentOff: Double? = nil, trialEnd: Int? = nil, endedAt: Int? = nil) -> JSONValue {
        var fields: [String: JSONValue] = [
            "id": .string(id), "object": "subscription", "customer": .string(customer), "status": .string(status), "currency": "usd",
            "created": 1_700_000_100, "start_date": 1_700_000_100, "current_period_start": 1_733_000_000, "current_period_end": 1_735_600_000,
            "cancel_at_period_end": false, "cancel_at": .null, "canceled_at": .null, "pause_collection": .null, "livemode": false,
            "items": ["object": "list", "has_more": false, "data": [[
                "id": .string("si_" + id), "object": "subscription_item", "quantity": .int(Int64(quantity)),
                "price": ["id": .string("price_" + plan), "object": "price", "nickname": .string(plan), "currency": "usd", "type": "recurring",
                          "billing_scheme": "per_unit", "unit_amount": .int(Int64(amount)), "unit_amount_decimal": .string(String(amount)),
                          "recurring": ["interval": "month", "interval_count": 1, "usage_type": "licensed"]],
            ]]],
            "discount": .null, "discounts": [],
            "trial_end": trialEnd.map { .int(Int64($0)) } ?? .null, "ended_at": endedAt.map { .int(Int64($0)) } ?? .null,
        ]
        if let percentOff {
            // Expanded (expand[]=data.discounts): the discount object with its coupon.
            fields["discounts"] = [["id": .string("di_" + id), "object": "discount", "customer": .string(customer), "subscription": .string(id),
                                    "start": 1_700_000_100, "end": .null,
                                    "coupon": ["id": "SAVE", "object": "coupon", "percent_off": .double(percentOff), "duration": "forever", "valid": true]]]
        }
        return .object(fields)
    }

    /// `count` customers (owner<i>@company<i>.io), each with one active Team subscription.
    static func manyCustomers(_ api: FakeProviderAPI, count: Int) {
        api.set("customers", (0..<count).map { stripeCustomer(String(format: "cus_%03d", $0), "owner\($0)@company\($0).io", "Owner \($0)") })
        api.set("subscriptions", (0..<count).map {
            stripeSubscription(String(format: "sub_%03d", $0), customer: String(format: "cus_%03d", $0), status: "active", plan: "Team", amount: 1000 * ($0 + 1), quantity: 1)
        })
    }

    static func stripeWorld(_ api: FakeProviderAPI) {
        api.set("customers", [
            stripeCustomer("cus_A", "ada@acme-a.io", "Ada"),
            stripeCustomer("cus_B", "bob@bravo-b.io", "Bob"),
            stripeCustomer("cus_C", "cy@charlie-c.io", "Cy"),
        ])
        api.set("subscriptions", [
            stripeSubscription("sub_A", customer: "cus_A", status: "active", plan: "Team", amount: 10000, quantity: 2, percentOff: 20),
            stripeSubscription("sub_B", customer: "cus_B", status: "trialing", plan: "Growth", amount: 4900, quantity: 1, trialEnd: 1_900_000_000),
            stripeSubscription("sub_C", customer: "cus_C", status: "canceled", plan: "Starter", amount: 2900, quantity: 1, endedAt: 1_720_000_000),
        ])
    }

    @Test("Stripe: customers and subscriptions set state, tell no moment, and a second run sends nothing", arguments: Backend.configured)
    func stripeBackfill(_ backend: Backend) async throws {
        let api = try await FakeProviderAPI.start(.stripe)
        defer { api.stop() }
        Self.stripeWorld(api)
        // The API limits the first request (429, Retry-After: 1) and fails the retry (500): both are waited out.
        api.script([.status(429, retryAfter: "1"), .status(500)])
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let rig = try Rig(store: store)
            let started = Date()
            let summary = try await rig.backfill.run(Self.options(api))
            #expect(Date().timeIntervalSince(started) >= 1, "Retry-After: 1 was waited for")
            #expect(summary.objects == ["customer": 3, "subscription": 3])
            #expect(summary.rateLimited == 1 && summary.retried == 1)
            #expect(summary.accounts == ["acme-a.io", "bravo-b.io", "charlie-c.io"])
            #expect(summary.people == ["ada@acme-a.io", "bob@bravo-b.io", "cy@charlie-c.io"])
            #expect(summary.deadLettered == 0 && summary.waiting == 0)

            // Pagination by starting_after (two per page), discounts expanded, every status.
            let lists = api.seen.filter { $0.path.hasPrefix("/v1/") }
            #expect(lists.contains { $0.path == "/v1/customers" && $0.query["starting_after"] == "cus_B" })
            #expect(lists.filter { $0.path == "/v1/subscriptions" }.allSatisfy { $0.query["expand[]"] == "data.discounts" && $0.query["status"] == "all" })

            let sent = try await rig.sent()
            // State, no lifecycle moment: no Subscription Started, Trial Started or Churned for old subscriptions.
            #expect(Set(sent.events.map(\.name)) == ["MRR Changed"])
            let movement = try #require(sent.events.first)
            #expect(movement.email == "ada@acme-a.io")
            #expect(movement.properties["mrr_movement"] == "baseline")
            #expect(movement.properties["mrr"] == 160 && movement.properties["mrr_delta"] == 160)

            let accounts = sent.accounts
            #expect(accounts["acme-a.io"]?["mrr"] == 160)
            #expect(accounts["acme-a.io"]?["billing_status"] == "active")
            #expect(accounts["acme-a.io"]?["is_paying_customer"] == true)
            #expect(accounts["acme-a.io"]?["mrr_basis"] == "net")
            #expect(accounts["acme-a.io"]?["group_id"] == "cus_A")
            #expect(accounts["bravo-b.io"]?["on_trial"] == true)
            #expect(accounts["bravo-b.io"]?["trial_mrr"] == 49)
            #expect(accounts["bravo-b.io"]?["is_paying_customer"] == false)
            #expect(accounts["charlie-c.io"]?["billing_status"] == "churned")
            #expect(sent.people["ada@acme-a.io"]?["stripe_customer_id"] == "cus_A")
            #expect(sent.people["ada@acme-a.io"]?["name"] == "Ada")
            // No nulls anywhere.
            #expect(!sent.messages.contains { $0.itemJSON.contains("null") })
            // Identity memory: the customer's email, for the webhooks to come.
            let memory = try await store.recall(source: "stripe", keys: [MemoryKey(namespace: "stripe_customer", key: "cus_A")])
            #expect(memory.values.first?.identity.email == "ada@acme-a.io")

            // Again: nothing new.
            let again = try await rig.backfill.run(Self.options(api))
            #expect(again.messages == 0 && again.stored == 0)
            #expect(again.skipped[Backfill.Skip.unchanged] == 3)
            #expect(again.skipped[Backfill.Skip.agrees] == 3)
            #expect(try await rig.sent().messages.isEmpty)

            // Retention deletes the journal (and with it the duplicate check); what each object last led to is
            // kept in memory, so a reconcile a week later still finds nothing to correct.
            let pruned = try await store.prune(before: Date().addingTimeInterval(3600))
            #expect(pruned.webhooks >= 6)
            let later = try await rig.backfill.run(Self.options(api, mode: .reconcile))
            #expect(later.corrections == 0 && later.messages == 0, "\(later)")
        }
    }

    @Test("A snapshot read before a webhook already applied changes nothing")
    func olderSnapshotChangesNothing() async throws {
        let api = try await FakeProviderAPI.start(.stripe)
        defer { api.stop() }
        Self.stripeWorld(api)
        let store = try await makeStore(.sqlite)
        try await store.whileRunning {
            let rig = try Rig(store: store)
            let now = Date()
            // The customer and an upgrade to Scale 200 × 2 (less 20 %: 320) arrive as webhooks.
            let customer = stripeEvent(id: "evt_cus", type: "customer.created", created: Int(now.timeIntervalSince1970) - 60,
                                       object: Self.stripeCustomer("cus_A", "ada@acme-a.io", "Ada"))
            let upgraded = Self.stripeSubscription("sub_A", customer: "cus_A", status: "active", plan: "Scale", amount: 20000, quantity: 2, percentOff: 20)
            let webhook = stripeEvent(id: "evt_up", type: "customer.subscription.updated", created: Int(now.timeIntervalSince1970), object: upgraded)
            for body in [customer, webhook] {
                let answer = await rig.ingest.handle(source: "stripe", headers: ShippedRoutesTests().signed("stripe", body, now: now), body: body, now: now)
                #expect(answer.status == .ok, "\(answer.body.encoded())")
            }
            let first = try await rig.sent()
            #expect(first.accounts["acme-a.io"]?["mrr"] == 320)

            // A backfill whose pages were read an hour before that webhook still shows Team 100 × 2.
            var options = Self.options(api)
            options.clock = { now.addingTimeInterval(-3600) }
            let summary = try await rig.backfill.run(options)
            #expect(summary.skipped[Backfill.Skip.older] == 1, "\(summary.skipped)")
            let sent = try await rig.sent()
            #expect(sent.accounts["acme-a.io"] == nil, "the account keeps the webhook's state: nothing is sent for it")
            #expect(!sent.events.contains { $0.email == "ada@acme-a.io" })
        }
    }

    @Test("Reconcile sends only corrections: a missed upgrade heals, counted in the metric and kept for the console")
    func reconcileCorrectsWhatWebhooksMissed() async throws {
        let api = try await FakeProviderAPI.start(.stripe)
        defer { api.stop() }
        Self.stripeWorld(api)
        let store = try await makeStore(.sqlite)
        try await store.whileRunning {
            let rig = try Rig(store: store)
            _ = try await rig.backfill.run(Self.options(api))
            _ = try await rig.sent()
            // The upgrade's webhook never came (Stripe gave up after three days).
            var subscriptions = api.collections.withLock { $0["subscriptions"]! }
            subscriptions[0] = Self.stripeSubscription("sub_A", customer: "cus_A", status: "active", plan: "Scale", amount: 20000, quantity: 2, percentOff: 20)
            api.set("subscriptions", subscriptions)

            let summary = try await rig.backfill.run(Self.options(api, mode: .reconcile))
            #expect(summary.corrections == 1, "\(summary)")
            let sent = try await rig.sent()
            #expect(sent.accounts["acme-a.io"]?["mrr"] == 320)
            #expect(sent.accounts["acme-a.io"]?["plan"] == "Scale")
            let movement = try #require(sent.events.first { $0.name == "MRR Changed" })
            #expect(movement.properties["mrr_movement"] == "expansion" && movement.properties["mrr_delta"] == 160)
            #expect(!sent.events.contains { $0.name == "Subscription Upgraded" }, "a reconcile tells state, not the moment it missed")
            #expect(sent.accounts.keys.sorted() == ["acme-a.io"], "only the correction is sent")
            #expect(rig.metrics.exposition().contains(#"koala_router_reconcile_corrections_total{source="stripe"} 1"#))
            let last = try await store.progress(prefix: Backfill.lastReconcileName("stripe"))
            #expect(last.first.flatMap { try? JSONValue.parse(Array($0.value.utf8)) }?["corrections"] == 1)
        }
    }

    @Test("A dry run prints the requests and stores nothing")
    func dryRun() async throws {
        let api = try await FakeProviderAPI.start(.stripe)
        defer { api.stop() }
        Self.stripeWorld(api)
        let store = try await makeStore(.sqlite)
        try await store.whileRunning {
            let rig = try Rig(store: store)
            var options = Self.options(api)
            options.dryRun = true
            let printed = Mutex<[String]>([])
            let summary = try await rig.backfill.run(options, printed: { text in printed.withLock { $0.append(text) } })
            #expect(summary.messages > 0 && summary.stored == 0)
            let text = printed.withLock { $0.joined(separator: "\n") }
            #expect(text.contains(#"POST /web/projects/<key>/accounts/batch {"domain":"acme-a.io""#))
            #expect(text.contains(#""mrr":160"#))
            // The subscriptions found their customer's email from the customers read before them in the run.
            #expect(!text.contains("waits"))
            #expect(try await rig.sent().messages.isEmpty)
            #expect(try await store.counts().webhooks == 0)
        }
    }
}

extension BackfillTests {
    @Test("kill -9 during a backfill: the rerun continues from the stored cursor, and every customer is sent once")
    func killedBackfillResumes() async throws {
        let binary = try #require(CrashTests.binary, "build koala-router first (swift build --build-tests)")
        let api = try await FakeProviderAPI.start(.stripe)
        defer { api.stop() }
        let count = 40
        Self.manyCustomers(api, count: count)
        api.pageDelay.withLock { $0 = 0.15 }
        let folder = temporaryDirectory()
        let database = folder + "/router.sqlite"
        var environment = Self.environment
        environment["STRIPE_API_KEY"] = api.key
        environment["STRIPE_API_URL"] = api.baseURL
        environment["PATH"] = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let arguments = ["backfill", "stripe", "--database", database, "--routes", repositoryRoot + "/routes", "--requests-per-second", "200"]

        let first = Process()
        first.executableURL = URL(fileURLWithPath: binary)
        first.arguments = arguments
        first.environment = environment
        first.standardOutput = FileHandle.nullDevice
        first.standardError = FileHandle.nullDevice
        try first.run()
        let midway = await eventually(timeout: 30) { api.seen.filter { $0.path == "/v1/customers" }.count >= 8 }
        #expect(midway)
        kill(first.processIdentifier, SIGKILL)
        _ = await eventually(timeout: 10) { !first.isRunning }
        #expect(first.terminationReason == .uncaughtSignal)
        let before = api.seen.count

        api.pageDelay.withLock { $0 = 0 }
        // Waited for without blocking a thread: the fake API it reads is served by this process's tasks.
        let rerun = try await Self.run(binary, arguments, environment: environment)
        #expect(rerun.status == 0, "\(rerun.output)")
        #expect(rerun.output.contains("continued from the stored cursor of: customers"), "\(rerun.output)")
        let after = Array(api.seen.dropFirst(before))
        let firstRead = try #require(after.first { $0.path == "/v1/customers" })
        #expect(firstRead.query["starting_after"] != nil, "the rerun starts after the last page stored, not from the first")
        let customerPages = api.seen.filter { $0.path == "/v1/customers" }.count
        #expect(customerPages <= count / 2 + 2, "at most the page in flight is read twice: \(customerPages) reads of \(count / 2) pages")

        // Every customer's identify and account once, whatever page the kill cut.
        let store = try await SQLiteStore(path: database)
        try await store.whileRunning {
            let messages = try await store.claimDue(now: Date().addingTimeInterval(1), limit: 10_000, lease: 60)
            let identifies = messages.filter { $0.endpoint == .person && $0.kind == .identify }
            #expect(identifies.count == count)
            #expect(Set(identifies.compactMap(\.identity.email)).count == count)
            let accounts = messages.filter { $0.endpoint == .account }
            #expect(Set(accounts.compactMap(\.identity.domain)).count == count)
            #expect(accounts.count == count)
            #expect(try await store.progress(prefix: "backfill:stripe:").isEmpty, "a finished run leaves no cursor behind")
        }
    }
}

extension BackfillTests {
    @Test("serve reconciles on its schedule, and its sender delivers the corrections to Koala")
    func scheduledReconcileIsDelivered() async throws {
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let api = try await FakeProviderAPI.start(.stripe)
        defer { api.stop() }
        Self.stripeWorld(api)
        var config = testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala)
        config.providerAPIKeys[.stripe] = api.key
        config.providerAPIURLs[.stripe] = api.baseURL
        config.reconcileInterval = 0.3
        let (app, components) = try await buildApplication(config, logger: quietLogger)
        try await app.test(.live) { _ in
            let delivered = await eventually(timeout: 20) {
                koala.received.contains { $0.domain == "acme-a.io" && $0.identifies.contains { $0["traits"]?["mrr"] == 160 } }
            }
            #expect(delivered, "the scheduled reconcile's account traits reached Koala")
            #expect(koala.violations.isEmpty, "\(koala.violations)")
            #expect(!koala.received.flatMap(\.events).contains { $0["event"] == "Subscription Started" || $0["event"] == "Trial Started" })
            // The account can reach Koala before the run has read its last page; the summary is kept at its end.
            let kept = try await eventually(timeout: 20) {
                try await components.store.progress(prefix: Backfill.lastReconcileName("stripe")).count == 1
            }
            #expect(kept)
            #expect(components.metrics.exposition().contains(#"koala_router_reconcile_objects_total{source="stripe"}"#))
        }
    }
}

extension BackfillTests {
    @Test("--since reads only what changed since then: Stripe by created[gte], the others by updated_at")
    func sinceLimitsByTime() async throws {
        let api = try await FakeProviderAPI.start(.stripe)
        defer { api.stop() }
        Self.stripeWorld(api)
        var customers = api.collections.withLock { $0["customers"]! }
        customers.append(Self.stripeCustomer("cus_NEW", "new@newco-n.io", "New", created: 1_800_000_000))
        api.set("customers", customers)
        let store = try await makeStore(.sqlite)
        try await store.whileRunning {
            let rig = try Rig(store: store)
            var options = Self.options(api)
            options.since = Date(timeIntervalSince1970: 1_750_000_000)
            let summary = try await rig.backfill.run(options)
            #expect(summary.objects == ["customer": 1], "\(summary.objects)")
            #expect(api.seen.filter { $0.path.hasPrefix("/v1/") }.allSatisfy { $0.query["created[gte]"] == "1750000000" })
            #expect(try await rig.sent().people.keys.sorted() == ["new@newco-n.io"])
        }

        let paddle = try await FakeProviderAPI.start(.paddle)
        defer { paddle.stop() }
        let customer = try #require(BackfillProviderTests.sample("paddle/customer.created")["data"])
        paddle.set("customers", [customer])
        let other = try await makeStore(.sqlite)
        try await other.whileRunning {
            let rig = try Rig(store: other)
            var options = Self.options(paddle)
            options.since = Date(timeIntervalSince1970: 1_900_000_000)
            let summary = try await rig.backfill.run(options)
            #expect(summary.skipped[Backfill.Skip.notSince] == 1, "\(summary.skipped)")
            #expect(summary.messages == 0)
        }
    }
}

extension BackfillTests {
    /// Runs a program to its end, its output collected on a thread of its own and its end awaited, so no
    /// thread of the test's pool is blocked while the program talks to servers this process runs.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String]) async throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        let output = Mutex(Data())
        let finished = AsyncStream<Void>.makeStream()
        process.terminationHandler = { _ in finished.continuation.yield() }
        try process.run()
        let reader = Thread {
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            output.withLock { $0 = data }
            finished.continuation.yield()
        }
        reader.start()
        var ends = 0
        for await _ in finished.stream {
            ends += 1
            if ends == 2 { break }
        }
        return (process.terminationStatus, String(decoding: output.withLock { $0 }, as: UTF8.self))
    }
}

extension BackfillTests {
    @Test("A page slower than the request timeout is abandoned and read again")
    func aSlowPageIsReadAgain() async throws {
        let api = try await FakeProviderAPI.start(.stripe)
        defer { api.stop() }
        Self.stripeWorld(api)
        api.script([.delay(3)])
        let store = try await makeStore(.sqlite)
        try await store.whileRunning {
            let rig = try Rig(store: store)
            var options = Self.options(api)
            options.requestTimeout = 0.5
            let summary = try await rig.backfill.run(options)
            #expect(summary.retried == 1, "\(summary)")
            #expect(summary.objects == ["customer": 3, "subscription": 3])
            #expect(try await rig.sent().accounts.count == 3)
        }
    }

    @Test("A refused key ends the run with what to fix, and no secret in the message")
    func aRefusedKeySaysWhatToFix() async throws {
        let api = try await FakeProviderAPI.start(.stripe)
        defer { api.stop() }
        let store = try await makeStore(.sqlite)
        try await store.whileRunning {
            let rig = try Rig(store: store)
            var options = Self.options(api)
            options.apiKey = "rk_test_wrong_key_0123456789"
            await #expect {
                _ = try await rig.backfill.run(options)
            } throws: { error in
                let text = "\(error)"
                return text.contains("answered 401: the API key was refused") && !text.contains("rk_test_wrong_key")
            }
        }
    }
}

extension BackfillTests {
    @Test("backfill beside a running serve on the same SQLite file: the service delivers, each person's messages one request at a time")
    func backfillBesideTheRunningService() async throws {
        let binary = try #require(CrashTests.binary, "build koala-router first (swift build --build-tests)")
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let api = try await FakeProviderAPI.start(.stripe)
        defer { api.stop() }
        let count = 30
        Self.manyCustomers(api, count: count)
        let database = temporaryDirectory() + "/router.sqlite"
        let router = try CrashTests.Router(binary: binary, database: database, koala: koala)
        defer { router.kill9() }
        #expect(await router.ready())
        // Webhooks for some of the same people arrive while the backfill runs.
        let sender = Task {
            for i in stride(from: 0, to: count, by: 3) {
                let body = invoicePaid(id: "evt_beside_\(i)", email: "owner\(i)@company\(i).io")
                var request = HTTPClientRequest(url: "http://127.0.0.1:\(router.port)/webhooks/stripe")
                request.method = .POST
                for field in stripeHeaders(body) { request.headers.add(name: field.name.rawName, value: field.value) }
                request.body = .bytes(body)
                _ = try? await HTTPClient.shared.execute(request, timeout: .seconds(10))
            }
        }
        var environment = Self.environment
        environment["STRIPE_WEBHOOK_SECRET"] = testSecret
        environment["STRIPE_API_KEY"] = api.key
        environment["STRIPE_API_URL"] = api.baseURL
        let backfill = try await Self.run(binary, ["backfill", "stripe", "--database", database, "--routes", repositoryRoot + "/routes",
                                                   "--requests-per-second", "200"], environment: environment)
        await sender.value
        #expect(backfill.status == 0, "\(backfill.output)")
        let delivered = await eventually(timeout: 30) {
            Set(koala.received.compactMap { $0.domain }).count == count
                && koala.received.filter { $0.events.contains { $0["event"] == "Payment Succeeded" } }.count == (count + 2) / 3
        }
        #expect(delivered, "accounts \(Set(koala.received.compactMap { $0.domain }).count) of \(count)")
        #expect(koala.violations.isEmpty, "\(koala.violations)")
        #expect(koala.concurrentPersonViolations == 0, "one request at a time per person")
    }
}

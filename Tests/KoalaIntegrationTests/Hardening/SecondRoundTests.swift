import Foundation
import GRDB
import HTTPTypes
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaStore
import KoalaTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The second hardening round (issue 25), against the real binary: each test reproduces one finding of the
/// audit as the attacker did it, and checks what the attack gets now.
@Suite("Hostile input, second round", .serialized)
struct SecondRoundTests {
    let hostile = HostileInputTests()
    static let clerkKey = Array("koala-router-second-round-clerk!".utf8)
    static let clerkSecret = "whsec_" + Base64.encode(clerkKey)

    /// The shipped routes plus a Standard Webhooks source with the scheme's default id (`resend`).
    static func routesWithStandardWebhooks() throws -> String {
        let folder = temporaryDirectory()
        for name in try FileManager.default.contentsOfDirectory(atPath: repositoryRoot + "/routes") where name.hasSuffix(".yaml") {
            try FileManager.default.copyItem(atPath: repositoryRoot + "/routes/" + name, toPath: folder + "/" + name)
        }
        try """
            source: resend
            verify: { scheme: standard-webhooks, secrets: [CLERK_WEBHOOK_SECRET] }
            routes:
              - name: contact-created
                when: { type: contact.created }
                person: { email: body.data.email }
                track: { event: Contact Created }
            """.write(toFile: folder + "/resend.yaml", atomically: true, encoding: .utf8)
        return folder
    }

    func svixHeaders(id: String, body: [UInt8], prefix: String = "svix", timestamp: Int64 = Int64(Date().timeIntervalSince1970)) -> [(String, String)] {
        [("\(prefix)-id", id), ("\(prefix)-timestamp", String(timestamp)),
         ("\(prefix)-signature", StandardWebhooksVerifier.sign(id: id, timestamp: timestamp, body: body, key: Self.clerkKey)),
         ("Content-Type", "application/json")]
    }

    func webhookIDs(_ running: HostileInputTests.Running, source: String) async throws -> [String] {
        let queue = try DatabaseQueue(path: running.database, configuration: { var c = Configuration(); c.readonly = true; return c }())
        return try await queue.read { try String.fetchAll($0, sql: "SELECT webhook_id FROM webhooks WHERE source = ? ORDER BY webhook_id", arguments: [source]) }
    }

    // MARK: 1. Locking out ingest without a secret

    /// The audit's attack: 33 connections declaring a 1 MiB body behind `Stripe-Signature: t=1,v1=00`, then
    /// silence, made every signed webhook answer 503 for a minute. Now the header is refused before the body;
    /// and a well-formed, fresh signature with a lying or trickling body holds only what arrived, up to its client's
    /// share, on at most its client's connections: another client's signed webhooks are accepted throughout.
    @Test func noUnauthenticatedClientCanLockOutIngest() async throws {
        raiseOpenFileLimit()
        let running = try await hostile.start(["CLERK_WEBHOOK_SECRET": Self.clerkSecret])
        defer { hostile.stop(running) }
        let now = Int(Date().timeIntervalSince1970)
        let port = running.port
        // As in the audit: answered 401 at once, from the headers.
        let auditAnswers = try await offPool { () -> [String] in
            var audit: [RawConnection] = []
            for _ in 0..<33 {
                guard let connection = RawConnection(port: port) else { continue }
                connection.send(HostileInputTests.head([("Stripe-Signature", "t=1,v1=00"), ("Content-Length", "1048576")]))
                audit.append(connection)
            }
            return audit.map { $0.response(timeout: 3).text }
        }
        #expect(auditAnswers.count == 33)
        for answer in auditAnswers {
            #expect(RawConnection.status(answer) == 401 && answer.contains("malformed header Stripe-Signature"), "\(answer.prefix(200))")
        }
        // Stronger: a fresh, well-formed (forged) signature. Twenty clients' worth of real bytes from one address
        // (600 KB of each 1 MiB body, then silence), then 300 connections that declare 1 MiB and send nothing.
        let forged = [("Stripe-Signature", "t=\(now),v1=" + String(repeating: "ab", count: 32)), ("Content-Length", "1048576")]
        let (trickling, early) = try await offPool { () -> ([RawConnection], [String]) in
            var trickling: [RawConnection] = []
            for _ in 0..<20 {
                guard let connection = RawConnection(port: port) else { continue }
                connection.send(HostileInputTests.head(forged) + String(repeating: "x", count: 600_000))
                trickling.append(connection)
            }
            var early: [String] = []
            for connection in trickling {
                if case .data(let bytes) = connection.read(timeout: 0.3) { early.append(String(decoding: bytes, as: UTF8.self)) }
            }
            return (trickling, early)
        }
        for text in early {
            #expect(RawConnection.status(text) == 503 && text.contains("this client has too many webhook bodies in flight") && text.contains("Retry-After: 1"), "\(text.prefix(300))")
        }
        #expect(trickling.count == 20 && early.count >= 6, "one client held more than its 8 MiB share: \(early.count) of 20 refused")
        let silent = try await offPool { () -> [RawConnection] in
            var silent: [RawConnection] = []
            for _ in 0..<300 {
                guard let connection = RawConnection(port: port) else { continue }
                connection.send(HostileInputTests.head(forged))
                silent.append(connection)
            }
            return silent
        }
        // Another client, throughout: Stripe and Clerk webhooks signed correctly are accepted.
        for i in 0..<5 {
            let body = invoicePaid(id: "evt_other_client_\(i)", email: "ada@acme-corp.io")
            let stripe = await RawConnection.request(port: running.port, method: "POST", path: "/webhooks/stripe", headers: hostile.signed(body), body: body, from: "127.0.0.2")
            #expect(stripe?.status == 200, "\(String(describing: stripe))")
            let user = Array(#"{"type":"user.created","timestamp":1732871520000,"data":{"id":"user_\#(i)","primary_email_address_id":"e1","email_addresses":[{"id":"e1","email_address":"u\#(i)@acme-corp.io"}],"external_accounts":[]}}"#.utf8)
            let clerk = await RawConnection.request(port: running.port, method: "POST", path: "/webhooks/clerk", headers: svixHeaders(id: "msg_other_\(i)", body: user), body: user, from: "127.0.0.2")
            #expect(clerk?.status == 200, "\(String(describing: clerk))")
        }
        // The attacker's address holds at most 256 connections; the rest were closed as they opened.
        let metrics = try #require(await RawConnection.request(port: running.port, path: "/metrics", from: "127.0.0.3")).body
        #expect(metrics.contains(#"koala_router_connections_refused_total{reason="client_cap"}"#), "the per-client cap closed none")
        #expect(try await webhookIDs(running, source: "stripe").count == 5)
        // The attacker hangs up: its address is served again.
        for connection in silent + trickling { connection.hangUp() }
        #expect(await eventually(timeout: 5) { await RawConnection.request(port: port, path: "/healthz", timeout: 1)?.status == 200 })
        try await hostile.checkAliveAndClean(running, secrets: [Self.clerkSecret])
    }

    // MARK: 2. Replays with an id the signature did not cover

    @Test func aReplayedWebhookNeverPassesAsNew() async throws {
        let running = try await hostile.start(["CLERK_WEBHOOK_SECRET": Self.clerkSecret, "KOALA_ROUTER_ROUTES": try Self.routesWithStandardWebhooks()])
        defer { hostile.stop(running) }
        // Standard Webhooks, default id: the captured request, then the same with an extra webhook-id.
        let contact = Array(#"{"type":"contact.created","data":{"email":"ada@acme-corp.io"}}"#.utf8)
        let captured = svixHeaders(id: "msg_resend_1", body: contact)
        #expect(try await hostile.post(running, "/webhooks/resend", body: contact, headers: captured).json?["status"] == "accepted")
        for extra in ["msg_resend_2", "msg_resend_3", "msg_resend_4"] {
            let replay = try await hostile.post(running, "/webhooks/resend", body: contact, headers: captured + [("webhook-id", extra)])
            #expect(replay.status == 401 && replay.json?["error"] == "headers webhook-id and svix-id disagree", "\(replay.status) \(replay.body)")
        }
        #expect(try await hostile.post(running, "/webhooks/resend", body: contact, headers: captured).json?["status"] == "duplicate")
        // Clerk: the svix-* values copied into webhook-*, and svix-id changed.
        let user = Array(#"{"type":"user.created","timestamp":1732871520000,"data":{"id":"user_r","primary_email_address_id":"e1","email_addresses":[{"id":"e1","email_address":"grace@acme-corp.io"}],"external_accounts":[]}}"#.utf8)
        let clerk = svixHeaders(id: "msg_clerk_1", body: user)
        #expect(try await hostile.post(running, "/webhooks/clerk", body: user, headers: clerk).json?["status"] == "accepted")
        let copied = svixHeaders(id: "msg_clerk_1", body: user, prefix: "webhook").filter { $0.0 != "Content-Type" }
            + clerk.map { $0.0 == "svix-id" ? ("svix-id", "msg_clerk_forged") : $0 }
        let forged = try await hostile.post(running, "/webhooks/clerk", body: user, headers: copied)
        #expect(forged.status == 401 && forged.json?["error"] == "headers webhook-id and svix-id disagree", "\(forged.status) \(forged.body)")
        #expect(try await webhookIDs(running, source: "resend") == ["msg_resend_1"])
        #expect(try await webhookIDs(running, source: "clerk") == ["msg_clerk_1"])
        // Koala got each person's message once.
        #expect(await eventually(timeout: 10) { running.koala.received.count >= 2 })
        try await Task.sleep(nanoseconds: 300_000_000)
        let events = running.koala.received.flatMap { $0.events }.compactMap { $0["event"]?.stringValue }
        #expect(events.filter { $0 == "Contact Created" }.count == 1 && events.filter { $0 == "Signed Up" }.count == 1, "\(events)")
        try await hostile.checkAliveAndClean(running, secrets: [Self.clerkSecret])
    }

    // MARK: 3. Empty and short keys

    @Test(arguments: ["whsec_", "v1,whsec_", "===="])
    func anEmptyKeyIsRefusedNamingTheSetting(secret: String) async throws {
        let running = try await hostile.start(["CLERK_WEBHOOK_SECRET": secret])
        defer { hostile.stop(running) }
        // A webhook signed with an empty key, as the attacker would.
        let user = Array(#"{"type":"user.created","timestamp":1732871520000,"data":{"id":"user_e"}}"#.utf8)
        let ts = Int64(Date().timeIntervalSince1970)
        let headers = [("svix-id", "msg_empty"), ("svix-timestamp", String(ts)),
                       ("svix-signature", StandardWebhooksVerifier.sign(id: "msg_empty", timestamp: ts, body: user, key: []))]
        let answer = try await hostile.post(running, "/webhooks/clerk", body: user, headers: headers)
        #expect(answer.status == 503, "\(answer.status) \(answer.body)")
        #expect(answer.json?["error"]?.stringValue?.contains("CLERK_WEBHOOK_SECRET is not a usable base64 secret") == true, "\(answer.body)")
        #expect(try await webhookIDs(running, source: "clerk").isEmpty)
        #expect(running.logText.contains("error") && running.logText.contains("CLERK_WEBHOOK_SECRET is set but its key is"), "\(running.logText.suffix(2000))")
        // `check` fails on it, naming the setting.
        let binary = try #require(CrashTests.binary)
        let check = try runProgram(binary, ["check", "--no-samples", repositoryRoot + "/routes"],
                                   environment: ["CLERK_WEBHOOK_SECRET": secret, "STRIPE_WEBHOOK_SECRET": testSecret, "LOG_LEVEL": "critical"])
        #expect(check.status == 1, "check exited \(check.status):\n\(check.output)")
        #expect(check.output.contains("error: ") && check.output.contains("source 'clerk': CLERK_WEBHOOK_SECRET"), "\(check.output)")
    }

    // MARK: 4. Sign-out across restarts and replicas

    @Test func aSignedOutSessionStaysOutAfterARestart() async throws {
        let running = try await hostile.start()
        let cookie = try #require(await signIn(running))
        let csrf = try #require(try await csrfToken(running, cookie: cookie))
        // Signed out: the cookie is refused.
        let signOut = try #require(await RawConnection.request(port: running.port, method: "POST", path: "/console/sign-out",
            headers: [("Cookie", cookie), ("Sec-Fetch-Site", "same-origin"), ("Content-Type", "application/x-www-form-urlencoded")],
            body: Array("csrf=\(csrf)".utf8)))
        #expect(signOut.status == 303)
        #expect(try await hostile.get(running, "/console", headers: [("Cookie", cookie)]).status == 303)
        // A restart on the same database: still refused, and a retry POST with that session's CSRF token does nothing.
        running.router.kill9()
        let binary = try #require(CrashTests.binary)
        let again = try CrashTests.Router(binary: binary, database: running.database, koala: running.koala,
                                          extra: ["KOALA_ROUTER_ADMIN_TOKEN": HostileInputTests.adminToken])
        defer { again.kill9(); running.koala.stop() }
        #expect(await again.ready())
        let page = try #require(await RawConnection.request(port: again.port, path: "/console", headers: [("Cookie", cookie)]))
        #expect(page.status == 303, "a signed-out session opened the console after a restart")
        let retry = try #require(await RawConnection.request(port: again.port, method: "POST", path: "/console/dead-letters/retry",
            headers: [("Cookie", cookie), ("Sec-Fetch-Site", "same-origin"), ("Content-Type", "application/x-www-form-urlencoded")],
            body: Array("csrf=\(csrf)&source=stripe".utf8)))
        #expect(retry.status == 303 && !retry.body.contains("Retried"), "\(retry.status) \(retry.body.prefix(200))")
    }

    /// Sign out everywhere: one action ends every session, on every replica (two routers on one PostgreSQL schema).
    @Test(.enabled(if: Backend.postgresConfigured, "needs the PostgreSQL server scripts/test starts"))
    func signingOutEverywhereEndsEverySessionOnEveryReplica() async throws {
        let url = try freshPostgresURL()
        let first = try await hostile.start([:], database: url)
        defer { hostile.stop(first) }
        let binary = try #require(CrashTests.binary)
        let second = try CrashTests.Router(binary: binary, database: url, koala: first.koala, extra: ["KOALA_ROUTER_ADMIN_TOKEN": HostileInputTests.adminToken])
        defer { second.kill9() }
        #expect(await second.ready())
        let laptop = try #require(await signIn(first)), phone = try #require(await signIn(first))
        #expect(await RawConnection.request(port: second.port, path: "/console", headers: [("Cookie", laptop)])?.status == 200)
        // One session signs out: the other replica refuses it too.
        let laptopCSRF = try #require(try await csrfToken(first, cookie: laptop))
        _ = await RawConnection.request(port: second.port, method: "POST", path: "/console/sign-out",
            headers: [("Cookie", laptop), ("Sec-Fetch-Site", "same-origin"), ("Content-Type", "application/x-www-form-urlencoded")],
            body: Array("csrf=\(laptopCSRF)".utf8))
        #expect(await RawConnection.request(port: first.port, path: "/console", headers: [("Cookie", laptop)])?.status == 303)
        #expect(await RawConnection.request(port: first.port, path: "/console", headers: [("Cookie", phone)])?.status == 200)
        // Everywhere, from a third session on the second replica: every session ends, on both.
        let desk = try #require(await signIn(first))
        let deskCSRF = try #require(try await csrfToken(first, cookie: desk))
        let everywhere = await RawConnection.request(port: second.port, method: "POST", path: "/console/sign-out-everywhere",
            headers: [("Cookie", desk), ("Sec-Fetch-Site", "same-origin"), ("Content-Type", "application/x-www-form-urlencoded")],
            body: Array("csrf=\(deskCSRF)".utf8))
        #expect(everywhere?.status == 303)
        for cookie in [phone, desk] {
            for port in [first.port, second.port] {
                #expect(await RawConnection.request(port: port, path: "/console", headers: [("Cookie", cookie)])?.status == 303)
            }
        }
        // A new sign-in works.
        let fresh = try #require(await signIn(first))
        #expect(await RawConnection.request(port: second.port, path: "/console", headers: [("Cookie", fresh)])?.status == 200)
    }

    // MARK: 5. Ids with reserved characters in the console

    /// Every Lemon Squeezy webhook (its id holds `:`) was a 404 from the console's own link; ids holding `/`
    /// could not be reached at all. (The browser walk opens the same ids from their links.)
    @Test func theConsoleOpensEveryStoredId() async throws {
        let running = try await hostile.start()
        defer { hostile.stop(running) }
        let cookie = try #require(await signIn(running))
        for id in ["order_created:orders:1001:2024-11-29T09:12:00.000000Z", "evt/with/slashes", "evt%2Fliteral", "evt space", "evt_ü_日本", ".."] {
            let body = invoicePaid(id: id, email: "ada@acme-corp.io")
            #expect(try await hostile.post(running, body: body, headers: hostile.signed(body)).json?["status"] == "accepted", "\(id)")
            let search = try await hostile.get(running, "/console/webhooks?q=" + Console.pathComponent(id), headers: [("Cookie", cookie)])
            let link = Console.webhookLink(source: "stripe", webhookID: id)
            #expect(search.body.contains("href=\"\(HTML.text(link))\""), "\(id): its link \(link) is not on the search page")
            let page = try await hostile.get(running, link, headers: [("Cookie", cookie)])
            #expect(page.status == 200 && page.body.contains("<h1>Webhook <code>\(HTML.text(id))</code></h1>"), "\(id) at \(link): \(page.status)")
        }
    }

    // MARK: 6. Numeric ids

    @Test func numericIdsThatAFloatWouldMergeStayApart() async throws {
        let running = try await hostile.start()
        defer { hostile.stop(running) }
        let written = ["99999999999999999990", "99999999999999999991", "200", "2e2", "200.0"]
        for id in written {
            let body = Array(#"{"id":\#(id),"object":"event","type":"invoice.paid","created":1732871520,"data":{"object":{"customer_email":"n\#(id.count)@acme-corp.io","amount_paid":100,"currency":"usd"}}}"#.utf8)
            let answer = try await hostile.post(running, body: body, headers: hostile.signed(body))
            #expect(answer.json?["status"] == "accepted" && answer.json?["webhook_id"]?.stringValue == id, "\(id): \(answer.body)")
        }
        #expect(Set(try await webhookIDs(running, source: "stripe")) == Set(written))
        try await hostile.checkAliveAndClean(running)
    }

    // MARK: 7. Credential-like headers

    @Test func credentialLikeHeadersAreNeverStored() async throws {
        let running = try await hostile.start()
        defer { hostile.stop(running) }
        let names = ["x-api_key", "x-access-key", "x-private-key", "x-signing-key", "x-key", "x-pass", "x-pwd", "x-bearer"]
        let body = invoicePaid(id: "evt_headers", email: "ada@acme-corp.io")
        let values = names.map { "leaked-\($0)-value" }
        let answer = try await hostile.post(running, body: body, headers: hostile.signed(body) + Array(zip(names, values)) + [("User-Agent", "Stripe/1.0")])
        #expect(answer.json?["status"] == "accepted", "\(answer.body)")
        let queue = try DatabaseQueue(path: running.database, configuration: { var c = Configuration(); c.readonly = true; return c }())
        let stored = try #require(try await queue.read { try String.fetchOne($0, sql: "SELECT headers FROM webhooks WHERE webhook_id = 'evt_headers'") })
        #expect(Set(try JSONValue.parse(Array(stored.utf8)).objectKeys) == ["content-type", "user-agent"], "\(stored)")
        // Nor are they shown: the console's page of that webhook.
        let cookie = try #require(await signIn(running))
        let page = try await hostile.get(running, "/console/webhooks/stripe/evt_headers", headers: [("Cookie", cookie)])
        #expect(page.status == 200 && page.body.contains("user-agent"))
        for value in values { #expect(!page.body.contains(value)) }
        try await hostile.checkAliveAndClean(running, secrets: values)
    }

    // MARK: 8. Rate limits and log floods

    /// One client made 1,751 wrong sign-ins and 2,001 wrong admin tokens a second, each a warning line. Past
    /// the limit it gets 429 with Retry-After, and the log sums refusals up instead of one line each.
    @Test func wrongTokensAndSignaturesAreRateLimitedAndSummedUpInTheLog() async throws {
        let running = try await hostile.start(["KOALA_ROUTER_REJECTION_LOG_INTERVAL_S": "1"])
        defer { hostile.stop(running) }
        let adminStarted = Date()
        let port = running.port
        let (statuses, retryAfter) = try await offPool { () -> ([Int: Int], String?) in
            var statuses: [Int: Int] = [:]
            var retryAfter: String?
            for i in 0..<200 {
                guard let connection = RawConnection(port: port) else { continue }
                connection.send("GET /admin/dead-letters HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer wrong-token-\(i)-0123456789\r\n\r\n")
                let text = connection.response(timeout: 3).text
                statuses[RawConnection.status(text) ?? 0, default: 0] += 1
                if RawConnection.status(text) == 429 { retryAfter = text.split(separator: "\r\n").first { $0.lowercased().hasPrefix("retry-after: ") }.map(String.init) }
            }
            return (statuses, retryAfter)
        }
        // 30 at once, then one more every 2 s while the loop ran.
        let adminRefilled = Int(Date().timeIntervalSince(adminStarted) / 2) + 1
        #expect((30...(30 + adminRefilled)).contains(statuses[401] ?? 0) && statuses.keys.sorted() == [401, 429], "\(statuses)")
        #expect(retryAfter.flatMap { Int($0.dropFirst("retry-after: ".count)) }.map { $0 >= 1 && $0 <= 2 } == true, "\(String(describing: retryAfter))")
        // The console's sign-in shares the count: refused too, even with the right token, until the bucket refills.
        #expect(await signIn(running) == nil)
        // Another address is not affected.
        let other = await RawConnection.request(port: running.port, path: "/admin/dead-letters",
                                           headers: [("Authorization", "Bearer \(HostileInputTests.adminToken)")], from: "127.0.0.2")
        #expect(other?.status == 200)
        // Webhooks failing verification: 600 a minute per client and source, then 429 before anything is read.
        var webhookStatuses: [Int: Int] = [:]
        let body = invoicePaid(id: "evt_forged", email: "ada@acme-corp.io")
        let started = Date()
        for _ in 0..<700 {
            let answer = try await hostile.post(running, body: body, headers: hostile.signed(body, secret: "whsec_attacker_secret"))
            webhookStatuses[answer.status, default: 0] += 1
        }
        // 600 at once, then one more every 0.1 s while the loop ran.
        let refilled = Int(Date().timeIntervalSince(started) * 10) + 1
        #expect((600...(600 + refilled)).contains(webhookStatuses[401] ?? 0) && webhookStatuses[429, default: 0] >= 100 - refilled
                && webhookStatuses.keys.sorted() == [401, 429], "\(webhookStatuses) in \(Date().timeIntervalSince(started)) s")
        #expect(await RawConnection.request(port: running.port, method: "POST", path: "/webhooks/stripe", headers: hostile.signed(body), body: body, from: "127.0.0.2")?.status == 200)
        // The log: one line for the first refusal of each kind, then one summary line per interval.
        try await Task.sleep(nanoseconds: 1_500_000_000)
        // At most two lines (the first refusal, the summary) per kind and one-second interval.
        let intervals = Int(Date().timeIntervalSince(adminStarted)) + 2
        let lines = running.logText.split(separator: "\n")
        let rejected = lines.filter { $0.contains("webhook rejected") }
        let admin = lines.filter { $0.contains("admin API refused") }
        #expect(rejected.count <= 2 * intervals && rejected.contains { $0.contains("more in the last 1 s") }, "\(rejected.count) lines in \(intervals) s: \(rejected.prefix(5))")
        #expect(admin.count <= 2 * intervals && admin.contains { $0.contains("more in the last 1 s") }, "\(admin.count) lines")
        #expect(lines.count < 30 + 6 * intervals, "\(lines.count) log lines for 900 refusals")
        try await hostile.checkAliveAndClean(running)
    }

    // MARK: 9. What the webhook listener tells anyone

    @Test func readinessAndMetricsTellStrangersNothing() async throws {
        let routes = try Self.routesWithStandardWebhooks()
        let running = try await hostile.start(["KOALA_ROUTER_ROUTES": routes, "KOALA_ROUTER_RULES_POLL_S": "0.2"])
        defer { hostile.stop(running) }
        // A broken rule file: its reload error names the absolute path.
        try "source: broken\nverify: {scheme: stripe}\n".write(toFile: routes + "/broken.yaml", atomically: true, encoding: .utf8)
        let details = [("Authorization", "Bearer \(HostileInputTests.adminToken)")]
        #expect(await eventually(timeout: 10) { (try? await hostile.get(running, "/readyz", headers: details).body.contains("rules_reload_error")) == true })
        let ready = try await hostile.get(running, "/readyz")
        #expect(ready.status == 200 && ready.body == "{\"status\":\"ready\"}\n", "\(ready.body)")
        let full = try await hostile.get(running, "/readyz", headers: details)
        #expect(full.body.contains(routes) && full.body.contains("\"sources\"") && full.body.contains("\"koala\""))
        #expect(try await hostile.get(running, "/readyz", headers: [("Authorization", "Bearer wrong-token-0123456789")]).status == 401)
        let metrics = try await hostile.get(running, "/metrics").body
        #expect(!metrics.contains(routes) && !metrics.contains("/tmp/") && !metrics.contains("/work/"), "the metrics show a file path")
        #expect(try await hostile.get(running, "/healthz").body == "{\"status\":\"ok\"}\n")
    }

    /// With KOALA_ROUTER_METRICS_ADDRESS, metrics and detailed readiness move to a listener of their own.
    @Test func metricsAndProbesCanHaveAListenerOfTheirOwn() async throws {
        let opsPort = CrashTests.freePort()
        let running = try await hostile.start(["KOALA_ROUTER_METRICS_ADDRESS": "127.0.0.1:\(opsPort)"])
        defer { hostile.stop(running) }
        #expect(try await hostile.get(running, "/metrics").status == 404)
        #expect(try await hostile.get(running, "/readyz").body == "{\"status\":\"ready\"}\n")
        let metrics = try #require(await RawConnection.request(port: opsPort, path: "/metrics"))
        #expect(metrics.status == 200 && metrics.body.contains("koala_router_rules_info"))
        let ready = try #require(await RawConnection.request(port: opsPort, path: "/readyz"))
        #expect(ready.status == 200 && ready.body.contains("\"rules_version\"") && ready.body.contains("\"sources\""))
        #expect(await RawConnection.request(port: opsPort, path: "/healthz")?.status == 200)
        #expect(await RawConnection.request(port: opsPort, method: "POST", path: "/webhooks/stripe", body: [])?.status == 404, "webhooks are not taken there")
    }

    // MARK: 10. Connection exhaustion

    /// 4,200 idle connections (the limit is 4,096) made /healthz wait 6.9 s. One address now holds at most 256;
    /// health and readiness answer within a second, on the webhook listener from another address and on the
    /// listener of their own.
    @Test func healthAnswersWithinASecondWhileOneClientHoldsThousandsOfConnections() async throws {
        raiseOpenFileLimit()
        let opsPort = CrashTests.freePort()
        let running = try await hostile.start(["KOALA_ROUTER_METRICS_ADDRESS": "127.0.0.1:\(opsPort)"])
        defer { hostile.stop(running) }
        let port = running.port
        let held = try await offPool { () -> [RawConnection] in
            var held: [RawConnection] = []
            for _ in 0..<4200 {
                guard let connection = RawConnection(port: port) else { break }
                held.append(connection)
            }
            return held
        }
        #expect(held.count == 4200)
        for (port, from) in [(running.port, "127.0.0.2"), (opsPort, "127.0.0.1")] {
            for path in ["/healthz", "/readyz"] {
                let start = Date()
                let answer = await RawConnection.request(port: port, path: path, timeout: 5, from: from)
                let took = Date().timeIntervalSince(start)
                #expect(answer?.status == 200 && took < 1, "\(path) on \(port) from \(from): \(String(describing: answer?.status)) in \(took) s")
            }
        }
        let metrics = try #require(await RawConnection.request(port: opsPort, path: "/metrics")).body
        let refused = metrics.split(separator: "\n").first { $0.hasPrefix(#"koala_router_connections_refused_total{reason="client_cap"}"#) }
        #expect(refused.flatMap { Double($0.split(separator: " ").last ?? "") }.map { $0 >= 3900 } == true, "\(String(describing: refused))")
        withExtendedLifetime(held) {}
    }

    // MARK: 11. Early answers reach a client that is still sending

    /// A 413 (or 401) answered before the body is read sometimes reached the client as a connection reset, when
    /// the server closed with bytes still arriving. Each of 30 clients sends its whole oversized body at once and
    /// only then reads: every one reads its answer.
    @Test func anEarlyAnswerReachesAClientStillSending() async throws {
        let running = try await hostile.start()
        defer { hostile.stop(running) }
        let oversized = [UInt8](repeating: UInt8(ascii: "x"), count: (1 << 20) + 4096)
        let now = Int(Date().timeIntervalSince1970)
        let port = running.port
        let answers = try await offPool { () -> [(sent: Bool, text: String, closed: Bool)] in
            (0..<30).map { i in
                guard let connection = RawConnection(port: port) else { return (false, "", false) }
                let headers: [(String, String)] = i.isMultiple(of: 2)
                    ? [("Stripe-Signature", "t=\(now),v1=" + String(repeating: "ab", count: 32)), ("Content-Length", "\(oversized.count)")]   // 413
                    : [("Content-Length", "\(oversized.count)")]                                                                          // 401
                let sent = connection.send(HostileInputTests.head(headers) + String(decoding: oversized, as: UTF8.self))
                let answer = connection.response(timeout: 5)
                return (sent, answer.text, answer.closed)
            }
        }
        for (i, answer) in answers.enumerated() {
            #expect(answer.sent, "\(i): the router stopped reading")
            #expect(RawConnection.status(answer.text) == (i.isMultiple(of: 2) ? 413 : 401) && answer.closed, "\(i): \(answer.text.prefix(120))")
        }
        try await hostile.checkAliveAndClean(running)
    }

    // MARK: 12. The event-time warning README promises

    @Test func anUnusableEventTimeIsLogged() async throws {
        let running = try await hostile.start()
        defer { hostile.stop(running) }
        let body = Array(#"{"id":"evt_time_huge","object":"event","type":"invoice.paid","created":1e999,"data":{"object":{"customer_email":"ada@acme-corp.io","amount_paid":100,"currency":"usd"}}}"#.utf8)
        #expect(try await hostile.post(running, body: body, headers: hostile.signed(body)).status == 200)
        #expect(await eventually(timeout: 5) { running.logText.contains("event time unusable; using the time of receipt") })
        let line = running.logText.split(separator: "\n").first { $0.contains("event time unusable") } ?? ""
        #expect(line.contains("evt_time_huge") && line.contains("body.created | unix_seconds") && line.contains("a number too large for any time"), "\(line)")
    }

    // MARK: 13. A full disk

    /// The SQLite file on a 3 MiB file system, filled: ingest answers 503 with Retry-After, readiness says why,
    /// the process lives, every webhook it accepted is delivered, and once space returns it heals by itself.
    @Test(.enabled(if: getuid() == 0, "mounts a small tmpfs: run as root (CI does)"))
    func aFullDiskRefusesWebhooksSaysWhyAndHealsByItself() async throws {
        let volume = temporaryDirectory() + "/small"
        try FileManager.default.createDirectory(atPath: volume, withIntermediateDirectories: true)
        let mount = try runProgram("/bin/mount", ["-t", "tmpfs", "-o", "size=3m", "tmpfs", volume], environment: [:])
        try #require(mount.status == 0, "could not mount a tmpfs: \(mount.output)")
        defer { _ = try? runProgram("/bin/umount", ["-l", volume], environment: [:]) }
        let running = try await hostile.start([:], database: volume + "/db.sqlite")
        defer { hostile.stop(running) }
        // Leave the database little room: a filler file takes the rest.
        var stat = statvfs()
        statvfs(volume, &stat)
        let free = Int(stat.f_bavail) * Int(stat.f_frsize)
        let filler = volume + "/filler"
        FileManager.default.createFile(atPath: filler, contents: Data(count: max(0, free - 256 * 1024)))
        var accepted: [String] = []
        var refused: HostileInputTests.Answer?
        var retryAfter: String?
        for i in 0..<2000 {
            let body = invoicePaid(id: "evt_full_\(i)", email: "p\(i % 7)@acme-corp.io")
            let port = running.port, headers = hostile.signed(body)
            let text = try await offPool { () -> String in
                guard let connection = RawConnection(port: port) else { return "" }
                connection.send(HostileInputTests.head(headers + [("Content-Length", "\(body.count)"), ("Connection", "close")]))
                connection.send(body)
                return connection.response(timeout: 10).text
            }
            let status = RawConnection.status(text) ?? 0
            if status == 200 { accepted.append("evt_full_\(i)"); continue }
            refused = HostileInputTests.Answer(status: status, body: text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? "")
            retryAfter = text.split(separator: "\r\n").first { $0.lowercased().hasPrefix("retry-after: ") }.map { String($0.dropFirst(13)) }
            break
        }
        let answer = try #require(refused, "the disk never filled: \(accepted.count) webhooks accepted")
        #expect(answer.status == 503 && answer.json?["error"] == "storage unavailable, retry later", "\(answer.status) \(answer.body)")
        #expect(retryAfter == "60")
        #expect(running.router.process.isRunning, "the router died on a full disk")
        let details = [("Authorization", "Bearer \(HostileInputTests.adminToken)")]
        let ready = try await hostile.get(running, "/readyz", headers: details)
        #expect(ready.status == 503 && ready.json?["store"]?.stringValue?.contains("refusing writes: the disk holding") == true
                && ready.body.contains("is full (SQLITE_FULL)"), "\(ready.status) \(ready.body)")
        #expect(try await hostile.get(running, "/readyz").body == "{\"status\":\"not ready\"}\n")
        #expect(running.logText.contains("store could not take a webhook") && running.logText.contains("SQLITE_FULL"))
        // Space returns: readiness and ingest heal without a restart.
        try FileManager.default.removeItem(atPath: filler)
        #expect(await eventually(timeout: 10) { (try? await hostile.get(running, "/readyz"))?.status == 200 })
        let after = invoicePaid(id: "evt_full_after", email: "ada@acme-corp.io")
        #expect(try await hostile.post(running, body: after, headers: hostile.signed(after)).status == 200)
        accepted.append("evt_full_after")
        // Every webhook answered 200 reaches Koala.
        let expected = Set(accepted.map { MessageID.derive(source: "stripe", webhookID: $0, route: "payment-succeeded", output: .track) })
        #expect(await eventually(timeout: 30) { expected.isSubset(of: Set(running.koala.deliveredMessageIDs)) },
                "\(expected.subtracting(running.koala.deliveredMessageIDs).count) of \(expected.count) accepted webhooks never reached Koala")
        print("full disk: \(accepted.count - 1) webhooks accepted on a 3 MiB file system before the first 503; healed once space returned")
    }

    /// PostgreSQL refusing writes (the database turned read-only, as a standby after a failover is): the same.
    @Test(.enabled(if: Backend.postgresConfigured, "needs the PostgreSQL server scripts/test starts"))
    func aDatabaseRefusingWritesRefusesWebhooksSaysWhyAndHealsByItself() async throws {
        let base = try testPostgresURL()
        let name = "koala_ro_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
        let admin = base.replacingOccurrences(of: "postgres://koala@", with: "postgres://postgres@")
        func sql(_ statement: String, database: String = "koala_test") throws {
            let url = admin.replacingOccurrences(of: "/koala_test", with: "/\(database)")
            let result = try runProgram("/usr/bin/psql", [url, "-v", "ON_ERROR_STOP=1", "-qAtc", statement], environment: [:])
            try #require(result.status == 0, "\(statement): \(result.output)")
        }
        try sql("CREATE DATABASE \(name) OWNER koala")
        defer { try? sql("DROP DATABASE IF EXISTS \(name) WITH (FORCE)") }
        let running = try await hostile.start([:], database: base.replacingOccurrences(of: "/koala_test", with: "/\(name)"))
        defer { hostile.stop(running) }
        let first = invoicePaid(id: "evt_ro_1", email: "ada@acme-corp.io")
        #expect(try await hostile.post(running, body: first, headers: hostile.signed(first)).status == 200)
        // Delivered and recorded first (a round whose record the read-only database refused would hold its lease).
        let firstID = MessageID.derive(source: "stripe", webhookID: "evt_ro_1", route: "payment-succeeded", output: .track)
        #expect(await eventually(timeout: 10) { running.koala.deliveredMessageIDs.contains(firstID) })
        try await Task.sleep(nanoseconds: 500_000_000)
        // Read-only from now on, for every new session; the router's pooled sessions are ended so it reconnects.
        try sql("ALTER DATABASE \(name) SET default_transaction_read_only = on")
        try sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(name)'")
        // The first 503 may be a pooled session the termination cut (unavailable, not a refusal): send until the
        // database itself has refused a write, as readiness then says.
        let details = [("Authorization", "Bearer \(HostileInputTests.adminToken)")]
        var refused: HostileInputTests.Answer?
        var ready = try await hostile.get(running, "/readyz", headers: details)
        for i in 0..<20 {
            let body = invoicePaid(id: "evt_ro_refused_\(i)", email: "ada@acme-corp.io")
            let answer = try await hostile.post(running, body: body, headers: hostile.signed(body))
            if answer.status == 503 {
                refused = answer
                ready = try await hostile.get(running, "/readyz", headers: details)
                if ready.body.contains("refusing writes") { break }
            }
            try await Task.sleep(nanoseconds: 200_000_000)
        }
        #expect(refused?.json?["error"] == "storage unavailable, retry later", "\(String(describing: refused))")
        #expect(ready.status == 503 && ready.body.contains("refusing writes: the database is read-only (25006)"), "\(ready.status) \(ready.body)")
        #expect(running.router.process.isRunning)
        // Writable again: it heals by itself.
        try sql("ALTER DATABASE \(name) RESET default_transaction_read_only")
        try sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(name)'")
        #expect(await eventually(timeout: 15) { (try? await hostile.get(running, "/readyz"))?.status == 200 })
        let after = invoicePaid(id: "evt_ro_after", email: "grace@acme-corp.io")
        #expect(try await hostile.post(running, body: after, headers: hostile.signed(after)).status == 200)
        let expected = Set(["evt_ro_1", "evt_ro_after"].map { MessageID.derive(source: "stripe", webhookID: $0, route: "payment-succeeded", output: .track) })
        #expect(await eventually(timeout: 30) { expected.isSubset(of: Set(running.koala.deliveredMessageIDs)) })
    }

    // MARK: Helpers

    /// The CSRF token of a session, read from the console's overview (its sign-out form).
    func csrfToken(_ running: HostileInputTests.Running, cookie: String) async throws -> String? {
        let page = try await hostile.get(running, "/console", headers: [("Cookie", cookie)])
        guard let range = page.body.range(of: #"name="csrf" value=""#) else { return nil }
        return String(page.body[range.upperBound...].prefix { $0 != "\"" })
    }

    /// Signs in to the console over HTTP as a browser would; the session cookie (`name=value`).
    func signIn(_ running: HostileInputTests.Running, token: String = HostileInputTests.adminToken) async -> String? {
        let port = running.port
        return (try? await offPool { Self.signIn(port: port, token: token) }) ?? nil
    }

    static func signIn(port: Int, token: String) -> String? {
        guard let connection = RawConnection(port: port) else { return nil }
        let form = "token=" + (token.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")
        connection.send("POST /console/sign-in HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nSec-Fetch-Site: same-origin\r\n"
            + "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: \(form.utf8.count)\r\n\r\n" + form)
        let text = connection.response(timeout: 5).text
        guard let line = text.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("set-cookie: koala_console=") }) else { return nil }
        return String(line.dropFirst("set-cookie: ".count).split(separator: ";")[0])
    }
}

extension JSONValue {
    /// The keys of an object; empty for other values.
    var objectKeys: [String] {
        if case .object(let object) = self { return Array(object.keys) }
        return []
    }
}

import Foundation
import GRDB
import HTTPTypes
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaStore
import KoalaTestSupport

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
        let cookie = try #require(signIn(running))
        let csrf = try #require(try await csrfToken(running, cookie: cookie))
        // Signed out: the cookie is refused.
        let signOut = try #require(RawConnection.exchange(port: running.port, method: "POST", path: "/console/sign-out",
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
        let page = try #require(RawConnection.exchange(port: again.port, path: "/console", headers: [("Cookie", cookie)]))
        #expect(page.status == 303, "a signed-out session opened the console after a restart")
        let retry = try #require(RawConnection.exchange(port: again.port, method: "POST", path: "/console/dead-letters/retry",
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
        let laptop = try #require(signIn(first)), phone = try #require(signIn(first))
        #expect(RawConnection.exchange(port: second.port, path: "/console", headers: [("Cookie", laptop)])?.status == 200)
        // One session signs out: the other replica refuses it too.
        let laptopCSRF = try #require(try await csrfToken(first, cookie: laptop))
        _ = RawConnection.exchange(port: second.port, method: "POST", path: "/console/sign-out",
            headers: [("Cookie", laptop), ("Sec-Fetch-Site", "same-origin"), ("Content-Type", "application/x-www-form-urlencoded")],
            body: Array("csrf=\(laptopCSRF)".utf8))
        #expect(RawConnection.exchange(port: first.port, path: "/console", headers: [("Cookie", laptop)])?.status == 303)
        #expect(RawConnection.exchange(port: first.port, path: "/console", headers: [("Cookie", phone)])?.status == 200)
        // Everywhere, from a third session on the second replica: every session ends, on both.
        let desk = try #require(signIn(first))
        let deskCSRF = try #require(try await csrfToken(first, cookie: desk))
        let everywhere = RawConnection.exchange(port: second.port, method: "POST", path: "/console/sign-out-everywhere",
            headers: [("Cookie", desk), ("Sec-Fetch-Site", "same-origin"), ("Content-Type", "application/x-www-form-urlencoded")],
            body: Array("csrf=\(deskCSRF)".utf8))
        #expect(everywhere?.status == 303)
        for cookie in [phone, desk] {
            for port in [first.port, second.port] {
                #expect(RawConnection.exchange(port: port, path: "/console", headers: [("Cookie", cookie)])?.status == 303)
            }
        }
        // A new sign-in works.
        let fresh = try #require(signIn(first))
        #expect(RawConnection.exchange(port: second.port, path: "/console", headers: [("Cookie", fresh)])?.status == 200)
    }

    // MARK: 5. Ids with reserved characters in the console

    /// Every Lemon Squeezy webhook (its id holds `:`) was a 404 from the console's own link; ids holding `/`
    /// could not be reached at all. (The browser walk opens the same ids from their links.)
    @Test func theConsoleOpensEveryStoredId() async throws {
        let running = try await hostile.start()
        defer { hostile.stop(running) }
        let cookie = try #require(signIn(running))
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
        let cookie = try #require(signIn(running))
        let page = try await hostile.get(running, "/console/webhooks/stripe/evt_headers", headers: [("Cookie", cookie)])
        #expect(page.status == 200 && page.body.contains("user-agent"))
        for value in values { #expect(!page.body.contains(value)) }
        try await hostile.checkAliveAndClean(running, secrets: values)
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

    // MARK: Helpers

    /// The CSRF token of a session, read from the console's overview (its sign-out form).
    func csrfToken(_ running: HostileInputTests.Running, cookie: String) async throws -> String? {
        let page = try await hostile.get(running, "/console", headers: [("Cookie", cookie)])
        guard let range = page.body.range(of: #"name="csrf" value=""#) else { return nil }
        return String(page.body[range.upperBound...].prefix { $0 != "\"" })
    }

    /// Signs in to the console over HTTP as a browser would; the session cookie (`name=value`).
    func signIn(_ running: HostileInputTests.Running, token: String = HostileInputTests.adminToken) -> String? {
        guard let connection = RawConnection(port: running.port) else { return nil }
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

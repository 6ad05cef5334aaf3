import Foundation
import GRDB
import HTTPTypes
import NIOCore
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The attacks of a hostile client and a buggy provider, against the real `koala-router` binary. Each test
/// checks the answer, that the process is still alive and answering, that nothing unverified or corrupted
/// was stored, and that no secret reached the log, the metrics or the database.
@Suite("Hostile input against the real binary", .serialized)
struct HostileInputTests {
    static let adminToken = "admin-token-0123456789abcdef"
    /// Tight deadlines so the connection tests take seconds.
    static let fastDeadlines = ["KOALA_ROUTER_IDLE_TIMEOUT_S": "2", "KOALA_ROUTER_HEADER_TIMEOUT_S": "1", "KOALA_ROUTER_BODY_TIMEOUT_S": "1"]

    final class Running: Sendable {
        let router: CrashTests.Router
        let koala: FakeKoala
        let log: String
        let database: String
        var port: Int { router.port }
        var pid: Int32 { router.process.processIdentifier }

        init(router: CrashTests.Router, koala: FakeKoala, log: String, database: String) {
            self.router = router
            self.koala = koala
            self.log = log
            self.database = database
        }

        var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
    }

    func start(_ extra: [String: String] = [:], database: String? = nil) async throws -> Running {
        let binary = try #require(CrashTests.binary, "build the koala-router executable first (swift build --build-tests)")
        let directory = temporaryDirectory()
        let database = database ?? directory + "/db.sqlite"
        let koala = try await FakeKoala.start()
        let log = directory + "/router.log"
        let environment = ["LOG_LEVEL": "info", "KOALA_ROUTER_ADMIN_TOKEN": Self.adminToken].merging(extra) { $1 }
        let router = try CrashTests.Router(binary: binary, database: database, koala: koala, extra: environment, log: log)
        #expect(await router.ready(), "the router did not become ready:\n\(String(decoding: FileManager.default.contents(atPath: log) ?? Data(), as: UTF8.self))")
        return Running(router: router, koala: koala, log: log, database: database)
    }

    /// The process answers, and no secret is in its log, its metrics or its database.
    func checkAliveAndClean(_ running: Running, secrets extra: [String] = []) async throws {
        #expect(running.router.process.isRunning, "the router died")
        #expect(try await get(running, "/healthz").status == 200)
        let metrics = try await get(running, "/metrics").body
        let secrets = [testSecret, Self.adminToken, running.koala.key] + extra
        for secret in secrets {
            #expect(!running.logText.contains(secret), "a secret is in the log")
            #expect(!metrics.contains(secret), "a secret is in the metrics")
        }
        for suffix in ["", "-wal"] {
            guard let bytes = FileManager.default.contents(atPath: running.database + suffix) else { continue }
            for secret in secrets { #expect(bytes.range(of: Data(secret.utf8)) == nil, "a secret is in the database") }
        }
    }

    func stop(_ running: Running) {
        running.router.kill9()
        running.koala.stop()
    }

    struct Answer { let status: Int; let body: String; var json: JSONValue? { try? JSONValue.parse(Array(body.utf8)) } }

    func get(_ running: Running, _ path: String, headers: [(String, String)] = []) async throws -> Answer {
        let port = running.port
        let answer = try #require(try await offPool { RawConnection.exchange(port: port, path: path, headers: headers) }, "no answer to GET \(path)")
        return Answer(status: answer.status, body: answer.body)
    }

    func post(_ running: Running, _ path: String = "/webhooks/stripe", body: [UInt8], headers: [(String, String)]) async throws -> Answer {
        let port = running.port
        let answer = try #require(try await offPool { RawConnection.exchange(port: port, method: "POST", path: path, headers: headers, body: body) },
                                  "no answer to POST \(path)")
        return Answer(status: answer.status, body: answer.body)
    }

    func signed(_ body: [UInt8], timestamp: Int64 = Int64(Date().timeIntervalSince1970), secret: String = testSecret) -> [(String, String)] {
        [("Stripe-Signature", StripeVerifier.sign(body: body, secret: secret, timestamp: timestamp)), ("Content-Type", "application/json")]
    }

    func storedWebhooks(_ running: Running) async throws -> Int {
        let queue = try DatabaseQueue(path: running.database, configuration: { var c = Configuration(); c.readonly = true; return c }())
        return try await queue.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM webhooks") ?? -1 }
    }

    /// A raw HTTP/1.1 request head.
    static func head(_ headers: [(String, String)], method: String = "POST", path: String = "/webhooks/stripe") -> String {
        "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers.map { "\($0.0): \($0.1)\r\n" }.joined() + "\r\n"
    }

    // MARK: Signatures

    @Test func signatureAttacksAreRefusedAndStoreNothing() async throws {
        let running = try await start()
        defer { stop(running) }
        let body = invoicePaid(id: "evt_sig", email: "ada@acme-corp.io")
        let now = Int64(Date().timeIntervalSince1970)
        let valid = StripeVerifier.sign(body: body, secret: testSecret, timestamp: now)
        let cases: [(String, [(String, String)], String)] = [
            ("absent", [], "missing header Stripe-Signature"),
            ("malformed", [("Stripe-Signature", "t=abc,v1=zz")], "malformed header Stripe-Signature"),
            ("wrong secret", signed(body, secret: "whsec_attacker"), "signature mismatch"),
            ("stale", signed(body, timestamp: now - 3600), "timestamp outside tolerance"),
            ("future", signed(body, timestamp: now + 3600), "timestamp outside tolerance"),
            ("duplicated, both forged", [("Stripe-Signature", "t=\(now),v1=" + String(repeating: "ab", count: 32)),
                                         ("Stripe-Signature", "t=\(now),v1=" + String(repeating: "cd", count: 32))], "signature mismatch"),
            ("valid signature of another body", [("Stripe-Signature", StripeVerifier.sign(body: Array("{}".utf8), secret: testSecret, timestamp: now))], "signature mismatch"),
            ("a thousand candidates", [("Stripe-Signature", "t=\(now)," + Array(repeating: "v1=" + String(repeating: "0", count: 64), count: 1000).joined(separator: ","))], "signature mismatch"),
        ]
        for (name, headers, error) in cases {
            let answer = try await post(running, body: body, headers: headers)
            #expect(answer.status == 401, "\(name): \(answer.status) \(answer.body)")
            #expect(answer.json?["error"]?.stringValue == error, "\(name): \(answer.body)")
        }
        // An oversized signature header: the HTTP parser refuses it and closes the connection. (Raw: an HTTP
        // client library may not expect an answer before it has sent its whole request.)
        let oversized = try #require(RawConnection(port: running.port))
        oversized.send(Self.head([("Stripe-Signature", "t=\(now),v1=" + String(repeating: "a", count: 100_000)), ("Content-Length", "\(body.count)")]))
        let oversizedAnswer = oversized.response(timeout: 3)
        #expect(RawConnection.status(oversizedAnswer.text).map { (400..<500).contains($0) } == true && oversizedAnswer.closed, "\(oversizedAnswer)")
        #expect(try await storedWebhooks(running) == 0)
        // The genuine one still goes through.
        let answer = try await post(running, body: body, headers: [("Stripe-Signature", valid)])
        #expect(answer.status == 200 && answer.json?["status"] == "accepted", "\(answer.body)")
        #expect(try await storedWebhooks(running) == 1)
        try await checkAliveAndClean(running)
    }

    // MARK: Bodies

    @Test func malformedBodiesGetAClearAnswer() async throws {
        let running = try await start()
        defer { stop(running) }
        let deep = Array(repeating: UInt8(ascii: "["), count: 100_000) + Array(repeating: UInt8(ascii: "]"), count: 100_000)
        let cases: [(String, [UInt8], String)] = [
            ("not JSON", Array("{nope".utf8), "body is not valid JSON"),
            ("deep", deep, "nesting deeper than 512"),
            ("raw NUL", Array(#"{"id":"evt_"#.utf8) + [0] + Array(#"","type":"invoice.paid"}"#.utf8), "control character in a string"),
            ("invalid UTF-8", Array(#"{"id":"evt_"#.utf8) + [0xC3, 0x28] + Array(#"","type":"invoice.paid"}"#.utf8), "invalid UTF-8"),
            ("escaped NUL in the id", Array(#"{"id":"evt_a\u0000x","type":"invoice.paid","created":1}"#.utf8), "contains the control character U+0000"),
            ("no id", Array(#"{"type":"invoice.paid"}"#.utf8), "webhook id not found at body.id"),
            ("number for a type", Array(#"{"id":"evt_n","type":{"a":1}}"#.utf8), "event type not found at body.type"),
            ("huge numbers", Array(#"{"id":"evt_big","type":"invoice.paid","created":1e999,"data":{"object":{"customer_email":"ada@acme-corp.io","amount_paid":1e999}}}"#.utf8), ""),
        ]
        for (name, body, error) in cases {
            let answer = try await post(running, body: body, headers: signed(body))
            if error.isEmpty {
                #expect(answer.status == 200, "\(name): \(answer.body)")
            } else {
                #expect(answer.status == 400, "\(name): \(answer.status) \(answer.body)")
                #expect(answer.json?["error"]?.stringValue?.contains(error) == true, "\(name): \(answer.body)")
            }
        }
        #expect(try await storedWebhooks(running) == 1)
        // A webhook of exactly the size limit is read; one byte more is refused without storing anything.
        let limit = 1 << 20
        let base = invoicePaid(id: "evt_at_limit", email: "ada@acme-corp.io")
        let atLimit = base + Array(repeating: UInt8(ascii: " "), count: limit - base.count)
        #expect(try await post(running, body: atLimit, headers: signed(atLimit)).status == 200)
        let over = atLimit + [UInt8(ascii: " ")]
        let refused = try await post(running, body: over, headers: signed(over))
        #expect(refused.status == 413)
        #expect(try await storedWebhooks(running) == 2)
        try await checkAliveAndClean(running)
    }

    // MARK: Framing and slow clients

    @Test func lyingFramingAndSlowClientsAreCutOff() async throws {
        raiseOpenFileLimit()
        let running = try await start(Self.fastDeadlines)
        defer { stop(running) }
        let body = invoicePaid(id: "evt_frame", email: "ada@acme-corp.io")
        let signature = signed(body)

        // A Content-Length that promises more than is sent: closed at the body deadline, nothing stored.
        let liar = try #require(RawConnection(port: running.port))
        liar.send(Self.head(signature + [("Content-Length", "5000")]) + String(repeating: "{", count: 10))
        let liarClosed = liar.secondsUntilClosed(timeout: 5)
        #expect(liarClosed != nil && liarClosed! < 3, "lying Content-Length: \(String(describing: liarClosed))")

        // Slowloris: a header byte every 300 ms never completes the head; closed at the header deadline.
        let slow = try #require(RawConnection(port: running.port))
        let start = Date()
        var open = true
        for byte in Self.head(signature + [("Content-Length", "\(body.count)")]).utf8 where open {
            open = slow.send([byte]) && slow.read(timeout: 0.3) == .timedOut
            if Date().timeIntervalSince(start) > 6 { break }
        }
        #expect(!open, "slowloris was never cut off")
        #expect(Date().timeIntervalSince(start) < 3.5)

        // A trickled body: one byte every 300 ms, closed at the body deadline.
        let trickle = try #require(RawConnection(port: running.port))
        trickle.send(Self.head(signature + [("Content-Length", "\(body.count)")]))
        let trickleStart = Date()
        var trickleOpen = true
        for byte in body where trickleOpen {
            trickleOpen = trickle.send([byte]) && trickle.read(timeout: 0.3) == .timedOut
            if Date().timeIntervalSince(trickleStart) > 6 { break }
        }
        #expect(!trickleOpen && Date().timeIntervalSince(trickleStart) < 3.5)

        // An idle connection, and an idle keep-alive connection after a request: closed at the idle deadline.
        let idle = try #require(RawConnection(port: running.port))
        let idleClosed = idle.secondsUntilClosed(timeout: 6)
        #expect(idleClosed != nil && idleClosed! > 1.5 && idleClosed! < 4, "idle: \(String(describing: idleClosed))")
        let keepAlive = try #require(RawConnection(port: running.port))
        keepAlive.send(Self.head([], method: "GET", path: "/healthz"))
        guard case .data(let first) = keepAlive.read(timeout: 3) else { Issue.record("no answer to /healthz"); return }
        #expect(RawConnection.status(String(decoding: first, as: UTF8.self)) == 200)
        let keepAliveClosed = keepAlive.secondsUntilClosed(timeout: 6)
        #expect(keepAliveClosed != nil && keepAliveClosed! < 4)

        // Chunked framing: well-formed is read; a malformed chunk size is a 400 and a closed connection.
        let chunked = try #require(RawConnection(port: running.port))
        let half = body.count / 2
        chunked.send(Self.head(signature + [("Transfer-Encoding", "chunked")]))
        chunked.send(String(half, radix: 16) + "\r\n")
        chunked.send(Array(body[..<half]) + Array("\r\n".utf8))
        chunked.send(String(body.count - half, radix: 16) + "\r\n")
        chunked.send(Array(body[half...]) + Array("\r\n0\r\n\r\n".utf8))
        let chunkedAnswer = chunked.response(timeout: 3).text
        #expect(RawConnection.status(chunkedAnswer) == 200, "\(chunkedAnswer)")
        let badChunk = try #require(RawConnection(port: running.port))
        badChunk.send(Self.head(signature + [("Transfer-Encoding", "chunked")]) + "zz\r\nhello\r\n0\r\n\r\n")
        let badAnswer = badChunk.response(timeout: 3)
        #expect(RawConnection.status(badAnswer.text) == 400 && badAnswer.closed, "\(badAnswer)")
        // Chunked past the size limit: 413 and closed, before the rest is read.
        let bigChunks = try #require(RawConnection(port: running.port))
        bigChunks.send(Self.head(signature + [("Transfer-Encoding", "chunked")]))
        var sentChunks = 0
        while sentChunks < 40, bigChunks.send("10000\r\n" + String(repeating: " ", count: 0x10000) + "\r\n") { sentChunks += 1 }
        let bigAnswer = bigChunks.response(timeout: 3)
        #expect(RawConnection.status(bigAnswer.text) == 413 && bigAnswer.closed, "\(bigAnswer.text.prefix(200))")
        // Both framings at once (request smuggling): refused by the HTTP parser.
        let both = try #require(RawConnection(port: running.port))
        both.send(Self.head(signature + [("Content-Length", "\(body.count)"), ("Transfer-Encoding", "chunked")]))
        both.send(body)
        let bothAnswer = both.response(timeout: 3)
        #expect(RawConnection.status(bothAnswer.text) == 400 && bothAnswer.closed, "\(bothAnswer.text.prefix(200))")
        // A Content-Length shorter than the body: the signature covers the whole body, so the prefix fails
        // verification, and the rest is no valid next request.
        let short = try #require(RawConnection(port: running.port))
        short.send(Self.head(signature + [("Content-Length", "\(body.count - 10)")]))
        short.send(body)
        let shortAnswer = short.response(timeout: 3)
        #expect(RawConnection.status(shortAnswer.text) == 401 && shortAnswer.text.contains("400 Bad Request") && shortAnswer.closed,
                "\(shortAnswer.text.prefix(300))")
        // A declared body far over the limit: 413 at once, nothing read.
        let declared = try #require(RawConnection(port: running.port))
        declared.send(Self.head(signature + [("Content-Length", "300000000")]))
        let declaredAnswer = declared.response(timeout: 3)
        #expect(RawConnection.status(declaredAnswer.text) == 413 && declaredAnswer.closed)

        #expect(try await storedWebhooks(running) == 1)
        // Each deadline is counted, for alerting on slow clients.
        let metrics = try await get(running, "/metrics").body
        for phase in ["idle", "headers", "body"] {
            let line = metrics.split(separator: "\n").first { $0.hasPrefix("koala_router_connections_timed_out_total{phase=\"\(phase)\"}") }
            #expect(line.flatMap { Double($0.split(separator: " ").last ?? "") }.map { $0 >= 1 } == true, "\(phase): \(String(describing: line))")
        }
        try await checkAliveAndClean(running)
    }

    @Test func healthzAnswersWhileAThousandSlowAndIdleConnectionsAreOpen() async throws {
        raiseOpenFileLimit()
        let running = try await start()  // the default deadlines: 60 s idle, 30 s headers
        defer { stop(running) }
        var held: [RawConnection] = []
        for i in 0..<1000 {
            guard let connection = RawConnection(port: running.port) else { break }
            if i.isMultiple(of: 2) { connection.send("POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nStripe-Sig") }  // slow headers
            held.append(connection)
        }
        #expect(held.count == 1000)
        // One client address holds at most KOALA_ROUTER_MAX_CONNECTIONS_PER_CLIENT (256) of them; the others were
        // closed as they opened. Another client is served at once.
        let start = Date()
        let health = try #require(await RawConnection.request(port: running.port, path: "/healthz", from: "127.0.0.2"))
        #expect(health.status == 200)
        #expect(Date().timeIntervalSince(start) < 2)
        let body = invoicePaid(id: "evt_among_idle", email: "ada@acme-corp.io")
        let accepted = await RawConnection.request(port: running.port, method: "POST", path: "/webhooks/stripe", headers: signed(body), body: body, from: "127.0.0.2")
        #expect(accepted?.status == 200)
        // A slow client sends a header byte every 2 s: still open long after, as its deadline is 30 s.
        #expect(held[0].send("n") && held[0].read(timeout: 2) == .timedOut)
        held.removeAll()
        try await checkAliveAndClean(running)
    }

    // MARK: Memory

    @Test func unauthenticatedAndOversizedBodiesCannotExhaustMemory() async throws {
        let running = try await start(["KOALA_ROUTER_MAX_BODY_BYTES_IN_FLIGHT": String(16 << 20)])
        defer { stop(running) }
        let warm = invoicePaid(id: "evt_warm", email: "ada@acme-corp.io")
        #expect(try await post(running, body: warm, headers: signed(warm)).status == 200)
        try await Task.sleep(nanoseconds: 300_000_000)
        let baseline = try #require(residentBytes(pid: running.pid))
        let size = (1 << 20) - 1
        let filler = String(repeating: "x", count: size)

        // 100 connections with no signature header, each offering 1 MB − 1: refused before the body is read.
        var unauthenticated: [RawConnection] = []
        for _ in 0..<100 {
            let connection = try #require(RawConnection(port: running.port))
            connection.send(Self.head([("Content-Length", "\(size)"), ("Content-Type", "application/json"), ("Connection", "close")]))
            unauthenticated.append(connection)
        }
        var statuses: [Int?] = []
        for connection in unauthenticated {
            connection.send(filler)
            statuses.append(RawConnection.status(connection.response(timeout: 5).text))
        }
        #expect(statuses.allSatisfy { $0 == 401 }, "\(Set(statuses.map { String(describing: $0) }))")

        // 100 with a forged signature header, sending the whole 1 MB − 1 at once: past the in-flight budget
        // the router answers 503 with Retry-After instead of holding more.
        var peak = baseline
        let forged = [("Stripe-Signature", "t=\(Int(Date().timeIntervalSince1970)),v1=" + String(repeating: "ab", count: 32)),
                      ("Content-Length", "\(size)"), ("Connection", "close")]
        var connections: [RawConnection] = []
        for _ in 0..<100 {
            let connection = try #require(RawConnection(port: running.port))
            connection.send(Self.head(forged))
            connections.append(connection)
        }
        let sender = Task.detached { for connection in connections { connection.send(filler) } }
        for _ in 0..<40 {
            peak = max(peak, residentBytes(pid: running.pid) ?? 0)
            try await Task.sleep(nanoseconds: 25_000_000)
        }
        await sender.value
        var forgedStatuses: [Int: Int] = [:]
        for connection in connections {
            let status = RawConnection.status(connection.response(timeout: 5).text) ?? 0
            forgedStatuses[status, default: 0] += 1
            peak = max(peak, residentBytes(pid: running.pid) ?? 0)
        }
        #expect(Set(forgedStatuses.keys).isSubset(of: [401, 503]), "\(forgedStatuses)")
        let growth = peak - baseline
        print("hostile memory: baseline \(baseline >> 20) MiB, peak \(peak >> 20) MiB under 100 × 1 MB − 1 unauthenticated and 100 × 1 MB − 1 forged bodies; answers \(forgedStatuses)")
        #expect(growth < 64 << 20, "RSS grew by \(growth >> 20) MiB")
        #expect(try await storedWebhooks(running) == 1)
        try await checkAliveAndClean(running)
    }

    // MARK: Paths and the admin API

    @Test func pathTricksAndAdminTokens() async throws {
        let running = try await start()
        defer { stop(running) }
        let body = invoicePaid(id: "evt_path", email: "ada@acme-corp.io")
        let signature = signed(body)
        for path in ["/webhooks/../admin/dead-letters", "/webhooks/%2e%2e/admin/dead-letters", "/webhooks/..%2fadmin%2fdead-letters",
                     "/webhooks/stripe%00", "/webhooks/STRIPE", "/webhooks/str%69pe/x", "/webhooks/%0Acritical", "/webhooks/" + String(repeating: "a", count: 5000),
                     "/admin/dead-letters/../../webhooks/stripe", "/webhooks/stripe/..", "/webhooks/stripe?source=admin"] {
            let connection = try #require(RawConnection(port: running.port))
            connection.send(Self.head(signature + [("Content-Length", "\(body.count)"), ("Connection", "close")], path: path))
            connection.send(body)
            let answer = connection.response(timeout: 3).text
            let status = RawConnection.status(answer)
            // Only the query string leaves the path the stripe source's; nothing else reaches a source or the admin API.
            let expected = path.hasSuffix("?source=admin") ? 200 : 404
            #expect(status == expected, "\(path.prefix(60)): \(answer.prefix(120))")
            #expect(!answer.contains("dead_letters"), "\(path) reached the admin API")
        }
        for path in ["/admin/dead-letters", "/admin/dead-letters/x", "/admin/../admin/dead-letters", "/admin/dead-letters/%2e%2e"] {
            for headers in [[], [("Authorization", "Bearer wrong-token-0123456789")], [("Authorization", "Bearer \(Self.adminToken)x")],
                            [("Authorization", Self.adminToken)], [("Authorization", "Basic \(Self.adminToken)")],
                            [("Authorization", "Bearer \(Self.adminToken.dropLast())")]] {
                let answer = try await get(running, path, headers: headers)
                #expect(answer.status == 401 || answer.status == 404 && path.contains(".."), "\(path) \(headers): \(answer.status)")
                #expect(!answer.body.contains("dead_letters"))
            }
        }
        #expect(try await get(running, "/admin/dead-letters", headers: [("Authorization", "Bearer \(Self.adminToken)")]).status == 200)
        #expect(try await storedWebhooks(running) == 1)
        try await checkAliveAndClean(running)
    }

    // MARK: Identities

    @Test func hostileEmailsNeverReachKoala() async throws {
        let running = try await start()
        defer { stop(running) }
        let emails = [#"victim\u0000@acme-corp.io"#, #"ad\u202ea@acme-corp.io"#, #"\"john doe\"@acme-corp.io"#, ".ada@acme-corp.io",
                      String(repeating: "x", count: 5000) + "@acme-corp.io", #"ada@acme\u202ecorp.io"#, #"\u212Aelvin@acme-corp.io"#]
        for (i, email) in emails.enumerated() {
            let body = Array(#"{"id":"evt_mail_\#(i)","object":"event","type":"checkout.session.completed","created":1732871520,"data":{"object":{"id":"cs_\#(i)","amount_total":900,"currency":"usd","customer":"cus_\#(i)","customer_details":{"email":"\#(email)","name":"X"}}}}"#.utf8)
            let answer = try await post(running, body: body, headers: signed(body))
            #expect(answer.status == 200, "\(email): \(answer.body)")
        }
        try await Task.sleep(nanoseconds: 500_000_000)
        // Only the Kelvin-sign address is a valid (and distinct) person; every other one is a dead letter.
        let people = Set(running.koala.received.compactMap(\.email))
        #expect(people == ["\u{212A}elvin@acme-corp.io"], "\(people)")
        #expect(!people.contains("kelvin@acme-corp.io"))
        let dead = try await get(running, "/admin/dead-letters?limit=100", headers: [("Authorization", "Bearer \(Self.adminToken)")])
        #expect(dead.json?["dead_letters"].flatMap { if case .array(let a) = $0 { a.count } else { nil } } == 12, "\(dead.body.prefix(300))")
        #expect(running.koala.violations.isEmpty)
        try await checkAliveAndClean(running)
    }

    // MARK: Logs

    @Test(arguments: ["text", "json"]) func payloadTextCannotForgeALogLine(format: String) async throws {
        let running = try await start(["LOG_FORMAT": format])
        defer { stop(running) }
        let forged = #"evt_1\n2026-11-29T00:00:00+0000 critical koala-router : FORGED\u202e"#
        let body = Array(#"{"id":"\#(forged)","object":"event","type":"invoice.paid","created":1732871520,"data":{"object":{}}}"#.utf8)
        #expect(try await post(running, body: body, headers: signed(body)).status == 400)
        let connection = try #require(RawConnection(port: running.port))
        connection.send(Self.head([("Content-Length", "0")], path: "/webhooks/x%0A2026-11-29T00:00:00+0000%20critical%20FORGED"))
        _ = connection.response(timeout: 2)
        let dry = Array(#"{"id":"evt_dry","object":"event","type":"invoice.paid","created":1732871520,"data":{"object":{"customer_email":"ada@acme-corp.io","amount_paid":1,"number":"INV\n2026 critical FORGED"}}}"#.utf8)
        #expect(try await post(running, body: dry, headers: signed(dry)).status == 200)
        try await Task.sleep(nanoseconds: 300_000_000)
        let lines = running.logText.split(separator: "\n", omittingEmptySubsequences: true)
        #expect(!lines.isEmpty)
        for line in lines {
            #expect(!line.hasPrefix("2026-11-29T00:00:00+0000 critical"), "forged line: \(line)")
            #expect(!line.contains("\u{202E}"))
            if format == "json" { #expect((try? JSONValue.parse(Array(line.utf8))) != nil, "not JSON: \(line)") }
        }
        try await checkAliveAndClean(running)
    }

    @Test(.enabled(if: Backend.postgresConfigured, "needs the PostgreSQL server scripts/test starts"))
    func thePostgreSQLPasswordIsNeverLogged() async throws {
        let base = try freshPostgresURL()
        // The test server trusts loopback, so any password works: the point is where it shows up.
        let password = "hunter2-never-printed"
        let url = base.replacingOccurrences(of: "postgres://koala@", with: "postgres://koala:\(password)@")
        let running = try await start([:], database: url)
        defer { stop(running) }
        #expect(running.logText.contains("listening"))
        #expect(running.logText.contains("koala:REDACTED@"))
        let body = invoicePaid(id: "evt_pg", email: "ada@acme-corp.io")
        #expect(try await post(running, body: body, headers: signed(body)).status == 200)
        #expect(!(try await get(running, "/readyz").body.contains(password)))
        try await checkAliveAndClean(running, secrets: [password])
    }

    // MARK: kill -9

    @Test func killNineDuringABurstLeavesAConsistentStore() async throws {
        let binary = try #require(CrashTests.binary)
        let database = temporaryDirectory() + "/db.sqlite"
        let running = try await start([:], database: database)
        running.koala.down(.status(503))
        let acknowledged = CrashTests.Acknowledged()
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask {
                    let body = invoicePaid(id: "evt_burst_\(i)", email: "p\(i % 9)@acme-corp.io")
                    if let answer = try? await post(running, body: body, headers: signed(body)), answer.status == 200 {
                        acknowledged.add("evt_burst_\(i)")
                    }
                }
            }
            group.addTask {
                try? await Task.sleep(nanoseconds: 150_000_000)
                running.router.kill9()
            }
        }
        let queue = try DatabaseQueue(path: database)
        #expect(try await queue.read { try String.fetchOne($0, sql: "PRAGMA integrity_check") } == "ok")
        let stored = Set(try await queue.read { try String.fetchAll($0, sql: "SELECT webhook_id FROM webhooks") })
        #expect(Set(acknowledged.ids).isSubset(of: stored), "an acknowledged webhook is missing")
        try queue.close()
        running.koala.up()
        let again = try CrashTests.Router(binary: binary, database: database, koala: running.koala)
        defer { again.kill9(); running.koala.stop() }
        #expect(await again.ready())
        let expected = Set(acknowledged.ids.map { MessageID.derive(source: "stripe", webhookID: $0, route: "payment-succeeded", output: .track) })
        #expect(await eventually(timeout: 30) { expected.isSubset(of: Set(running.koala.deliveredMessageIDs)) })
        print("kill -9 mid-burst: \(acknowledged.ids.count) of 200 acknowledged before the kill, all delivered after the restart")
    }
}

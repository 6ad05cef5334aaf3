import AsyncHTTPClient
import Foundation
import NIOCore
import Testing
@testable import KoalaCore
import KoalaTestSupport

/// The console in a real browser: headless Chromium (Debian's `chromium`, installed by scripts/test) walks through
/// the console of the real router binary, which delivers to a strict fake Koala. The walk itself is
/// scripts/browser/console-walkthrough; it saves a screenshot of each page to test-artifacts/console/.
@Suite("Console in a browser", .serialized)
struct ConsoleBrowserTests {
    static let token = "console-browser-test-token-0123456789"
    static let screenshots = repositoryRoot + "/test-artifacts/console"

    @Test func anOperatorFindsAWebhookAndRetriesADeadLetterInChromium() async throws {
        let chromium = ProcessInfo.processInfo.environment["CHROMIUM"] ?? "/usr/bin/chromium"
        try #require(FileManager.default.isExecutableFile(atPath: chromium),
                     "\(chromium) is missing: scripts/test installs it (scripts/setup chromium fonts-dejavu-core)")
        let binary = try #require(CrashTests.binary, "koala-router is not built: run swift build --build-tests first")
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let router = try CrashTests.Router(binary: binary, database: temporaryDirectory() + "/router.sqlite", koala: koala,
                                           extra: ["KOALA_ROUTER_ADMIN_TOKEN": Self.token])
        defer { router.kill9() }
        #expect(await router.ready(), "the router did not start")

        // Three stored webhooks: one to find by email, one whose payload is hostile, one Koala refuses (a dead letter).
        let hostileNumber = #""><img src=x onerror=alert(1)><script>alert(2)</script>"#
        let webhooks: [(id: String, body: [UInt8])] = [
            ("evt_browser_find", invoicePaid(id: "evt_browser_find", email: "grace@hopper.example")),
            ("evt_browser_xss", stripeEvent(id: "evt_browser_xss", type: "invoice.paid", object: [
                "id": "in_xss", "object": "invoice", "customer_email": "mallory@evil.example", "amount_paid": 4900,
                "currency": "usd", "customer": "cus_x", "number": .string(hostileNumber),
                "description": .string(String(repeating: "W", count: 1500)), "hosted_invoice_url": "javascript:alert(3)",
                "footer": #"<iframe src="http://foreign.invalid/"></iframe><img src="http://foreign.invalid/beacon.png">"#,
            ])),
            ("evt_browser_dead", invoicePaid(id: "evt_browser_dead", email: "ada@lovelace.example")),
        ]
        // Ids with reserved characters, each stored as its own webhook: the console must open every one (issue 25, 5).
        let odd = ["evt_colon:order_created:1001", "evt/slash/id", "evt%25percent%", "evt space id", "evt_ünïcödé_日本", ".."]
        let dead = MessageID.derive(source: "stripe", webhookID: "evt_browser_dead", route: "payment-succeeded", output: .track)
        koala.rejectRequests(holding: [dead], with: .status(422, body: #"{"error":"Invalid request","message":"events[0].properties: unknown"}"#))
        for (id, body) in webhooks {
            #expect(await post(body, port: router.port) == 200, "\(id) was not accepted")
        }
        for (index, id) in odd.enumerated() {
            #expect(await post(invoicePaid(id: id, email: "odd\(index)@hopper.example"), port: router.port) == 200, "\(id) was not accepted")
        }
        let delivered = await eventually(timeout: 20) { koala.deliveredMessageIDs.count == 2 + odd.count }
        let isDead = await eventually(timeout: 20) { await deadLetters(port: router.port) == 1 }
        try #require(delivered && isDead, "setup: two messages delivered (\(koala.deliveredMessageIDs.count)), one dead letter")
        koala.stopRejecting()

        let (status, output) = try await run(repositoryRoot + "/scripts/browser/console-walkthrough", environment: [
            "KOALA_ROUTER_CONSOLE_URL": "http://127.0.0.1:\(router.port)", "KOALA_ROUTER_ADMIN_TOKEN": Self.token,
            "WALK_EMAIL": "grace@hopper.example", "WALK_WEBHOOK": "evt_browser_find",
            "WALK_XSS_WEBHOOK": "evt_browser_xss", "WALK_XSS_TEXT": hostileNumber,
            "WALK_DEAD_MESSAGE": dead, "WALK_DEAD_WEBHOOK": "evt_browser_dead",
            "WALK_ODD_WEBHOOKS": JSONValue.array(odd.map { .string($0) }).encoded(),
            "WALK_SCREENSHOTS": Self.screenshots, "CHROMIUM": chromium,
        ])
        print(output)
        #expect(status == 0, "the walkthrough failed (screenshots in \(Self.screenshots)):\n\(output)")
        // What the browser saw, Koala got: the retried message, with the id it was refused under (a repeat, after a
        // timed-out request, is dropped by Koala by that id).
        #expect(koala.deliveredMessageIDs.contains(dead))
        #expect(koala.violations.isEmpty, "\(koala.violations)")
        let shots = (try? FileManager.default.contentsOfDirectory(atPath: Self.screenshots)) ?? []
        #expect(shots.filter { $0.hasSuffix(".png") }.count >= 12, "a screenshot of each page: \(shots.sorted())")
    }

    func post(_ body: [UInt8], port: Int) async -> Int? {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/webhooks/stripe")
        request.method = .POST
        for field in stripeHeaders(body) { request.headers.add(name: field.name.rawName, value: field.value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        return (try? await HTTPClient.shared.execute(request, timeout: .seconds(10))).map { Int($0.status.code) }
    }

    /// The dead letters the admin API lists.
    func deadLetters(port: Int) async -> Int? {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/admin/dead-letters")
        request.headers.add(name: "Authorization", value: "Bearer \(Self.token)")
        guard let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(5)),
              let body = try? await response.body.collect(upTo: 1 << 20),
              case .object(let top)? = try? JSONValue.parse(Array(buffer: body)), case .int(let count)? = top["count"] else { return nil }
        return Int(count)
    }

    /// Runs a program to its end; its exit status and what it printed (both streams, through a file). Waits
    /// without holding a thread: the test process's other tests (and the fake Koala) share a pool of two.
    func run(_ path: String, environment: [String: String]) async throws -> (Int32, String) {
        let outputPath = temporaryDirectory() + "/output.txt"
        FileManager.default.createFile(atPath: outputPath, contents: nil)
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = output
        let status = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int32, any Error>) in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do { try process.run() } catch { process.terminationHandler = nil; continuation.resume(throwing: error) }
        }
        try output.close()
        return (status, (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "")
    }
}

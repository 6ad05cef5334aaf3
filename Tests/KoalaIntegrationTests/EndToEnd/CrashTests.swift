import AsyncHTTPClient
import Foundation
import NIOCore
import Synchronization
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The real binary, killed with SIGKILL at random moments (also while requests to Koala are in flight),
/// restarted on the same database: every webhook that got a 2xx reaches Koala.
@Suite("Crash safety", .serialized)
struct CrashTests {
    /// `koala-router` next to the test bundle (`swift build --build-tests` builds both).
    static var binary: String? {
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        for _ in 0..<4 {
            url.deleteLastPathComponent()
            let candidate = url.appendingPathComponent("koala-router").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        let fallback = repositoryRoot + "/.build/debug/koala-router"
        return FileManager.default.isExecutableFile(atPath: fallback) ? fallback : nil
    }

    /// The ports the tests' routers listen on. Each call gives a port no other call in this test process
    /// gave, below the kernel's ephemeral range, and free right now. Picking with `bind(0)` and closing could
    /// hand two parallel tests the same port: the second router then failed to bind, exited, and the first
    /// router's `/readyz` answered for it, so its test waited for deliveries that never came.
    static let portCounter = Mutex(20_000 + Int(getpid() % 20) * 500)

    static func freePort() -> Int {
        while true {
            let port = portCounter.withLock { next -> Int in
                defer { next = next >= 29_999 ? 20_000 : next + 1 }
                return next
            }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            close(fd)
            if bound == 0 { return port }
        }
    }

    final class Router: @unchecked Sendable {
        let process = Process()
        let port: Int

        /// `log`: a file that receives the router's standard error (discarded otherwise).
        init(binary: String, database: String, koala: FakeKoala, extra: [String: String] = [:], log: String? = nil) throws {
            port = CrashTests.freePort()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = ["serve"]
            process.environment = [
                "STRIPE_WEBHOOK_SECRET": testSecret, "KOALA_ROUTER_DATABASE": database, "KOALA_ROUTER_PORT": String(port),
                "KOALA_ROUTER_HOST": "127.0.0.1", "KOALA_ROUTER_ROUTES": repositoryRoot + "/routes", "KOALA_API_URL": koala.baseURL,
                "KOALA_PUBLIC_API_KEY": koala.key, "KOALA_ROUTER_INITIAL_BACKOFF_S": "0.05", "KOALA_ROUTER_MAX_BACKOFF_S": "0.3",
                "KOALA_ROUTER_LINGER_MS": "10", "KOALA_ROUTER_REQUEST_TIMEOUT_S": "2", "LOG_LEVEL": "critical",
            ].merging(extra) { $1 }
            process.standardOutput = FileHandle.nullDevice
            if let log {
                FileManager.default.createFile(atPath: log, contents: nil)
                process.standardError = FileHandle(forWritingAtPath: log)
            } else {
                process.standardError = FileHandle.nullDevice
            }
            try process.run()
        }

        func ready() async -> Bool {
            // Generous: three replicas migrating one schema on a loaded two-core machine take a while.
            await eventually(timeout: 45) {
                guard self.process.isRunning else { return false }
                var request = HTTPClientRequest(url: "http://127.0.0.1:\(self.port)/readyz")
                request.method = .GET
                return (try? await HTTPClient.shared.execute(request, timeout: .seconds(1)).status.code) == 200
            } && process.isRunning
        }

        func kill9() {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// Posts one webhook; true only for a 200.
    static func post(_ id: String, port: Int) async -> Bool {
        await status(id, port: port) == 200
    }

    /// Posts one webhook; its status code, or nil when no answer came.
    static func status(_ id: String, port: Int, client: HTTPClient = .shared) async -> Int? {
        let body = invoicePaid(id: id, email: "person\(id.hashValue & 7)@acme.io")
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/webhooks/stripe")
        request.method = .POST
        for field in stripeHeaders(body) { request.headers.add(name: field.name.rawName, value: field.value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        guard let response = try? await client.execute(request, timeout: .seconds(8)) else { return nil }
        return Int(response.status.code)
    }

    @Test func killedMidBatchLosesNothing() async throws {
        let binary = try #require(Self.binary, "build the koala-router executable first (swift build --build-tests)")
        let database = temporaryDirectory() + "/db.sqlite"
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let acknowledged = Acknowledged()
        var sent = 0
        let rounds = 5
        var rng = SystemRandomNumberGenerator()
        for round in 0..<rounds {
            // Alternate an outage with a slow Koala, so kills land both while messages wait and mid-request.
            if round % 2 == 0 { koala.down(.status(503)) } else { koala.up(); koala.script(Array(repeating: .delay(seconds: 0.2), count: 50)) }
            let router = try Router(binary: binary, database: database, koala: koala)
            #expect(await router.ready(), "round \(round): the router did not become ready")
            let killAfter = Double.random(in: 0.2...0.8, using: &rng)
            await withTaskGroup(of: Void.self) { group in
                for i in 0..<60 {
                    let id = "evt_crash_\(round)_\(i)"
                    sent += 1
                    group.addTask {
                        try? await Task.sleep(nanoseconds: UInt64(i) * 15_000_000)
                        if await Self.post(id, port: router.port) { acknowledged.add(id) }
                    }
                }
                group.addTask {
                    try? await Task.sleep(nanoseconds: UInt64(killAfter * 1e9))
                    router.kill9()
                }
            }
        }
        // Koala recovers; one last start drains everything acknowledged.
        koala.up()
        koala.script([])
        let router = try Router(binary: binary, database: database, koala: koala)
        #expect(await router.ready())
        let expected = Set(acknowledged.ids.map { MessageID.derive(source: "stripe", webhookID: $0, route: "payment-succeeded", output: .track) })
        let drained = await eventually(timeout: 60) { expected.isSubset(of: Set(koala.deliveredMessageIDs)) }
        router.kill9()

        let delivered = koala.deliveredMessageIDs
        let lost = expected.subtracting(delivered)
        let repeats = delivered.count - Set(delivered).count
        print("crash test: \(rounds) kill -9 rounds, \(sent) webhooks sent, \(expected.count) acknowledged, \(Set(delivered).intersection(expected).count) delivered, \(lost.count) lost, \(repeats) repeated deliveries (absorbed by message_id)")
        #expect(drained)
        #expect(lost.isEmpty)
        #expect(expected.count > 50)
        #expect(koala.violations.isEmpty)
    }

    /// Issue 15: with Koala and a Segment-compatible destination, kill -9 while Segment is down: nothing
    /// acknowledged is lost at either, and each gets every message once it is back.
    @Test func killedWithTwoDestinationsLosesNothingAtEither() async throws {
        let binary = try #require(Self.binary, "build the koala-router executable first (swift build --build-tests)")
        let database = temporaryDirectory() + "/db.sqlite"
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let segment = try await FakeSegment.start()
        defer { segment.stop() }
        let extra = ["SEGMENT_WRITE_KEY": segment.writeKey, "SEGMENT_URL": segment.baseURL]
        let acknowledged = Acknowledged()
        for round in 0..<3 {
            // Segment is down in the rounds; Koala slow in one of them.
            segment.script(Array(repeating: (status: 503, body: ""), count: 1000))
            if round == 1 { koala.script(Array(repeating: .delay(seconds: 0.2), count: 30)) }
            let router = try Router(binary: binary, database: database, koala: koala, extra: extra)
            #expect(await router.ready(), "round \(round): the router did not become ready")
            await withTaskGroup(of: Void.self) { group in
                for i in 0..<40 {
                    let id = "evt_two_\(round)_\(i)"
                    group.addTask {
                        try? await Task.sleep(nanoseconds: UInt64(i) * 15_000_000)
                        if await Self.post(id, port: router.port) { acknowledged.add(id) }
                    }
                }
                group.addTask {
                    try? await Task.sleep(nanoseconds: 400_000_000)
                    router.kill9()
                }
            }
        }
        segment.script([])
        koala.script([])
        let router = try Router(binary: binary, database: database, koala: koala, extra: extra)
        #expect(await router.ready())
        let expected = Set(acknowledged.ids.map { MessageID.derive(source: "stripe", webhookID: $0, route: "payment-succeeded", output: .track) })
        let drained = await eventually(timeout: 60) {
            expected.isSubset(of: Set(koala.deliveredMessageIDs)) && expected.isSubset(of: Set(segment.calls.compactMap { $0["messageId"]?.stringValue }))
        }
        router.kill9()
        let atSegment = Set(segment.calls.compactMap { $0["messageId"]?.stringValue })
        print("crash test, two destinations: \(expected.count) acknowledged; lost at Koala \(expected.subtracting(koala.deliveredMessageIDs).count), at Segment \(expected.subtracting(atSegment).count)")
        #expect(drained)
        #expect(expected.count > 30)
        #expect(koala.violations.isEmpty)
        #expect(segment.violations.isEmpty)
    }

    @Test func sigtermDrainsAndExitsCleanly() async throws {
        let binary = try #require(Self.binary)
        let database = temporaryDirectory() + "/db.sqlite"
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        koala.script(Array(repeating: .delay(seconds: 0.3), count: 5))
        let router = try Router(binary: binary, database: database, koala: koala)
        #expect(await router.ready())
        for i in 0..<5 { #expect(await Self.post("evt_term_\(i)", port: router.port)) }
        try await Task.sleep(nanoseconds: 150_000_000)  // requests to Koala are in flight
        let start = Date()
        kill(router.process.processIdentifier, SIGTERM)
        router.process.waitUntilExit()
        #expect(router.process.terminationReason == .exit)
        #expect(router.process.terminationStatus == 0)
        #expect(Date().timeIntervalSince(start) < 25)  // within the default grace period
        // Whatever Koala had not confirmed goes out after the next start.
        let again = try Router(binary: binary, database: database, koala: koala)
        #expect(await again.ready())
        let expected = Set((0..<5).map { MessageID.derive(source: "stripe", webhookID: "evt_term_\($0)", route: "payment-succeeded", output: .track) })
        #expect(await eventually(timeout: 20) { expected.isSubset(of: Set(koala.deliveredMessageIDs)) })
        again.kill9()
    }

    final class Acknowledged: @unchecked Sendable {
        private let lock = NSLock()
        private var set: [String] = []
        func add(_ id: String) { lock.lock(); set.append(id); lock.unlock() }
        var ids: [String] { lock.lock(); defer { lock.unlock() }; return set }
    }
}

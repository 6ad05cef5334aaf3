import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

/// Issue 16, part 6: without a project key the service logs each request instead of sending it, and the
/// messages are recorded as handled in dry run — never as delivered — so a later replay (with a key) sends them.
@Suite("Honest dry run")
struct DryRunTests {
    @Test(arguments: Backend.configured) func dryRunMessagesAreNeverDeliveredAndAReplaySendsThemOnceAKeyIsSet(_ backend: Backend) async throws {
        let database = backend == .sqlite ? temporaryDirectory() + "/db.sqlite" : try freshPostgresURL()
        let body = invoicePaid(id: "evt_dry_1", email: "ada@analytical-engines.io", amount: 4900)

        // No key: a dry run.
        let (dry, dryComponents) = try await buildApplication(testConfiguration(database: database, koala: nil), logger: quietLogger)
        try await dry.test(.live) { client in
            let response = try await client.executeRequest(uri: "/webhooks/stripe", method: .post, headers: stripeHeaders(body), body: ByteBuffer(bytes: body))
            #expect(response.status == .ok)
            #expect(await eventually { (try? await dryComponents.store.counts().dryRun) == 1 })
            let counts = try await dryComponents.store.counts()
            #expect(counts.delivered == 0 && counts.pending == 0 && counts.dead == 0)
            let stored = try await dryComponents.store.storedMessages(source: "stripe", webhookID: "evt_dry_1", destination: .koala)
            #expect(stored.values.map(\.state) == [.dryRun])
            let metrics = String(buffer: try await client.executeRequest(uri: "/metrics", method: .get, headers: [:], body: nil).body)
            let line = metrics.split(separator: "\n").first { $0.hasPrefix("koala_router_messages_total") && $0.contains(#"outcome="dry_run""#) && $0.contains(#"endpoint="person""#) }
            #expect(line?.hasSuffix(" 1") == true, "\(metrics.split(separator: "\n").filter { $0.hasPrefix("koala_router_messages_total") })")
            #expect(!metrics.contains(#"outcome="delivered""#))
        }

        // `simulate --stored` says where the message is: handled in dry run, not delivered.
        let (_, simulated) = try runProgram(try #require(CrashTests.binary),
                                            ["simulate", "stripe", "--stored", "evt_dry_1", "--database", database, "--routes", repositoryRoot + "/routes"],
                                            environment: ["LOG_LEVEL": "critical"])
        #expect(simulated.contains("[queued; stored: koala dry_run]"), "\(simulated)")

        // Issue 28: with rules that now say something else, `simulate --stored` marks the difference.
        let changed = temporaryDirectory() + "/routes"
        try FileManager.default.copyItem(atPath: repositoryRoot + "/routes", toPath: changed)
        let stripeRules = try String(contentsOfFile: changed + "/stripe.yaml", encoding: .utf8)
        try stripeRules.replacingOccurrences(of: "      event: Payment Succeeded\n", with: "      event: Invoice Paid\n")
            .write(toFile: changed + "/stripe.yaml", atomically: true, encoding: .utf8)
        let (_, differs) = try runProgram(try #require(CrashTests.binary),
                                          ["simulate", "stripe", "--stored", "evt_dry_1", "--database", database, "--routes", changed],
                                          environment: ["LOG_LEVEL": "critical"])
        #expect(differs.contains("; DIFFERS from the stored content (replay queues today's, unless it was delivered)]"), "\(differs)")
        #expect(differs.contains(#""event":"Payment Succeeded""#) && differs.contains(#""event":"Invoice Paid""#), "\(differs)")

        // Issue 28: `dead-letters list` says how to queue them, and the command it prints runs as printed.
        let binary = try #require(CrashTests.binary)
        let (_, listed) = try runProgram(binary, ["dead-letters", "list", "--database", database], environment: ["LOG_LEVEL": "critical"])
        let hint = try #require(listed.split(separator: "'").first { $0.hasPrefix("koala-router replay") }.map(String.init), "\(listed)")
        #expect(hint == "koala-router replay --source SOURCE --since 7d", "\(listed)")
        let hinted = hint.replacingOccurrences(of: "SOURCE", with: "stripe").split(separator: " ").dropFirst().map(String.init)
        let (status, replayed) = try runProgram(binary, hinted + ["--dry-run", "--database", database, "--routes", repositoryRoot + "/routes"],
                                                environment: ["LOG_LEVEL": "critical", "STRIPE_WEBHOOK_SECRET": testSecret])
        #expect(status == 0, "\(replayed)")

        // A replay, as an operator runs it once the key is set, reports them as never sent and queues them.
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let (live, components) = try await buildApplication(testConfiguration(database: database, koala: koala), logger: quietLogger)
        try await live.test(.live) { _ in
            let window = Replay.Options(source: "stripe", since: Date().addingTimeInterval(-3600), until: Date().addingTimeInterval(5), dryRun: true)
            let preview = try await Replay(store: components.store, table: components.rules.table).run(window)
            #expect(preview.neverSent == 1 && preview.queued == 0 && preview.changes.isEmpty)
            #expect(koala.received.isEmpty)  // nothing is sent on its own when a key is set
            var real = window
            real.dryRun = false
            let report = try await Replay(store: components.store, table: components.rules.table).run(real)
            #expect(report.neverSent == 1 && report.queued == 1)
            #expect(await eventually { koala.received.count == 1 })
            #expect(await eventually { (try? await components.store.counts().delivered) == 1 })
        }
        let id = MessageID.derive(source: "stripe", webhookID: "evt_dry_1", route: "payment-succeeded", output: .track)
        #expect(koala.deliveredMessageIDs == [id])
        #expect(koala.violations.isEmpty)
    }
}

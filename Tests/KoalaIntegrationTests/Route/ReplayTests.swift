import Foundation
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

@Suite("Replay")
struct ReplayTests {
    static func rules(event: String, emailPath: String, extra: Bool) -> String {
        var text = """
            source: shop
            verify: { scheme: stripe, secrets: [S] }
            routes:
              - name: paid
                when: { type: invoice.paid }
                person: { email: \(emailPath) }
                track: { event: \(event) }

            """
        if extra {
            text += """
                  - name: extra
                    when: { type: invoice.paid }
                    person: { email: \(emailPath) }
                    identify: { traits: { paying: true } }

                """
        }
        return text
    }

    func table(_ text: String) throws -> RuleTable {
        try RuleLoader(environment: ["S": testSecret]).load(files: [("shop.yaml", text)])
    }

    /// Issue 15: replay works on one destination's entries: a Segment dead letter that routes again is
    /// queued for Segment, and Koala's delivered entry is left alone.
    @Test(arguments: Backend.configured) func replayTakesOneDestinationsEntries(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let rules = try table(Self.rules(event: "Paid", emailPath: "body.data.object.customer_email", extra: false))
            let ingest = Ingest(rules: RulesHolder(rules), store: store, linger: 0, destinations: [.koala, .segment], logger: quietLogger)
            let body = invoicePaid(id: "evt_d1", email: "p@acme.io")
            _ = await ingest.handle(source: "shop", headers: stripeHeaders(body), body: body)
            let now = Date().addingTimeInterval(1)
            let koala = try await store.claimDue(now: now, limit: 10, lease: 60, destination: .koala)
            let segment = try await store.claimDue(now: now, limit: 10, lease: 60, destination: .segment)
            try await store.record([.delivered(koala.map(\.seq), at: now), .dead(segment.map(\.seq), reason: "segment rejected (400)", detail: nil, at: now)])
            let window = Replay.Options(source: "shop", since: Date().addingTimeInterval(-3600), until: Date().addingTimeInterval(5), dryRun: false,
                                        destination: .segment)
            let report = try await Replay(store: store, table: rules).run(window)
            #expect(report.unchanged == 1)
            #expect(report.queued == 1)
            let again = try await store.claimDue(now: Date().addingTimeInterval(2), limit: 10, lease: 60, destination: .segment)
            #expect(again.map(\.messageID) == segment.map(\.messageID))
            var koalaWindow = window
            koalaWindow.destination = .koala
            let koalaReport = try await Replay(store: store, table: rules).run(koalaWindow)
            #expect(koalaReport.unchanged == 1 && koalaReport.queued == 0)
        }
    }

    @Test(arguments: Backend.configured) func dryRunReportsAndARealRunQueuesInTheReplayLane(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let v1 = try table(Self.rules(event: "Paid", emailPath: "body.data.object.customer_email", extra: false))
            let ingest = Ingest(rules: RulesHolder(v1), store: store, linger: 0, logger: quietLogger)
            for i in 0..<3 {
                let body = invoicePaid(id: "evt_r\(i)", email: "p\(i)@acme.io")
                _ = await ingest.handle(source: "shop", headers: stripeHeaders(body), body: body)
            }
            // One delivered, two still pending.
            let due = try await store.claimDue(now: Date().addingTimeInterval(1), limit: 10, lease: 600)
            try await store.markDelivered([due[0].seq], at: Date())

            let v2 = try table(Self.rules(event: "Invoice Paid", emailPath: "body.data.object.customer_email", extra: true))
            let since = Date().addingTimeInterval(-3600)
            let dry = try await Replay(store: store, table: v2).run(.init(source: "shop", since: since, until: Date().addingTimeInterval(1), dryRun: true))
            #expect(dry.webhooks == 3)
            #expect(dry.count[.new] == 3)
            #expect(dry.count[.changed] == 3)
            #expect(dry.changes.filter { $0.kind == .changed && $0.note != nil }.count == 1)  // the delivered one
            #expect(dry.queued == 0)
            #expect(try await store.counts().pending == 2)

            let real = try await Replay(store: store, table: v2).run(.init(source: "shop", since: since, until: Date().addingTimeInterval(1), dryRun: false))
            #expect(real.queued == 5)  // 3 new + 2 changed that were not delivered yet
            let replayed = try await store.storedMessages(source: "shop", webhookID: "evt_r1")
            #expect(replayed.values.contains { $0.route == "extra" && $0.state == .pending })
            #expect(replayed.values.first { $0.route == "paid" }?.itemJSON.contains("Invoice Paid") == true)

            // Run again: nothing is new any more, and unchanged outputs stay as they are.
            let again = try await Replay(store: store, table: v2).run(.init(source: "shop", since: since, until: Date().addingTimeInterval(1), dryRun: true))
            #expect(again.count[.new] == nil)
            #expect(again.unchanged == 5)
        }
    }

    @Test(arguments: Backend.configured) func aFixedRuleRevivesItsDeadLetters(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let broken = try table(Self.rules(event: "Paid", emailPath: "body.data.object.email_typo", extra: false))
            let ingest = Ingest(rules: RulesHolder(broken), store: store, linger: 0, logger: quietLogger)
            let body = invoicePaid(id: "evt_fix", email: "fix@acme.io")
            _ = await ingest.handle(source: "shop", headers: stripeHeaders(body), body: body)
            #expect(try await store.counts().dead == 1)
            let fixed = try table(Self.rules(event: "Paid", emailPath: "body.data.object.customer_email", extra: false))
            let report = try await Replay(store: store, table: fixed).run(.init(source: "shop", since: Date().addingTimeInterval(-60), until: Date().addingTimeInterval(1), dryRun: false))
            #expect(report.queued == 1)
            let due = try await store.claimDue(now: Date().addingTimeInterval(1), limit: 10, lease: 60)
            #expect(due.map(\.identity) == [KoalaIdentity(email: "fix@acme.io")])
        }
    }

    @Test(arguments: Backend.configured) func theReplayLaneGetsACappedShareOfEachRound(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            var replayed: [KoalaMessage] = []
            for i in 0..<300 {
                let id = "old_\(i)"
                replayed.append(KoalaMessage(messageID: id, source: "s", webhookID: id, route: "r", output: .track, endpoint: .person,
                                             kind: .track, identity: KoalaIdentity(email: "old\(i)@acme.io"), item: ["message_id": .string(id)],
                                             eventTime: Date()))
            }
            _ = try await store.enqueueReplay(replayed, at: Date())
            let body = Array(#"{"id":"live"}"#.utf8)
            let live = VerifiedWebhook(source: "s", webhookID: "live", eventType: "t", eventTime: Date(), receivedAt: Date(), headers: [:],
                                       body: body, json: try JSONTape.parse(body), secretLabel: "S", rulesVersion: "v")
            _ = try await store.accept(live, messages: [KoalaMessage(messageID: "live", source: "s", webhookID: "live", route: "r", output: .track,
                                                                      endpoint: .person, kind: .track, identity: KoalaIdentity(email: "new@acme.io"),
                                                                      item: ["message_id": "live"], eventTime: Date())],
                                       remembers: [], linger: 0, identityWait: 0)
            let round = try await store.claimDue(now: Date().addingTimeInterval(1), limit: 1000, lease: 60)
            #expect(round.first?.messageID == "live")                      // live first, although it came last
            #expect(round.count == 1 + SQLiteStore.replayPerRound)           // and the replay share is capped
        }
    }
}

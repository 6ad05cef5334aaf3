import Foundation
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

@Suite("Retention and forget")
struct RetentionTests {
    func accept(_ store: any WebhookStore, _ id: String, email: String, at: Date, remember: Bool = false) async throws -> Int64? {
        let body = Array(#"{"id":"\#(id)","data":{"object":{"customer_email":"\#(email)"}}}"#.utf8)
        let webhook = VerifiedWebhook(source: "stripe", webhookID: id, eventType: "t", eventTime: at, receivedAt: at, headers: [:],
                                      body: body, json: try JSONTape.parse(body), secretLabel: "S", rulesVersion: "v")
        let mid = MessageID.derive(source: "stripe", webhookID: id, route: "r", output: .track)
        let message = KoalaMessage(messageID: mid, source: "stripe", webhookID: id, route: "r", output: .track, endpoint: .person,
                                   kind: .track, identity: KoalaIdentity(email: email), item: ["message_id": .string(mid), "type": "track"],
                                   eventTime: at)
        let remembers = remember ? [Remembered(key: MemoryKey(namespace: "c", key: id), identity: KoalaIdentity(email: email))] : []
        _ = try await store.accept(webhook, messages: [message], remembers: remembers, linger: 0, identityWait: 0)
        return try await store.claimDue(now: Date().addingTimeInterval(1), limit: 100, lease: 60).first { $0.messageID == mid }?.seq
    }

    @Test(arguments: Backend.configured) func oldDeliveredDataIsPrunedButPendingAndDeadStay(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let old = Date().addingTimeInterval(-10 * 86400)
            let delivered = try await accept(store, "w_delivered", email: "a@acme.io", at: old)
            try await store.markDelivered([delivered!], at: old)
            let dryRun = try await accept(store, "w_dry_run", email: "e@acme.io", at: old)
            try await store.record([.dryRun([dryRun!], at: old)])
            let dead = try await accept(store, "w_dead", email: "b@acme.io", at: old)
            try await store.deadLetter([dead!], reason: "koala rejected (400)", detail: nil, at: old)
            let pending = try await accept(store, "w_pending", email: "c@acme.io", at: old)
            try await store.scheduleRetry([pending!], at: Date().addingTimeInterval(60), error: "503")
            _ = try await accept(store, "w_recent", email: "d@acme.io", at: Date())

            let retention = Retention(store: store, keep: 7 * 86400, logger: quietLogger)
            await retention.runOnce()
            let counts = try await store.counts()
            #expect(counts.delivered == 0)                 // the old delivered message is gone
            #expect(counts.dryRun == 0)                    // and so is the one handled in dry run
            #expect(counts.dead == 1)                      // dead letters stay until handled
            #expect(counts.webhooks == 2)                  // pending's webhook and the recent one stay
            #expect(try await store.storedWebhook(source: "stripe", webhookID: "w_pending") != nil)
            #expect(try await store.storedWebhook(source: "stripe", webhookID: "w_delivered") == nil)
            #expect(try await store.storedWebhook(source: "stripe", webhookID: "w_dry_run") == nil)
        }
    }

    @Test(arguments: Backend.configured) func forgetRemovesEverythingAboutAPerson(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            _ = try await accept(store, "w1", email: "ada@acme.io", at: Date(), remember: true)
            _ = try await accept(store, "w2", email: "grace@acme.io", at: Date(), remember: true)
            let report = try await store.forget(email: " Ada@Acme.io ")
            #expect(report == PruneReport(webhooks: 1, messages: 1, identities: 1))
            #expect(try await store.storedWebhook(source: "stripe", webhookID: "w1") == nil)
            #expect(try await store.storedWebhook(source: "stripe", webhookID: "w2") != nil)
            #expect(try await store.recall(source: "stripe", keys: [MemoryKey(namespace: "c", key: "w1")]).isEmpty)
            #expect(try await store.recall(source: "stripe", keys: [MemoryKey(namespace: "c", key: "w2")]).count == 1)
        }
    }

    /// State memory is forgotten with its entry's identity, and with any remembered value holding the address.
    @Test(arguments: Backend.configured) func forgetRemovesRememberedStates(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let body = Array(#"{"id":"s"}"#.utf8)
            let w = VerifiedWebhook(source: "paddle", webhookID: "s", eventType: "t", eventTime: Date(), receivedAt: Date(), headers: [:],
                                    body: body, json: try JSONTape.parse(body), secretLabel: "S", rulesVersion: "v")
            let keys = ["by_identity", "by_value", "other"].map { MemoryKey(namespace: "sub", key: $0) }
            _ = try await store.accept(w, messages: [], remembers: [
                Remembered(key: keys[0], identity: KoalaIdentity(email: "ada@acme.io"), state: ["mrr": 10], stateAt: Date()),
                Remembered(key: keys[1], identity: KoalaIdentity(), state: ["billing_email": "ada@acme.io"], stateAt: Date()),
                Remembered(key: keys[2], identity: KoalaIdentity(), state: ["billing_email": "grace@acme.io", "note": "ada@acme.io.example"], stateAt: Date()),
            ], linger: 0, identityWait: 0)
            let report = try await store.forget(email: "Ada@acme.io")
            #expect(report.identities == 2)
            #expect(Set(try await store.recall(source: "paddle", keys: keys).keys) == [keys[2]])
        }
    }
}

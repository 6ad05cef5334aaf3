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

@Suite("Dead letters")
struct DeadLetterTests {
    /// A store with three dead letters: two Koala rejections (different routes) and one without identity.
    func seed(_ store: any WebhookStore) async throws -> [String] {
        var ids: [String] = []
        for (n, (route, email, problem)) in [("paid", "a@acme.io", nil), ("refund", "b@acme.io", nil), ("paid", nil, "identity missing: no email")].enumerated() {
            let body = Array(#"{"id":"w\#(n)"}"#.utf8)
            let webhook = VerifiedWebhook(source: "stripe", webhookID: "w\(n)", eventType: "t", eventTime: Date(), receivedAt: Date(),
                                          headers: [:], body: body, json: try JSONTape.parse(body), secretLabel: "S", rulesVersion: "v")
            let id = MessageID.derive(source: "stripe", webhookID: "w\(n)", route: route, output: .track)
            ids.append(id)
            let message = KoalaMessage(messageID: id, source: "stripe", webhookID: "w\(n)", route: route, output: .track, endpoint: .person,
                                       kind: .track, identity: KoalaIdentity(email: email), item: ["message_id": .string(id), "type": "track"],
                                       eventTime: Date(), disposition: problem.map { .dead(reason: $0) } ?? .send)
            _ = try await store.accept(webhook, messages: [message], remembers: [], linger: 0, identityWait: 0)
        }
        let due = try await store.claimDue(now: Date().addingTimeInterval(1), limit: 10, lease: 60)
        try await store.deadLetter(due.map(\.seq), reason: "koala rejected (400)", detail: #"{"error":"bad"}"#, at: Date())
        return ids
    }

    @Test(arguments: Backend.configured) func filterRetryAndDrop(_ backend: Backend) async throws {
        let store = try await makeStore(backend)
        try await store.whileRunning {
            let ids = try await seed(store)
            #expect(try await store.deadLetters(matching: DeadLetterFilter(), limit: 10).count == 3)
            #expect(try await store.deadLetters(matching: DeadLetterFilter(route: "paid"), limit: 10).count == 2)
            #expect(try await store.deadLetters(matching: DeadLetterFilter(reason: "koala rejected"), limit: 10).map(\.messageID).sorted() == [ids[0], ids[1]].sorted())
            #expect(try await store.deadLetters(matching: DeadLetterFilter(since: Date().addingTimeInterval(60)), limit: 10).isEmpty)
            #expect(try await store.deadLetters(matching: DeadLetterFilter(messageIDs: [ids[1]]), limit: 10).first?.detail == #"{"error":"bad"}"#)

            // Retry keeps the message id; a message without identity stays (replay its webhook instead).
            #expect(try await store.retryDeadLetters(matching: DeadLetterFilter(route: "paid"), at: Date()) == 1)
            let due = try await store.claimDue(now: Date().addingTimeInterval(1), limit: 10, lease: 60)
            #expect(due.map(\.messageID) == [ids[0]])
            #expect(due.first?.attempts == 0)

            #expect(try await store.dropDeadLetters(matching: DeadLetterFilter(reason: "identity missing")) == 1)
            #expect(try await store.deadLetters(matching: DeadLetterFilter(), limit: 10).map(\.messageID) == [ids[1]])
        }
    }

    @Test func timeArguments() {
        let now = Date(timeIntervalSince1970: 1_000_000)
        #expect(parseTimeArgument("2h", now: now) == now.addingTimeInterval(-7200))
        #expect(parseTimeArgument("7d", now: now) == now.addingTimeInterval(-7 * 86400))
        #expect(parseTimeArgument("2024-11-29T09:00:00Z") == Timestamps.parseISO("2024-11-29T09:00:00Z"))
        #expect(parseTimeArgument("yesterday") == nil)
    }

    @Test func adminAPIIsOffWithoutATokenAndGuardedWithOne() async throws {
        var plain = testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: nil)
        plain.adminToken = nil
        let (off, _) = try await buildApplication(plain, logger: quietLogger)
        try await off.test(.live) { client in
            let response = try await client.executeRequest(uri: "/admin/dead-letters", method: .get, headers: [.authorization: "Bearer x"], body: nil)
            #expect(response.status == .notFound)
        }

        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        koala.script([.status(422, body: #"{"error":"Invalid request"}"#)])
        var config = testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala)
        config.adminToken = "admin-token-0123456789"
        let (app, components) = try await buildApplication(config, logger: quietLogger)
        try await app.test(.live) { client in
            let body = invoicePaid(id: "evt_admin", email: "a@acme.io")
            _ = try await client.executeRequest(uri: "/webhooks/stripe", method: .post, headers: stripeHeaders(body), body: ByteBuffer(bytes: body))
            #expect(await eventually { (try? await components.store.counts().dead) == 1 })

            let auth: HTTPFields = [.authorization: "Bearer admin-token-0123456789"]
            let denied = try await client.executeRequest(uri: "/admin/dead-letters", method: .get, headers: [.authorization: "Bearer wrong"], body: nil)
            #expect(denied.status == .unauthorized)
            let none = try await client.executeRequest(uri: "/admin/dead-letters", method: .get, headers: [:], body: nil)
            #expect(none.status == .unauthorized)

            let list = try await client.executeRequest(uri: "/admin/dead-letters?source=stripe&reason=rejected", method: .get, headers: auth, body: nil)
            let listed = try JSONValue.parse(Array(buffer: list.body))
            #expect(listed["count"] == 1)
            let id = MessageID.derive(source: "stripe", webhookID: "evt_admin", route: "payment-succeeded", output: .track)
            let show = try await client.executeRequest(uri: "/admin/dead-letters/\(id)", method: .get, headers: auth, body: nil)
            let shown = try JSONValue.parse(Array(buffer: show.body))
            #expect(shown["reason"] == "koala rejected (422)")
            #expect(shown["detail"] == #"{"error":"Invalid request"}"#)
            #expect(shown["identity"] == ["email": "a@acme.io"])

            let everything = try await client.executeRequest(uri: "/admin/dead-letters/drop", method: .post, headers: auth, body: nil)
            #expect(everything.status == .badRequest)

            // Koala accepts it now: a retry delivers it with the same message id.
            let retry = try await client.executeRequest(uri: "/admin/dead-letters/retry?id=\(id)", method: .post, headers: auth, body: nil)
            #expect(try JSONValue.parse(Array(buffer: retry.body)) == ["retried": 1])
            #expect(await eventually { koala.deliveredMessageIDs == [id] })
        }
    }
}

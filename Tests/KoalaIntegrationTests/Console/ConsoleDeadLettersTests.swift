import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaStore
import KoalaTestSupport

/// Dead letters in the console: listed with Koala's answer, retried or dropped only through a confirmation
/// whose form carries the CSRF token.
@Suite("Console dead letters")
struct ConsoleDeadLettersTests {
    @Test func aDeadLetterIsRetriedThroughAConfirmationAndReachesKoala() async throws {
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        koala.script([.status(422, body: #"{"error":"<b>Invalid</b> request"}"#), .status(422, body: #"{"error":"Invalid request"}"#)])
        var config = testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: koala)
        config.adminToken = ConsoleTests.token
        let (app, components) = try await buildApplication(config, logger: quietLogger)
        try await app.test(.live) { client in
            for id in ["evt_dl_1", "evt_dl_2"] {
                let body = invoicePaid(id: id, email: "\(id)@acme.io")
                _ = try await client.executeRequest(uri: "/webhooks/stripe", method: .post, headers: stripeHeaders(body), body: ByteBuffer(bytes: body))
                #expect(await eventually { (try? await components.store.counts().dead) == (id == "evt_dl_1" ? 1 : 2) })
            }
            let cookie = try await ConsoleTests.signIn(client)
            func get(_ uri: String) async throws -> String {
                String(buffer: try await client.executeRequest(uri: uri, method: .get, headers: [.cookie: cookie], body: nil).body)
            }
            let list = try await get("/console/dead-letters?source=stripe")
            #expect(list.contains("2 match."))
            #expect(list.contains("koala rejected (422)") && list.contains("&lt;b&gt;Invalid&lt;/b&gt;"), "Koala's answer, as text")
            let id1 = MessageID.derive(source: "stripe", webhookID: "evt_dl_1", route: "payment-succeeded", output: .track)
            #expect(list.contains("<code>\(id1)</code>") && list.contains(#"href="/console/webhooks/stripe/evt_dl_1""#))

            // Confirming changes nothing; the form carries the filter and the CSRF token.
            let confirm = try await get("/console/dead-letters/confirm?action=retry&id=\(id1)&destination=koala")
            #expect(confirm.contains("1 dead letter will be queued again"))
            #expect(try await components.store.counts().dead == 2)
            let marker = #"name="csrf" value=""#
            let csrf = String(confirm[try #require(confirm.range(of: marker, options: .backwards)).upperBound...].prefix { $0 != "\"" })

            var headers = ConsoleTests.formHeaders
            headers[.cookie] = cookie
            let noToken = try await client.executeRequest(uri: "/console/dead-letters/retry", method: .post, headers: headers,
                                                          body: ConsoleTests.form(["id": id1, "destination": "koala"]))
            let deadAfterNoToken = try await components.store.counts().dead
            #expect(noToken.status == .forbidden && deadAfterNoToken == 2)

            let everything = try await client.executeRequest(uri: "/console/dead-letters/drop", method: .post, headers: headers,
                                                             body: ConsoleTests.form(["csrf": csrf]))
            let deadAfterEverything = try await components.store.counts().dead
            #expect(everything.status == .badRequest && deadAfterEverything == 2, "dropping everything needs a filter")
            #expect(try await get("/console/dead-letters/confirm?action=drop").contains("Refusing to drop every dead letter"))

            // Koala accepts now: the retried message is delivered with the same message id.
            let retried = try await client.executeRequest(uri: "/console/dead-letters/retry", method: .post, headers: headers,
                                                          body: ConsoleTests.form(["csrf": csrf, "id": id1, "destination": "koala"]))
            #expect(retried.status == .seeOther && retried.headers[.location] == "/console/dead-letters?done=retried-1")
            #expect(await eventually { koala.deliveredMessageIDs.contains(id1) })
            #expect(try await get("/console/dead-letters?done=retried-1").contains("Retried 1 dead letter: queued again"))

            let id2 = MessageID.derive(source: "stripe", webhookID: "evt_dl_2", route: "payment-succeeded", output: .track)
            let dropped = try await client.executeRequest(uri: "/console/dead-letters/drop", method: .post, headers: headers,
                                                          body: ConsoleTests.form(["csrf": csrf, "id": id2]))
            #expect(dropped.headers[.location] == "/console/dead-letters?done=dropped-1")
            #expect(try await components.store.counts().dead == 0)
            #expect(!koala.deliveredMessageIDs.contains(id2))
        }
    }
}

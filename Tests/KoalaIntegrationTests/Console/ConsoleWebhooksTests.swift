import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
@testable import KoalaApp
@testable import KoalaCore
import KoalaTestSupport

/// The console's webhook list and single-webhook page over HTTP, against the shipped routes and a real
/// SQLite file.
@Suite("Console webhook pages")
struct ConsoleWebhooksTests {
    func get(_ client: some TestClientProtocol, _ uri: String, cookie: String) async throws -> (HTTPResponse.Status, String) {
        let response = try await client.executeRequest(uri: uri, method: .get, headers: [.cookie: cookie], body: nil)
        return (response.status, String(buffer: response.body))
    }

    func send(_ client: some TestClientProtocol, _ body: [UInt8]) async throws {
        let response = try await client.executeRequest(uri: "/webhooks/stripe", method: .post, headers: stripeHeaders(body), body: ByteBuffer(bytes: body))
        #expect(response.status == .ok)
    }

    func ids(_ html: String) -> [String] {
        html.components(separatedBy: #"<a href="/console/webhooks/stripe/"#).dropFirst().map { String($0.prefix { $0 != "\"" }) }
    }

    @Test func theListPagesNewestFirstAndFilters() async throws {
        let (app, _) = try await ConsoleTests().app()
        try await app.test(.live) { client in
            for i in 0..<60 { try await send(client, invoicePaid(id: String(format: "evt_list_%03d", i), email: "p\(i % 3)@acme.io")) }
            try await send(client, stripeEvent(id: "evt_list_customer", type: "customer.created", created: 1_732_871_520,
                                               object: ["id": "cus_9", "object": "customer", "email": "grace@acme.io"]))
            let cookie = try await ConsoleTests.signIn(client)

            let (status, first) = try await get(client, "/console/webhooks", cookie: cookie)
            #expect(status == .ok)
            let firstIDs = ids(first)
            #expect(firstIDs.count == 50)
            #expect(firstIDs.first == "evt_list_customer" && firstIDs[1] == "evt_list_059", "newest first")
            let next = try #require(first.components(separatedBy: #"<a href=""#).first { $0.contains(#"rel="next""#) }?.prefix { $0 != "\"" })
            let (_, second) = try await get(client, String(next).replacingOccurrences(of: "&amp;", with: "&"), cookie: cookie)
            let secondIDs = ids(second)
            #expect(secondIDs.count == 11 && Set(firstIDs).isDisjoint(with: secondIDs))
            #expect(secondIDs.last == "evt_list_000" && !second.contains(#"rel="next""#))

            let (_, typed) = try await get(client, "/console/webhooks?type=customer.created", cookie: cookie)
            #expect(ids(typed) == ["evt_list_customer"])
            let (_, byID) = try await get(client, "/console/webhooks?q=evt_list_007", cookie: cookie)
            #expect(ids(byID) == ["evt_list_007"])
            let (_, byEmail) = try await get(client, "/console/webhooks?q=P1@ACME.IO", cookie: cookie)
            #expect(ids(byEmail).count == 20 && ids(byEmail).allSatisfy { Int($0.suffix(3))! % 3 == 1 })
            let (_, none) = try await get(client, "/console/webhooks?state=none", cookie: cookie)
            #expect(ids(none).isEmpty || ids(none).allSatisfy { !$0.hasPrefix("evt_list_0") })
            // No project key here: the sender handles every message in dry run.
            #expect(try await eventually { try await ids(get(client, "/console/webhooks?state=dry_run&source=stripe&since=1h", cookie: cookie).1).count == 50 })
            let (_, pending) = try await get(client, "/console/webhooks?state=pending", cookie: cookie)
            #expect(ids(pending).isEmpty)

            let (_, bad) = try await get(client, "/console/webhooks?since=yesterday&source=nosuch&state=lost", cookie: cookie)
            #expect(bad.contains("since: expected an ISO-8601 time") && bad.contains("source: no source named &#39;nosuch&#39;"))
            #expect(bad.contains("state: expected pending, delivered, dead, dry_run or none, got &#39;lost&#39;"))
            let (_, cursor) = try await get(client, "/console/webhooks?after=garbage", cookie: cookie)
            #expect(cursor.contains("after: not a page cursor"))
        }
    }

    @Test func oneWebhookShowsItsMessagesRoutingHeadersAndPayloadAsText() async throws {
        let (app, _) = try await ConsoleTests().app()
        try await app.test(.live) { client in
            let hostile = stripeEvent(id: "evt_xss", type: "invoice.paid", created: 1_732_871_520, object: [
                "id": "in_xss", "object": "invoice", "customer_email": "ada@acme.io", "amount_paid": 4900, "currency": "usd",
                "customer": "cus_1", "number": #""><img src=x onerror=alert(1)><script>alert(2)</script>"#,
                "description": .string(String(repeating: "A", count: 5000)), "hosted_invoice_url": "javascript:alert(3)",
            ])
            try await send(client, hostile)
            let cookie = try await ConsoleTests.signIn(client)
            let (status, html) = try await get(client, "/console/webhooks/stripe/evt_xss", cookie: cookie)
            #expect(status == .ok)
            #expect(!html.contains("<script>alert") && !html.contains("<img src=x"), "payload values are text")
            #expect(html.contains("&lt;script&gt;alert(2)&lt;/script&gt;") && html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"))
            #expect(!html.contains(#"href="javascript:"#))
            #expect(html.contains(String(repeating: "A", count: 5000)), "a long value is shown whole; the stylesheet wraps it")
            #expect(html.contains(#"<span class="ok">✓ matched</span> <strong>payment-succeeded</strong>"#))
            #expect(html.contains(#"<strong>payment-failed</strong>: type &#39;invoice.paid&#39; is not"#))
            let id = MessageID.derive(source: "stripe", webhookID: "evt_xss", route: "payment-succeeded", output: .track)
            #expect(html.contains("<code>\(id)</code>"))
            #expect(html.contains(#"<span class="warn">pending</span>"#) || html.contains(#"<span class="muted">dry_run</span>"#))
            #expect(html.contains("<dt>content-type</dt>") && !html.lowercased().contains("stripe-signature"), "the signature is never stored, so never shown")
            #expect(html.contains("\n  &quot;data&quot; : {"), "the payload is pretty-printed")

            let (missing, _) = try await get(client, "/console/webhooks/stripe/evt_nosuch", cookie: cookie)
            #expect(missing == .notFound)
            let (anonymous, _) = try await get(client, "/console/webhooks/stripe/evt_xss", cookie: "")
            #expect(anonymous == .seeOther)
        }
    }
}

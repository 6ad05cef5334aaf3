import Foundation
import Logging
import Testing
import KoalaTestSupport
@testable import KoalaCore

/// Hostile values the core itself must handle: numbers out of range, emails that would merge two people or
/// make a company of a free-mail domain, provider ids with control characters. (The same through ingest and
/// the store: KoalaIntegrationTests/Hardening.)
@Suite("Hostile values in the core")
struct CoreHostileValueTests {
    static let environment = ["STRIPE_WEBHOOK_SECRET": testSecret]

    @Test func anOutOfRangeTimeIsMissingInEveryFilter() throws {
        let context = EvaluationContext(body: try JSONValue.parse(Array(#"{"big":1e999,"huge":1e300,"ms":10000000000000000000,"neg":-1e999,"s":"1e300","x":2.5}"#.utf8)),
                                        headers: [:], webhook: [:])
        func eval(_ text: String) throws -> JSONValue? {
            var parser = try ExpressionParser(text)
            return try parser.parseComplete().evaluate(in: context)
        }
        for path in ["body.big", "body.huge", "body.ms", "body.neg", "body.s"] {
            for filter in ["unix_seconds", "unix_millis", "timestamp"] {
                let value = try eval("\(path) | \(filter)")
                #expect(value == nil || path == "body.ms" && filter == "unix_millis" && value == nil, "\(path) | \(filter) gave \(String(describing: value))")
            }
        }
        #expect(try eval("body.big | cents") == nil)
        #expect(try eval("body.big | number") == nil)
        #expect(try eval("body.big | round") == nil)
        #expect(try eval("body.huge | round(12)") == nil)
        #expect(try eval("body.x | round(99999999999999999999)") == nil)
        #expect(try eval("body.x | round(-1)") == nil)
        #expect(try eval("body.x | round(1.5)") == nil)
        #expect(try eval("body.x | round(1)") == .double(2.5))
        #expect(try eval("body.big | string") == nil)
        let template = Expression.template([.text("n="), .expression(.path(Path(root: .body, components: [.key("big")])))])
        #expect(template.evaluate(in: context) == .string("n="))
        #expect(Timestamps.iso(Date(timeIntervalSince1970: .infinity)) == "9999-12-31T23:59:59.999Z")
        #expect(Timestamps.iso(Date(timeIntervalSince1970: -.infinity)) == "0001-01-01T00:00:00.000Z")
        #expect(Timestamps.iso(Date(timeIntervalSince1970: .nan)) == "1970-01-01T00:00:00.000Z")
    }

    @Test func aProviderIdWithANulIsNeverRememberedOrRecalled() throws {
        let table = try RuleLoader(environment: Self.environment).load(directory: repositoryRoot + "/routes")
        let router = WebhookRouter(source: try #require(table.sources["stripe"]))
        let body = stripeEvent(id: "evt_c", type: "customer.created", object: ["id": "cus_9\u{0}x", "object": "customer", "email": "ada@acme-corp.io"])
        let webhook = VerifiedWebhook(source: "stripe", webhookID: "evt_c", eventType: "customer.created", eventTime: Date(), receivedAt: Date(),
                                      headers: [:], body: body, json: try JSONTape.parse(body), secretLabel: "S", rulesVersion: "v")
        #expect(router.routing(webhook).remembers.isEmpty)
        let subscription = stripeEvent(id: "evt_s", type: "customer.subscription.created", object: [
            "id": "sub_1", "object": "subscription", "customer": "cus_9\u{0}x", "status": "active",
        ])
        let sub = VerifiedWebhook(source: "stripe", webhookID: "evt_s", eventType: "customer.subscription.created", eventTime: Date(),
                                  receivedAt: Date(), headers: [:], body: subscription, json: try JSONTape.parse(subscription),
                                  secretLabel: "S", rulesVersion: "v")
        #expect(router.recallKeys(sub).isEmpty)
        #expect(router.route(sub).allSatisfy { $0.waitingFor == nil && $0.problem != nil })
    }

    @Test(arguments: [
        ("Ada@Example.IO", "ada@example.io"),
        (" ada@acme-corp.io\n", "ada@acme-corp.io"),
        ("a.b+tag@acme-corp.io", "a.b+tag@acme-corp.io"),
        ("\u{212A}elvin@acme-corp.io", "\u{212A}elvin@acme-corp.io"),  // the Kelvin sign stays itself
        ("İLKER@acme-corp.io", "İlker@acme-corp.io"),                  // not i̇lker
        ("jürgen@müller.de", "jürgen@xn--mller-kva.de"),
        ("ada@ＡＣＭＥ-corp．io", "ada@acme-corp.io"),
        ("ada@ｇｍａｉｌ.com", "ada@gmail.com"),
        ("ada@bücher.example", "ada@xn--bcher-kva.example"),
        ("ada@例え。テスト", "ada@xn--r8jz45g.xn--zckzah"),
    ])
    func addressesNormalise(raw: String, expected: String) {
        #expect(Identity.normalizeEmail(raw) == expected)
    }

    @Test(arguments: [
        "victim\u{0}@acme-corp.io", "vic\u{7}tim@acme-corp.io", "ad\u{202E}a@acme-corp.io", "ada@acme\u{202E}corp.io",
        "ada\u{200B}@acme-corp.io", "\"john doe\"@acme-corp.io", "\"ada\"@acme-corp.io", ".ada@acme-corp.io", "ada.@acme-corp.io",
        "a..b@acme-corp.io", "ada@acme-corp.io.", "ada@.acme-corp.io", "ada@-acme.io", "ada@acme_corp.io", "ada@[127.0.0.1]",
        "a b@acme-corp.io", "ada@acme corp.io", "ada@localhost", "ada@acme.123", "two@@ats.io", "no-at-sign", "@acme.io", "ada@",
        String(repeating: "a", count: 65) + "@acme-corp.io",
        String(repeating: "é", count: 33) + "@acme-corp.io",  // 33 characters, 66 bytes
        "ada@" + String(repeating: "a", count: 64) + ".io",
        "ada@" + Array(repeating: String(repeating: "b", count: 60), count: 5).joined(separator: ".") + ".io",
        String(repeating: "x", count: 5000) + "@acme-corp.io",
        "ada\u{2028}x@acme-corp.io",
    ])
    func addressesAreRefused(raw: String) {
        #expect(Identity.normalizeEmail(raw) == nil, "\(raw.debugDescription) was accepted as \(String(describing: Identity.normalizeEmail(raw)))")
    }

    @Test func aFullwidthFreeMailDomainIsNoCompany() {
        #expect(Identity.companyDomain(ofEmail: "ada@ｇｍａｉｌ.com") == nil)
        #expect(Identity.companyDomain(from: "ＡＣＭＥ-corp.io") == "acme-corp.io")
        #expect(Identity.companyDomain(from: "acme\u{202E}corp.io") == nil)
    }

    @Test func freeMailMatchesWholeRegistrableDomainsOnly() {
        for company in ["mail.acme-corp.io", "web.acme.de", "live.acme-corp.com", "free.acme.fr", "orange.com", "sky.io", "yahoo-inc.com", "mail-acme.com"] {
            #expect(Identity.companyDomain(from: company) == company, "\(company) is a company")
        }
        for free in ["gmail.com", "yahoo.co.uk", "mail.yahoo.co.uk", "hotmail.fr", "gmx.de", "web.de", "yahoo.com", "hotmail.com",
                     "outlook.com", "aol.com", "libero.it", "wp.pl", "bigpond.net.au", "yahoo.co.jp", "mail.ru", "eu.mailinator.com"] {
            #expect(Identity.companyDomain(from: free) == nil, "\(free) is free mail")
        }
    }

}

/// What the log handlers print for hostile text.
@Suite("Log escaping")
struct LogEscapingTests {
    @Test func controlAndBidiCharactersAreEscapedInTextLogs() {
        let capture = CapturingLogHandler()
        var logger = Logger(label: "t") { _ in EscapingLogHandler(capture) }
        logger[metadataKey: "request_id"] = "r\n1"
        logger.warning("webhook \u{202E}rejected\r\n2026-11-29 critical koala-router: forged", metadata: ["webhook_id": "evt_1\n2026-11-29T00:00:00+0000 critical forged", "list": ["a\u{0}b"]])
        let line = capture.lines.joined()
        #expect(!line.contains("\n") && !line.contains("\r") && !line.contains("\u{202E}") && !line.contains("\u{0}"))
        #expect(line.contains(#"evt_1\u{A}2026-11-29T00:00:00+0000 critical forged"#))
        #expect(line.contains(#"\u{202E}rejected\u{D}\u{A}2026"#))
        #expect(line.contains(#"r\u{A}1"#))
    }

    @Test func escapingLeavesPlainTextAndBoundsBytes() {
        #expect(LogText.escaped("plain text") == "plain text")
        #expect(LogText.bounded("ééé", limit: 5) == "éé…")
    }
}


import Foundation
import Testing
@testable import KoalaCore
import KoalaTestSupport

@Suite("Expressions and filters")
struct ExpressionTests {
    let context = EvaluationContext(
        body: [
            "id": "evt_1",
            "created": 1_732_871_520,
            "data": ["object": [
                "email": "  Ada@Example.IO ",
                "amount": 1999,
                "even": 4900,
                "items": [["name": "a"], ["name": "b"]],
                "tags": ["x", "y", 3],
                "null_field": nil,
                "iso": "2024-03-27T15:42:29.551+02:00",
                "ms": 1_654_012_591_835,
                "weird key": "w",
                "unicode": "Zoë 😀",
            ]],
        ],
        headers: ["x-event-name": "order_created"],
        webhook: ["id": "evt_1"]
    )

    func eval(_ text: String) throws -> JSONValue? {
        var parser = try ExpressionParser(text)
        return try parser.parseComplete().evaluate(in: context)
    }

    @Test func paths() throws {
        #expect(try eval("body.id") == "evt_1")
        #expect(try eval("body.data.object.items[1].name") == "b")
        #expect(try eval("body.data.object.items[-1].name") == "b")
        #expect(try eval("body.data.object.items[5].name") == nil)
        #expect(try eval("body.data.object[\"weird key\"]") == "w")
        #expect(try eval("body.data.object.null_field") == .null)
        #expect(try eval("body.data.object.missing.deeper") == nil)
        #expect(try eval("body.id.deeper") == nil)
        #expect(try eval("headers.X-Event-Name") == "order_created")
        #expect(try eval("webhook.id") == "evt_1")
    }

    @Test func selectingAnArrayElement() throws {
        let clerk = EvaluationContext(body: [
            "data": [
                "primary_email_address_id": "idn_2",
                "email_addresses": [
                    ["id": "idn_1", "email_address": "old@acme.io", "verification": ["status": "unverified"]],
                    ["id": "idn_2", "email_address": "primary@acme.io", "verification": ["status": "verified"]],
                ],
                "items": [["qty": 1, "sku": "a"], ["qty": 2, "sku": "b"]],
            ],
        ], headers: [:], webhook: [:])
        func eval(_ text: String) throws -> JSONValue? {
            var parser = try ExpressionParser(text)
            return try parser.parseComplete().evaluate(in: clerk)
        }
        #expect(try eval("body.data.email_addresses[id == body.data.primary_email_address_id].email_address") == "primary@acme.io")
        #expect(try eval("body.data.email_addresses[verification.status == 'unverified'].email_address") == "old@acme.io")
        #expect(try eval("body.data.email_addresses[id != 'idn_1'].email_address") == "primary@acme.io")
        #expect(try eval("body.data.email_addresses[id == 'idn_9'].email_address") == nil)
        #expect(try eval("body.data.items[qty == 2].sku") == "b")
        #expect(try eval("body.data.items[qty == '2'].sku") == "b")
        #expect(try eval("body.data.primary_email_address_id[id == 'x']") == nil)
    }

    @Test func textFilters() throws {
        #expect(try eval("body.data.object.email | trim | lower") == "ada@example.io")
        #expect(try eval("body.data.object.email | email") == "ada@example.io")
        #expect(try eval("body.data.object.unicode | upper") == "ZOË 😀")
        #expect(try eval("body.data.object.missing | upper") == nil)
        #expect(try eval("body.data.object.missing | default('none')") == "none")
        #expect(try eval("body.data.object.null_field | default(0)") == 0)
        #expect(try eval("body.data.object.tags | join('-')") == "x-y-3")
        #expect(try eval("body.data.object.tags | first") == "x")
        #expect(try eval("body.data.object.tags | count") == 3)
        #expect(try eval("coalesce(body.data.object.missing, body.data.object.null_field, 'fallback')") == "fallback")
    }

    @Test func numberFilters() throws {
        #expect(try eval("body.data.object.amount | cents") == .double(19.99))
        #expect(try eval("body.data.object.even | cents") == 49)
        #expect(try eval("body.data.object.email | cents") == nil)
        #expect(try eval("'12.5' | number") == .double(12.5))
        #expect(try eval("body.data.object.amount | cents | round") == 20)
        #expect(try eval("body.data.object.amount | cents | round(1)") == .double(20.0))
        #expect(try eval("9007199254740993") == .int(9_007_199_254_740_993))
    }

    @Test func timeFilters() throws {
        #expect(try eval("body.created | unix_seconds") == "2024-11-29T09:12:00.000Z")
        #expect(try eval("body.data.object.ms | unix_millis") == "2022-05-31T15:56:31.835Z")
        #expect(try eval("body.data.object.ms | timestamp") == "2022-05-31T15:56:31.835Z")
        #expect(try eval("body.data.object.iso | iso8601") == "2024-03-27T13:42:29.551Z")
        #expect(try eval("'2024-03-27T15:42:29' | iso8601") == "2024-03-27T15:42:29.000Z")
        #expect(try eval("'2023-08-18T08:38:33.482315Z' | timestamp") == "2023-08-18T08:38:33.482Z")
        #expect(try eval("'not a date' | iso8601") == nil)
        #expect(Timestamps.iso(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000Z")
        #expect(Timestamps.iso(Date(timeIntervalSince1970: 951_782_400)) == "2000-02-29T00:00:00.000Z")
        // The in-place writer against the calendar, over 10,000 random times from 1600 to 9999 and the edges.
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        var generator = SystemRandomNumberGenerator()
        let times = (0..<10_000).map { _ in Double.random(in: -11_676_096_000 ... 253_402_300_799.999, using: &generator) }
            + [-0.001, 0.0005, 253_402_300_799.999, -11_676_096_000, 1_733_000_000.9999]
        for t in times {
            // As the date holds it (seconds since 2001 in a Double), which is what is formatted.
            let millis = (Date(timeIntervalSince1970: t).timeIntervalSince1970 * 1000).rounded(.down)
            let whole = Date(timeIntervalSince1970: (millis / 1000).rounded(.down))
            let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: whole)
            let ms = Int(millis - (millis / 1000).rounded(.down) * 1000)
            let expected = String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", c.year!, c.month!, c.day!, c.hour!, c.minute!, c.second!, ms)
            #expect(Timestamps.iso(Date(timeIntervalSince1970: t)) == expected, "\(t)")
        }
    }

    @Test func emailDomainSkipsFreeMail() throws {
        #expect(try eval("'ada@Analytical-Engines.io' | email_domain") == "analytical-engines.io")
        #expect(try eval("'someone@gmail.com' | email_domain") == nil)
        #expect(try eval("'someone@yahoo.co.uk' | email_domain") == nil)
        #expect(try eval("'someone@mailinator.com' | email_domain") == nil)
        #expect(try eval("'not-an-email' | email_domain") == nil)
    }

    @Test func classification() {
        #expect(ExpressionParser.looksLikeExpression("body.data.object.email"))
        #expect(ExpressionParser.looksLikeExpression("person.email | email_domain"))
        #expect(ExpressionParser.looksLikeExpression("coalesce(body.a, body.b)"))
        #expect(ExpressionParser.looksLikeExpression("body"))
        #expect(!ExpressionParser.looksLikeExpression("Invoice Paid"))
        #expect(!ExpressionParser.looksLikeExpression("stripe"))
        #expect(!ExpressionParser.looksLikeExpression("body shop"))
        #expect(!ExpressionParser.looksLikeExpression("Everybody loves $5 & more"))
    }

    @Test func parseErrorsCarryColumns() {
        func failure(_ text: String) -> ExpressionParser.Failure? {
            do {
                var parser = try ExpressionParser(text)
                _ = try parser.parseComplete()
                return nil
            } catch {
                return error
            }
        }
        #expect(failure("body.a | nope")?.offset == 9)
        #expect(failure("body.a[")?.offset == 7)
        #expect(failure("body.a 'x'")?.offset == 7)
        #expect(failure("'unterminated")?.offset == 0)
        #expect(failure("body.a | default")?.message == "filter 'default' takes 1 arguments, got 0")
    }

    @Test func typePatterns() {
        #expect(TypePattern("invoice.paid").matches("invoice.paid"))
        #expect(!TypePattern("invoice.paid").matches("invoice.paid.x"))
        #expect(TypePattern("customer.subscription.*").matches("customer.subscription.updated"))
        #expect(!TypePattern("customer.subscription.*").matches("customer.created"))
        #expect(TypePattern("*.created").matches("customer.created"))
        #expect(TypePattern("a*b*c").matches("axxbyyc"))
        #expect(!TypePattern("a*b*c").matches("axxbyy"))
    }

    @Test func identityNormalisation() {
        #expect(Identity.normalizeEmail(" Ada@Example.IO ") == "ada@example.io")
        #expect(Identity.normalizeEmail("no-at-sign") == nil)
        #expect(Identity.normalizeEmail("two@@ats.io") == nil)
        #expect(Identity.normalizeEmail("x@nodot") == nil)
        #expect(Identity.normalizeProfileID("3E6A2C18-3B02-40C4-B8D2-1842C193D3BA") == "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba")
        #expect(Identity.normalizeProfileID("ko_123") == nil)
    }
}

/// The list is a value: each test (and each source's routing) has its own, side by side.
@Suite("Free-mail list")
struct FreeMailListTests {
    @Test func theListCanBeExtendedAndTrimmed() throws {
        let file = temporaryDirectory() + "/free-mail.txt"
        try "# ours\nstaff-mail.example\n!fastmail.com   # our customers' company mail\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(Identity.companyDomain(ofEmail: "a@fastmail.com") == nil)
        let list = try FreeMailDomains.load(file: file)
        #expect(list == FreeMailDomains(added: ["staff-mail.example"], removed: ["fastmail.com"]))
        FreeMailDomains.$current.withValue(list) {
            #expect(Identity.companyDomain(ofEmail: "a@staff-mail.example") == nil)
            #expect(Identity.companyDomain(ofEmail: "a@fastmail.com") == "fastmail.com")
            #expect(Identity.companyDomain(ofEmail: "a@gmail.com") == nil)
        }
        // Outside, the shipped list holds.
        #expect(Identity.companyDomain(ofEmail: "a@fastmail.com") == nil)
        #expect(Identity.companyDomain(ofEmail: "a@staff-mail.example") == "staff-mail.example")
    }

    /// A source routes with the list the loader was given: the account domain and `email_domain` follow it.
    @Test func routingUsesTheListTheRulesWereLoadedWith() throws {
        let rules = """
            source: shop
            verify: { scheme: stripe, secrets: [STRIPE_WEBHOOK_SECRET] }
            routes:
              - name: signup
                when: { type: customer.created }
                person: { email: body.email }
                identify:
                  traits:
                    company: body.email | email_domain
            """
        let environment = ["STRIPE_WEBHOOK_SECRET": "whsec_rule_tests_x"]
        let shipped = try RuleLoader(environment: environment).load(files: [("acme.yaml", rules)])
        let ours = try RuleLoader(environment: environment, freeMail: FreeMailDomains(removed: ["fastmail.com"])).load(files: [("acme.yaml", rules)])
        let body = Array(#"{"id":"e1","type":"customer.created","email":"ada@fastmail.com"}"#.utf8)
        let webhook = VerifiedWebhook(source: "shop", webhookID: "e1", eventType: "customer.created", eventTime: Date(timeIntervalSince1970: 1),
                                      receivedAt: Date(timeIntervalSince1970: 1), headers: [:], body: body, json: try JSONTape.parse(body),
                                      secretLabel: "STRIPE_WEBHOOK_SECRET", rulesVersion: "v")
        let traitOf = { (table: RuleTable) -> JSONValue? in
            WebhookRouter(source: table.sources["shop"]!).route(webhook).first?.item["traits"]?["company"]
        }
        #expect(traitOf(shipped) == nil)
        #expect(traitOf(ours) == .string("fastmail.com"))
    }
}

@Suite("JSON parser")
struct JSONParserTests {
    func parse(_ s: String) -> JSONValue? { try? JSONValue.parse(Array(s.utf8)) }

    @Test func valuesRoundTrip() {
        #expect(parse(#"{"a":[1,-2,3.5,1e3,true,false,null,"x"],"b":{}}"#) == ["a": [1, -2, .double(3.5), .double(1000), true, false, nil, "x"], "b": [:]])
        #expect(parse(#""\u00e9\ud83d\ude00\n\"\\\/""#) == .string("é😀\n\"\\/"))
        #expect(parse(" 42 ") == 42)
        #expect(parse("9223372036854775807") == .int(Int64.max))
        #expect(parse("9223372036854775808") == .double(9_223_372_036_854_775_808))
        #expect(parse(#""Zoë 😀""#) == "Zoë 😀")
    }

    @Test func invalidInputIsRefused() {
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "01", "1.", "-", "tru", "\"\\x\"", "\"\u{01}\"", "{\"a\":1} x", "[\"\\ud800\"]", "nul", "'a'"] {
            #expect(parse(bad) == nil, "\(bad)")
        }
        #expect(parse(String(repeating: "[", count: 600) + String(repeating: "]", count: 600)) == nil)
        #expect((try? JSONValue.parse(Array("{\"a\":}".utf8))) == nil)
        do {
            _ = try JSONValue.parse(Array("{\"id\": \"evt_1\", oops".utf8))
        } catch {
            #expect("\(error)" == "expected a quoted key at byte 16")
        }
    }

    @Test func invalidUTF8IsRefused() {
        #expect((try? JSONValue.parse([0x22, 0xFF, 0x22] as [UInt8])) == nil)
    }

    /// Keys are written in the order of their bytes. String's `<` calls "cafe\u{301}" and "caf\u{e9}6" neither
    /// less nor greater, so with it the order was whatever the dictionary's was that time.
    @Test func keysEncodeInOneOrder() {
        for _ in 0..<50 {
            let value: JSONValue = .object(Dictionary(uniqueKeysWithValues: [("caf\u{e9}6", 2), ("cafe\u{301}", 1), ("K", 0), ("\u{212A}x", 3)].shuffled()))
            #expect(value.encoded() == "{\"K\":0,\"cafe\u{301}\":1,\"caf\u{e9}6\":2,\"\u{212A}x\":3}")
        }
    }
}

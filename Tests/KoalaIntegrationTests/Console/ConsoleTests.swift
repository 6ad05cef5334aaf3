import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
@testable import KoalaApp
@testable import KoalaCore
import KoalaTestSupport

/// The console over HTTP: off without the admin token; sign-in, the session cookie, CSRF and the security
/// headers; what the overview shows.
@Suite("Console over HTTP")
struct ConsoleTests {
    static let token = "console-admin-token-0123456789"

    func app() async throws -> (some ApplicationProtocol, RouterComponents) {
        var config = testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: nil)
        config.adminToken = Self.token
        return try await buildApplication(config, logger: quietLogger)
    }

    static func form(_ fields: [String: String]) -> ByteBuffer {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return ByteBuffer(string: fields.map { "\($0.key)=\($0.value.addingPercentEncoding(withAllowedCharacters: allowed)!)" }.joined(separator: "&"))
    }

    static let formHeaders: HTTPFields = [.contentType: "application/x-www-form-urlencoded"]

    /// Signs in and returns the `Cookie` header value.
    /// A Set-Cookie value's attributes (after the name and value), in any order.
    static func attributes(_ setCookie: String) -> Set<String> {
        Set(setCookie.split(separator: ";").dropFirst().map { $0.trimmingCharacters(in: .whitespaces) })
    }

    static func signIn(_ client: some TestClientProtocol) async throws -> String {
        let response = try await client.executeRequest(uri: "/console/sign-in", method: .post, headers: formHeaders, body: form(["token": token]))
        #expect(response.status == .seeOther)
        let setCookie = try #require(response.headers[.setCookie])
        return String(setCookie.prefix { $0 != ";" })
    }

    @Test func theConsoleIsAbsentWithoutTheAdminToken() async throws {
        var config = testConfiguration(database: temporaryDirectory() + "/db.sqlite", koala: nil)
        config.adminToken = nil
        let (app, _) = try await buildApplication(config, logger: quietLogger)
        try await app.test(.live) { client in
            for path in ["/console", "/console/sign-in", "/console/assets/console.css"] {
                #expect(try await client.executeRequest(uri: path, method: .get, headers: [:], body: nil).status == .notFound, "\(path)")
            }
            let post = try await client.executeRequest(uri: "/console/sign-in", method: .post, headers: Self.formHeaders, body: Self.form(["token": "x"]))
            #expect(post.status == .notFound)
        }
    }

    @Test func signingInSetsAStrictSessionCookie() async throws {
        let (app, _) = try await app()
        try await app.test(.live) { client in
            let anonymous = try await client.executeRequest(uri: "/console", method: .get, headers: [:], body: nil)
            #expect(anonymous.status == .seeOther && anonymous.headers[.location] == "/console/sign-in")

            let page = try await client.executeRequest(uri: "/console/sign-in", method: .get, headers: [:], body: nil)
            #expect(page.status == .ok)
            #expect(page.headers[.contentSecurityPolicy]?.contains("default-src 'none'") == true)
            #expect(page.headers[.contentSecurityPolicy]?.contains("frame-ancestors 'none'") == true)
            #expect(page.headers[HTTPField.Name("X-Frame-Options")!] == "DENY")
            #expect(page.headers[HTTPField.Name("Referrer-Policy")!] == "no-referrer")
            let html = String(buffer: page.body)
            #expect(html.contains(#"<form method="post" action="/console/sign-in">"#))
            #expect(!html.contains("<script") && !html.contains("style="), "no inline script or style: the CSP forbids them")

            let wrong = try await client.executeRequest(uri: "/console/sign-in", method: .post, headers: Self.formHeaders, body: Self.form(["token": "guess"]))
            #expect(wrong.status == .unauthorized && wrong.headers[.setCookie] == nil)
            #expect(String(buffer: wrong.body).contains("That is not the admin token"))

            var crossSite = Self.formHeaders
            crossSite[.origin] = "https://evil.example"
            let forged = try await client.executeRequest(uri: "/console/sign-in", method: .post, headers: crossSite, body: Self.form(["token": Self.token]))
            #expect(forged.status == .forbidden && forged.headers[.setCookie] == nil)

            // What Chromium sends with the sign-in form under `Referrer-Policy: no-referrer` (found by driving it):
            // `Origin: null` and `Sec-Fetch-Site: same-origin`. A null origin without that header is refused.
            var browser = Self.formHeaders
            browser[.origin] = "null"
            let nullOnly = try await client.executeRequest(uri: "/console/sign-in", method: .post, headers: browser, body: Self.form(["token": Self.token]))
            #expect(nullOnly.status == .forbidden)
            browser[HTTPField.Name("Sec-Fetch-Site")!] = "same-origin"
            let fromForm = try await client.executeRequest(uri: "/console/sign-in", method: .post, headers: browser, body: Self.form(["token": Self.token]))
            #expect(fromForm.status == .seeOther && fromForm.headers[.setCookie] != nil)
            var crossSiteFetch = Self.formHeaders
            crossSiteFetch[HTTPField.Name("Sec-Fetch-Site")!] = "cross-site"
            let crossSiteForm = try await client.executeRequest(uri: "/console/sign-in", method: .post, headers: crossSiteFetch, body: Self.form(["token": Self.token]))
            #expect(crossSiteForm.status == .forbidden)

            let right = try await client.executeRequest(uri: "/console/sign-in", method: .post, headers: Self.formHeaders, body: Self.form(["token": Self.token]))
            #expect(right.status == .seeOther && right.headers[.location] == "/console")
            let cookie = try #require(right.headers[.setCookie])
            #expect(Self.attributes(cookie) == ["Path=/console", "Max-Age=43200", "HttpOnly", "SameSite=Strict"])
            #expect(!cookie.contains("Secure"), "served over plain HTTP with no proxy saying otherwise")
            #expect(!cookie.contains(Self.token), "the cookie is a signed session, not the token")

            var behindTLS = Self.formHeaders
            behindTLS[HTTPField.Name("X-Forwarded-Proto")!] = "https"
            let secure = try await client.executeRequest(uri: "/console/sign-in", method: .post, headers: behindTLS, body: Self.form(["token": Self.token]))
            #expect(Self.attributes(secure.headers[.setCookie] ?? "").contains("Secure"))

            let session = String(cookie.prefix { $0 != ";" })
            let overview = try await client.executeRequest(uri: "/console", method: .get, headers: [.cookie: session], body: nil)
            #expect(overview.status == .ok && String(buffer: overview.body).contains("<h1>Overview</h1>"))

            // A forged, altered or expired session is no session.
            let value = String(session.dropFirst("koala_console=".count))
            let altered = String(value.dropLast()) + (value.last == "0" ? "1" : "0")
            let expired = ConsoleSessions(adminToken: Self.token).start(now: Date().addingTimeInterval(-13 * 3600))
            let otherToken = ConsoleSessions(adminToken: "another-admin-token-0123456789").start()
            for bad in [altered, expired, otherToken, "v1.99999999999.00000000000000000000000000000000.00", ""] {
                let refused = try await client.executeRequest(uri: "/console", method: .get, headers: [.cookie: "koala_console=\(bad)"], body: nil)
                #expect(refused.status == .seeOther && refused.headers[.location] == "/console/sign-in", "\(bad)")
            }
        }
    }

    @Test func signingOutNeedsTheCSRFTokenAndEndsTheSession() async throws {
        let (app, _) = try await app()
        try await app.test(.live) { client in
            let cookie = try await Self.signIn(client)
            var headers = Self.formHeaders
            headers[.cookie] = cookie
            for fields in [[:], ["csrf": "0123"]] {
                let refused = try await client.executeRequest(uri: "/console/sign-out", method: .post, headers: headers, body: Self.form(fields))
                #expect(refused.status == .forbidden)
            }
            #expect(try await client.executeRequest(uri: "/console", method: .get, headers: [.cookie: cookie], body: nil).status == .ok)

            let html = String(buffer: try await client.executeRequest(uri: "/console", method: .get, headers: [.cookie: cookie], body: nil).body)
            let marker = #"name="csrf" value=""#
            let start = try #require(html.range(of: marker)).upperBound
            let csrf = String(html[start...].prefix { $0 != "\"" })
            #expect(csrf.count == 64)

            var crossSite = headers
            crossSite[HTTPField.Name("Sec-Fetch-Site")!] = "cross-site"
            let forged = try await client.executeRequest(uri: "/console/sign-out", method: .post, headers: crossSite, body: Self.form(["csrf": csrf]))
            #expect(forged.status == .forbidden)

            let out = try await client.executeRequest(uri: "/console/sign-out", method: .post, headers: headers, body: Self.form(["csrf": csrf]))
            #expect(out.status == .seeOther && out.headers[.location] == "/console/sign-in")
            let cleared = out.headers[.setCookie] ?? ""
            #expect(cleared.hasPrefix("koala_console=;") && Self.attributes(cleared).isSuperset(of: ["Path=/console", "Max-Age=0", "HttpOnly", "SameSite=Strict"]))
            // The old cookie no longer opens the console.
            let after = try await client.executeRequest(uri: "/console", method: .get, headers: [.cookie: cookie], body: nil)
            #expect(after.status == .seeOther)
        }
    }

    @Test func theOverviewShowsSourcesRulesDeliveryAndTheQueue() async throws {
        let (app, components) = try await app()
        try await app.test(.live) { client in
            let body = invoicePaid(id: "evt_console_1", email: "ada@acme.io")
            #expect(try await client.executeRequest(uri: "/webhooks/stripe", method: .post, headers: stripeHeaders(body), body: ByteBuffer(bytes: body)).status == .ok)
            let forged = invoicePaid(id: "evt_console_2", email: "ada@acme.io")
            let mismatch = try await client.executeRequest(uri: "/webhooks/stripe", method: .post, headers: stripeHeaders(forged, secret: "whsec_wrong"),
                                                           body: ByteBuffer(bytes: forged))
            #expect(mismatch.status == .unauthorized)
            components.rules.recordReloadFailure("/routes/stripe.yaml:3:7: <script>alert(1)</script> is not a route")

            let cookie = try await Self.signIn(client)
            let page = try await client.executeRequest(uri: "/console", method: .get, headers: [.cookie: cookie], body: nil)
            let html = String(buffer: page.body)
            #expect(html.contains(#"<tr><th scope="row">stripe</th><td data-label="State"><span class="ok">enabled</span></td>"#))
            #expect(html.contains(#"<td data-label="Stored, hour / day">1 / 1</td>"#), "one stripe webhook stored in the hour and the day")
            #expect(html.contains(#"<td data-label="Refused, last hour"><span class="bad">signature mismatch</span> 1</td>"#))
            #expect(html.contains(#"<th scope="row">paddle</th><td data-label="State"><span class="bad">disabled</span>: set PADDLE_WEBHOOK_SECRET"#))
            #expect(html.contains("<code>\(components.rules.table.version)</code>"))
            #expect(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !html.contains("<script>"), "the reload error is shown as text")
            #expect(html.contains("<dt>Pending</dt><dd>"))
            #expect(html.contains(#"<th scope="row">koala</th>"#))
            #expect(html.contains(" UTC</time> ("), "times in UTC with their age")
        }
    }

    @Test func theOverviewShowsTheLastReconcileAndItsCorrections() async throws {
        let (app, components) = try await app()
        try await app.test(.live) { client in
            let cookie = try await Self.signIn(client)
            var html = String(buffer: try await client.executeRequest(uri: "/console", method: .get, headers: [.cookie: cookie], body: nil).body)
            #expect(html.contains("No reconcile yet."))
            // What `koala-router reconcile stripe` keeps in the store (here as another process would have written it).
            try await components.store.saveProgress(name: Backfill.lastReconcileName("stripe"),
                                                    value: #"{"objects":20,"corrections":2,"messages":5}"#, at: Date())
            try await components.store.saveProgress(name: "backfill:paddle:customers", value: "ctm_<b>", at: Date())
            html = String(buffer: try await client.executeRequest(uri: "/console", method: .get, headers: [.cookie: cookie], body: nil).body)
            #expect(html.contains(#"<th scope="row">stripe</th><td data-label="Last reconcile">"#))
            #expect(html.contains(#"<td data-label="Objects read">20</td><td data-label="Corrections"><span class="warn">2</span> (webhooks were missed)</td>"#))
            #expect(html.contains("backfill:paddle:customers: stopped or running, next page after <code>ctm_&lt;b&gt;</code>"))
        }
    }

    @Test func theRulesPageListsRoutesAndRunsTheRuleTests() async throws {
        let (app, components) = try await app()
        try await app.test(.live) { client in
            let cookie = try await Self.signIn(client)
            let html = String(buffer: try await client.executeRequest(uri: "/console/rules", method: .get, headers: [.cookie: cookie], body: nil).body)
            #expect(html.contains("<code>\(components.rules.table.version)</code>"))
            #expect(html.contains(#"<p class="ok">"#) && html.contains("passed, 0 failed (run just now"), "the shipped rule tests pass")
            #expect(html.contains(#"<tr><th scope="row">payment-succeeded</th><td data-label="Where"><code>"#))
            #expect(html.contains("stripe.yaml:") && html.contains("<code>invoice.paid</code>"))
            #expect(html.contains(#"<h2 id="src-paddle">paddle</h2>"#) && html.contains("set PADDLE_WEBHOOK_SECRET"))
        }
    }

    @Test func htmlEscapesMarkupQuotesAndInvisibleCharacters() {
        #expect(HTML.text(#"<img src=x onerror="alert(1)">'&"#) == "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&#39;&amp;")
        #expect(HTML.text("admin\u{202E}gnp.exe\u{200B}\u{0}") == "admin\\u{202E}gnp.exe\\u{200B}\\u{0}")
        #expect(HTML.text("line one\nline two\ttab") == "line one\nline two\ttab")
        #expect(HTML.age(0.5) == "just now" && HTML.age(42) == "42 s ago" && HTML.age(300) == "5 min ago" && HTML.age(-7200) == "in 2 h")
    }

    /// The templates escape every value, and every name a template reads is a property some view declares (a
    /// misspelt name would render as nothing, silently).
    @Test func everyTemplateEscapesAndReadsOnlyDeclaredNames() throws {
        let folder = repositoryRoot + "/Sources/KoalaApp/Console"
        var declared: Set<String> = []
        for file in try FileManager.default.contentsOfDirectory(atPath: folder) where file.hasSuffix(".swift") {
            let text = try String(contentsOfFile: folder + "/" + file, encoding: .utf8)
            for match in text.matches(of: /(?:let|var) (\w+)\s*[:=]/) { declared.insert(String(match.output.1)) }
        }
        #expect(ConsoleTemplates.sources.count >= 12)
        for (name, text) in ConsoleTemplates.sources {
            #expect(ConsoleTemplates.unescapedTags(in: text).isEmpty, "\(name) has an unescaped tag")
            for tag in text.matches(of: /\{\{([#^]?)\s*([A-Za-z][\w.]*)\s*\}\}/) {
                for part in tag.output.2.split(separator: ".") {
                    let known = declared.contains(String(part))
                    #expect(known, "template \(name) reads '\(tag.output.2)', which no console view declares")
                }
            }
        }
        #expect(ConsoleTemplates.unescapedTags(in: "<p>{{{raw}}}</p>") == ["{{{"] && ConsoleTemplates.unescapedTags(in: "{{& raw}}") == ["{{&"])
        // Rendering: markup in a value is text, in the layout's title as in a page.
        let page = ConsoleTemplates.render(NoticeView(layout: .signedOut("<b>t</b>"), alert: "<script>x</script>\u{202E}"))
        #expect(page.contains("<title>&lt;b&gt;t&lt;/b&gt; · koala-router</title>") && page.contains("&lt;script&gt;x&lt;/script&gt;\\u{202E}"))
    }
}

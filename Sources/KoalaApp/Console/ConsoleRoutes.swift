import Foundation
import HTTPTypes
import Hummingbird
import KoalaCore
import KoalaDelivery
import KoalaStore
import Logging
import NIOCore

/// The ops console at `/console`, on only when `KOALA_ROUTER_ADMIN_TOKEN` is set (as the admin API): sign in
/// with the token, then server-rendered pages that work without JavaScript. Every value shown is escaped
/// (`HTML.text`); every page carries a strict Content-Security-Policy (styles from our origin only, no script,
/// no frames); every state-changing request is a POST from our own origin carrying the session's CSRF token.
struct Console: Sendable {
    let components: RouterComponents
    let sessions: ConsoleSessions
    /// The rule files' folder (its `tests/` are run by the rules page).
    let routesDirectory: String
    let logger: Logger

    static let securityHeaders: HTTPFields = [
        .contentSecurityPolicy: "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        HTTPField.Name("X-Frame-Options")!: "DENY",
        HTTPField.Name("Referrer-Policy")!: "no-referrer",
        HTTPField.Name("X-Content-Type-Options")!: "nosniff",
        HTTPField.Name("Cross-Origin-Opener-Policy")!: "same-origin",
        .cacheControl: "no-store",
    ]

    func addRoutes(to router: Router<RouterRequestContext>) {
        router.get("/console/assets/console.css") { _, _ -> Response in
            var headers = Self.securityHeaders
            headers[.contentType] = "text/css; charset=utf-8"
            headers[.cacheControl] = "max-age=3600"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: ConsoleAssets.css)))
        }
        router.get("/console/sign-in") { request, _ -> Response in
            if await session(request) != nil { return redirect("/console") }
            return signInPage(status: .ok, problem: nil)
        }
        router.post("/console/sign-in") { request, context -> Response in
            guard sameOrigin(request) else { return forbidden("This form must be sent from the console's own page.") }
            let guards = components.guards, client = guards.client(request, context)
            // Wrong tokens count per client with the admin API's: past the limit, nothing is compared until it refills.
            if let retryAfter = guards.adminFailures.retryAfter(client.text) {
                var response = signInPage(status: .tooManyRequests,
                                          problem: "Too many wrong tokens from this address: try again in \(retryAfter) s.")
                response.headers[.retryAfter] = String(retryAfter)
                return response
            }
            let form = try await Self.form(request)
            guard let token = form["token"], sessions.isAdminToken(token) else {
                guards.adminFailures.failed(client.text)
                guards.rejections.warning("console sign-in refused: wrong admin token", key: "sign-in", client: client, metadata: [:])
                return signInPage(status: .unauthorized, problem: "That is not the admin token. Use the value of KOALA_ROUTER_ADMIN_TOKEN.")
            }
            var response = redirect("/console")
            response.headers[.setCookie] = cookie(sessions.start(), maxAge: Int(sessions.lifetime), request: request)
            return response
        }
        router.post("/console/sign-out") { request, _ -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            guard sameOrigin(request), session.acceptsCSRF(try await Self.form(request)["csrf"]) else {
                return forbidden("The form's CSRF token is missing or wrong: reload the page and try again.")
            }
            return signedOut(everywhere: false, stored: await sessions.revoke(session), request: request)
        }
        router.post("/console/sign-out-everywhere") { request, _ -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            guard sameOrigin(request), session.acceptsCSRF(try await Self.form(request)["csrf"]) else {
                return forbidden("The form's CSRF token is missing or wrong: reload the page and try again.")
            }
            logger.notice("console: every session signed out")
            return signedOut(everywhere: true, stored: await sessions.revokeAll(), request: request)
        }
        router.get("/console") { request, _ -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            return page(title: "Overview", current: "/console", session: session, body: try await overview(session: session))
        }
        router.get("/console/webhooks") { request, _ -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            return page(title: "Webhooks", current: "/console/webhooks", session: session, body: try await webhooksPage(Self.parameters(request)))
        }
        router.get("/console/rules") { request, _ -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            return page(title: "Rules", current: "/console/rules", session: session, body: rulesPage())
        }
        router.get("/console/dead-letters") { request, _ -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            return page(title: "Dead letters", current: "/console/dead-letters", session: session, body: try await deadLettersPage(Self.parameters(request)))
        }
        router.get("/console/dead-letters/confirm") { request, _ -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            return page(title: "Confirm", current: "/console/dead-letters", session: session,
                        body: try await confirmPage(Self.parameters(request), session: session))
        }
        for action in ["retry", "drop"] {
            router.post("/console/dead-letters/\(action)") { request, _ -> Response in
                guard let session = await session(request) else { return redirect("/console/sign-in") }
                let form = try await Self.form(request)
                guard sameOrigin(request), session.acceptsCSRF(form["csrf"]) else {
                    return forbidden("The form's CSRF token is missing or wrong: reload the page and try again.")
                }
                switch try await act(action, form: form) {
                case .success(let next): return redirect(next)
                case .failure(let error):
                    var response = page(title: "Refused", current: "/console/dead-letters", session: session,
                                        body: "<p class=\"error\" role=\"alert\">\(HTML.text(error.body ?? "refused"))</p>")
                    response.status = .badRequest
                    return response
                }
            }
        }
        router.get("/console/webhooks/:source/:id") { request, context -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            // The router matches the raw path: a parameter still holds its escapes (`%3A`, `%2F`, `%25`, `%C3%BC`).
            return try await webhookPage(source: Self.decodedParameter(context.parameters.get("source")),
                                         webhookID: Self.decodedParameter(context.parameters.get("id")), session: session)
        }
        // The same page by query, for ids a browser would resolve away as a path (`.`, `..`).
        router.get("/console/webhook") { request, _ -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            let parameters = Self.parameters(request)
            return try await webhookPage(source: parameters["source"], webhookID: parameters["id"], session: session)
        }
    }

    // MARK: Pages

    /// One stored webhook's page, or a 404 page saying it is not (or no longer) stored.
    func webhookPage(source: String?, webhookID: String?, session: ConsoleSessions.Session) async throws -> Response {
        let source = source ?? "", id = webhookID ?? ""
        guard !source.isEmpty, !id.isEmpty, let body = try await webhookPage(source: source, webhookID: id) else {
            var response = page(title: "Not found", current: "", session: session,
                                body: "<h1>Not found</h1><p>No stored webhook \(HTML.text(source))/\(HTML.text(id)): it may have been pruned after the retention period.</p>")
            response.status = .notFound
            return response
        }
        return page(title: "Webhook \(id)", current: "/console/webhooks", session: session, body: body)
    }

    func overview(session: ConsoleSessions.Session, now: Date = Date()) async throws -> String {
        let table = components.rules.table
        let names = table.sources.keys.sorted()
        let activity = (try? await components.store.sourceActivity(sources: names, now: now)) ?? [:]
        let queue = try? await components.store.queueStats(now: now)
        var html = "<h1>Overview</h1>"

        html += "<section aria-labelledby=\"sources\"><h2 id=\"sources\">Sources</h2><div class=\"scroll\"><table class=\"rows\">"
        html += "<thead><tr><th scope=\"col\">Source</th><th scope=\"col\">State</th><th scope=\"col\">Last webhook stored</th>"
        html += "<th scope=\"col\">Stored, hour / day</th><th scope=\"col\">Refused, last hour</th><th scope=\"col\">Refused, last day</th></tr></thead><tbody>"
        for name in names {
            let state: String
            switch table.sources[name]!.state {
            case .enabled: state = "<span class=\"ok\">enabled</span>"
            case .disabled(let reason):
                let prefix = "source '\(name)' is disabled: "
                state = "<span class=\"bad\">disabled</span>: " + HTML.text(reason.hasPrefix(prefix) ? String(reason.dropFirst(prefix.count)) : reason)
            }
            let stored = activity[name] ?? SourceActivity()
            html += "<tr><th scope=\"row\">\(HTML.text(name))</th>" + cell("State", state) + cell("Last webhook stored", HTML.time(stored.lastReceived, now: now))
            html += cell("Stored, hour / day", "\(stored.lastHour) / \(stored.lastDay)")
            html += cell("Refused, last hour", refusals(name, within: 3600, now: now)) + cell("Refused, last day", refusals(name, within: 86400, now: now)) + "</tr>"
        }
        let unknown = components.metrics.recent.counts(source: "unknown", within: 86400, now: now)[.unknownSource] ?? 0
        html += "</tbody></table></div>"
        html += "<p class=\"muted\">Stored counts come from the database (every replica). Refusals are counted by this replica since it started"
        html += unknown > 0 ? "; \(unknown) requests in the last day named no known source.</p>" : ".</p>"
        html += "</section>"

        html += "<section aria-labelledby=\"rules\"><h2 id=\"rules\">Rules</h2><dl>"
        html += "<dt>Version</dt><dd><code>\(HTML.text(table.version))</code>, loaded \(HTML.time(components.rules.loadedAt, now: now))</dd>"
        html += "<dt>Last reload</dt><dd>"
        if let error = components.rules.lastReloadError {
            html += "<span class=\"bad\">refused</span> \(HTML.time(components.rules.lastReloadAttempt, now: now)); the rules above stay in use:<pre>\(HTML.text(error))</pre>"
        } else if let attempt = components.rules.lastReloadAttempt {
            html += "<span class=\"ok\">loaded</span> \(HTML.time(attempt, now: now))"
        } else {
            html += "none since start"
        }
        html += "</dd></dl></section>"

        html += "<section aria-labelledby=\"delivery\"><h2 id=\"delivery\">Delivery</h2><div class=\"scroll\"><table class=\"rows\">"
        html += "<thead><tr><th scope=\"col\">Destination</th><th scope=\"col\">Circuit</th><th scope=\"col\">Last success</th><th scope=\"col\">Last error</th></tr></thead><tbody>"
        for sender in [components.sender] + components.destinationSenders {
            let health = sender.health.snapshot
            var circuit = health.isOpen ? "<span class=\"bad\">open</span>" : "<span class=\"ok\">closed</span>"
            if let refusing = health.refusing { circuit += ": refusing, " + HTML.text(refusing) }
            if let next = health.nextProbe { circuit += "; next probe " + HTML.time(next, now: now) }
            if health.consecutiveFailures > 0 { circuit += "; \(health.consecutiveFailures) failures in a row" }
            let success = health.lastSuccess.map { HTML.time($0, now: now) } ?? "never"
            let error = health.lastError.map(HTML.text) ?? "<span class=\"muted\">none</span>"
            html += "<tr><th scope=\"row\">\(HTML.text(sender.destination.rawValue))</th>" + cell("Circuit", circuit) + cell("Last success", success)
            html += cell("Last error", error) + "</tr>"
        }
        html += "</tbody></table></div></section>"

        html += "<section aria-labelledby=\"queue\"><h2 id=\"queue\">Queue</h2>"
        if let queue {
            html += "<dl><dt>Pending</dt><dd>\(queue.pending)</dd>"
            html += "<dt>Oldest pending</dt><dd>\(queue.pending > 0 ? HTML.age(queue.oldestPendingAge) : "none")</dd>"
            html += "<dt>Waiting for an identity</dt><dd>\(queue.waiting)</dd>"
            html += "<dt>Dead letters</dt><dd\(queue.dead > 0 ? " class=\"warn\"" : "")>\(queue.dead)"
            html += queue.dead > 0 ? " (<a href=\"/console/dead-letters\">see them</a>)</dd></dl>" : "</dd></dl>"
        } else {
            html += "<p class=\"bad\">The store did not answer: see /readyz and the logs.</p>"
        }
        html += "</section>"

        html += await backfillSection(now: now)

        html += "<section aria-labelledby=\"sessions\"><h2 id=\"sessions\">Sessions</h2>"
        html += "<p>Signed in \(HTML.time(session.issuedAt, now: now)); this session ends \(HTML.time(session.expires, now: now)). "
        html += "Signing out everywhere ends every console session on every replica, this one too (after a lost laptop, or when the token may have leaked: then change it too).</p>"
        html += "<form method=\"post\" action=\"/console/sign-out-everywhere\"><input type=\"hidden\" name=\"csrf\" value=\"\(HTML.text(session.csrf))\">"
        html += "<button type=\"submit\">Sign out everywhere</button></form></section>"
        return html
    }

    /// The last reconcile of each source (from the store: every replica's and the CLI's) and any backfill or
    /// reconcile that stopped before its last page (its cursor is still stored).
    func backfillSection(now: Date) async -> String {
        var html = "<section aria-labelledby=\"reconcile\"><h2 id=\"reconcile\">Backfill and reconcile</h2>"
        guard let entries = try? await components.store.progress(prefix: "") else {
            return html + "<p class=\"bad\">The store did not answer.</p></section>"
        }
        let last = entries.filter { $0.name.hasPrefix(Backfill.lastReconcileName("")) }
        let running = entries.filter { $0.name.hasPrefix("backfill:") || $0.name.hasPrefix("reconcile:") }
        if last.isEmpty {
            html += "<p class=\"muted\">No reconcile yet. <code>koala-router reconcile SOURCE</code> compares a provider's current state with "
            html += "the one known and sends only corrections; <code>KOALA_ROUTER_RECONCILE_INTERVAL_H</code> runs it on a schedule.</p>"
        } else {
            html += "<div class=\"scroll\"><table class=\"rows\"><thead><tr><th scope=\"col\">Source</th><th scope=\"col\">Last reconcile</th>"
            html += "<th scope=\"col\">Objects read</th><th scope=\"col\">Corrections</th><th scope=\"col\">Messages</th></tr></thead><tbody>"
            for entry in last {
                let source = String(entry.name.dropFirst(Backfill.lastReconcileName("").count))
                let summary = (try? JSONValue.parse(Array(entry.value.utf8))) ?? .null
                let corrections = summary["corrections"]?.textValue ?? "?"
                let flagged = corrections != "0" && corrections != "?"
                html += "<tr><th scope=\"row\">\(HTML.text(source))</th>" + cell("Last reconcile", HTML.time(Date(timeIntervalSince1970: entry.updatedAt), now: now))
                html += cell("Objects read", HTML.text(summary["objects"]?.textValue ?? "?"))
                html += cell("Corrections", flagged ? "<span class=\"warn\">\(HTML.text(corrections))</span> (webhooks were missed)" : HTML.text(corrections))
                html += cell("Messages", HTML.text(summary["messages"]?.textValue ?? "?")) + "</tr>"
            }
            html += "</tbody></table></div>"
        }
        for entry in running {
            html += "<p>\(HTML.text(entry.name)): stopped or running, next page after <code>\(HTML.text(entry.value))</code> "
            html += "(\(HTML.time(Date(timeIntervalSince1970: entry.updatedAt), now: now))); the same command continues it.</p>"
        }
        return html + "</section>"
    }

    /// A table cell labelled with its column (shown as the label on a phone, where rows become cards).
    func cell(_ label: String, _ html: String) -> String { "<td data-label=\"\(HTML.text(label))\">\(html)</td>" }

    /// `signature mismatch 3, stale timestamp 1`, or `none`.
    func refusals(_ source: String, within seconds: TimeInterval, now: Date) -> String {
        let counts = components.metrics.recent.counts(source: source, within: seconds, now: now)
            .filter { $0.key != .accepted && $0.key != .duplicate && $0.value > 0 }
        guard !counts.isEmpty else { return "<span class=\"muted\">none</span>" }
        return counts.sorted { ($0.value, $1.key.rawValue) > ($1.value, $0.key.rawValue) }
            .map { "<span class=\"bad\">\(HTML.text($0.key.rawValue.replacingOccurrences(of: "_", with: " ")))</span> \($0.value)" }
            .joined(separator: ", ")
    }

    func signInPage(status: HTTPResponse.Status, problem: String?) -> Response {
        var body = "<main class=\"signin\"><section><h1>koala-router console</h1>"
        if let problem { body += "<p class=\"error\" role=\"alert\">\(HTML.text(problem))</p>" }
        body += """
            <form method="post" action="/console/sign-in">
            <label for="token">Admin token</label>
            <input type="password" id="token" name="token" autocomplete="current-password" required autofocus>
            <button type="submit">Sign in</button>
            </form></section></main>
            """
        return htmlResponse(status, document(title: "Sign in", content: body))
    }

    func page(title: String, current: String, session: ConsoleSessions.Session, body: String) -> Response {
        let links = [("/console", "Overview"), ("/console/webhooks", "Webhooks"), ("/console/dead-letters", "Dead letters"), ("/console/rules", "Rules")]
        var header = "<header><span class=\"brand\">koala-router</span><nav aria-label=\"Console\"><ul>"
        for (path, label) in links {
            header += "<li><a href=\"\(path)\"\(path == current ? " aria-current=\"page\"" : "")>\(HTML.text(label))</a></li>"
        }
        header += "</ul></nav>"
        header += "<form class=\"inline\" method=\"post\" action=\"/console/sign-out\"><input type=\"hidden\" name=\"csrf\" value=\"\(HTML.text(session.csrf))\">"
        header += "<button type=\"submit\" class=\"link\">Sign out</button></form></header>"
        return htmlResponse(.ok, document(title: title, content: header + "<main>" + body + "</main>"))
    }

    func document(title: String, content: String) -> String {
        """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(HTML.text(title)) · koala-router</title><link rel="stylesheet" href="/console/assets/console.css"></head>
        <body>\(content)</body></html>
        """
    }

    // MARK: HTTP

    /// The request's session, if its cookie holds a valid one that was not signed out.
    func session(_ request: Request) async -> ConsoleSessions.Session? {
        await sessions.session(request.cookies[ConsoleSessions.cookieName]?.value)
    }

    /// After a sign-out: the cookie cleared, and the sign-in page; it says so when the store could not record the
    /// sign-out (then only this replica refuses the session until it expires).
    func signedOut(everywhere: Bool, stored: Bool, request: Request) -> Response {
        var response: Response
        if stored {
            response = redirect("/console/sign-in")
        } else {
            response = signInPage(status: .serviceUnavailable, problem: "Signed out on this replica only: the database did not answer, so "
                + (everywhere ? "other sessions" : "this session") + " may still work on other replicas until it expires. Try again when the store is back.")
        }
        response.headers[.setCookie] = cookie("", maxAge: 0, request: request)
        return response
    }

    func htmlResponse(_ status: HTTPResponse.Status, _ html: String) -> Response {
        var headers = Self.securityHeaders
        headers[.contentType] = "text/html; charset=utf-8"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    func redirect(_ location: String) -> Response {
        var headers = Self.securityHeaders
        headers[.location] = location
        return Response(status: .seeOther, headers: headers)
    }

    func forbidden(_ message: String) -> Response {
        htmlResponse(.forbidden, document(title: "Refused", content: "<main><p class=\"error\" role=\"alert\">\(HTML.text(message))</p><p><a href=\"/console\">Back to the console</a></p></main>"))
    }

    /// The session cookie: HttpOnly, SameSite=Strict, scoped to /console, Secure when the request came over
    /// TLS (a proxy in front says so with `X-Forwarded-Proto: https` or `Forwarded: proto=https`).
    func cookie(_ value: String, maxAge: Int, request: Request) -> String {
        var cookie = "\(ConsoleSessions.cookieName)=\(value); Path=/console; Max-Age=\(maxAge); HttpOnly; SameSite=Strict"
        if Self.overTLS(request.headers) { cookie += "; Secure" }
        return cookie
    }

    static func overTLS(_ headers: HTTPFields) -> Bool {
        if headers[HTTPField.Name("X-Forwarded-Proto")!]?.lowercased().split(separator: ",").first?.trimmingCharacters(in: .whitespaces) == "https" {
            return true
        }
        return headers[HTTPField.Name("Forwarded")!]?.lowercased().contains("proto=https") ?? false
    }

    /// A POST from a page of ours: a browser says where a form came from with `Sec-Fetch-Site` or `Origin`;
    /// a cross-site one is refused even before its CSRF token is looked at. `Sec-Fetch-Site` decides when
    /// present: under our `Referrer-Policy: no-referrer` a browser sends `Origin: null` with its own forms.
    func sameOrigin(_ request: Request) -> Bool {
        if let site = request.headers[HTTPField.Name("Sec-Fetch-Site")!] { return site == "same-origin" || site == "none" }
        guard let origin = request.headers[.origin] else { return true }
        guard let host = request.head.authority ?? request.headers[HTTPField.Name("Host")!] else { return false }
        return origin == "http://\(host)" || origin == "https://\(host)"
    }

    /// The query string's parameters (the last of a repeated name).
    static func parameters(_ request: Request) -> [String: String] {
        var parameters: [String: String] = [:]
        for (name, value) in request.uri.queryParameters { parameters[String(name)] = String(value) }
        return parameters
    }

    /// A form body (`application/x-www-form-urlencoded`, at most 16 KB).
    static func form(_ request: Request) async throws -> [String: String] {
        var request = request
        let buffer = try await request.collectBody(upTo: 16 * 1024)
        var fields: [String: String] = [:]
        for pair in String(buffer: buffer).split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String { String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "" }
            fields[decode(parts[0])] = parts.count > 1 ? decode(parts[1]) : ""
        }
        return fields
    }
}

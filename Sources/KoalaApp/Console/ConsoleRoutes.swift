import Foundation
import HTTPTypes
import Hummingbird
import KoalaCore
import KoalaDelivery
import KoalaStore
import Logging
import NIOCore

import Foundation
import HTTPTypes
import Hummingbird
import KoalaCore
import KoalaDelivery
import KoalaStore
import Logging
import NIOCore

/// What the console reads and may change, and nothing else of the service: the rules in use, the store's
/// operator and waiting roles, each destination's health, this replica's recent refusals, and the client guards
/// that count wrong tokens.
struct ConsoleData: Sendable {
    /// A destination and how it is answering.
    struct Delivery: Sendable {
        let destination: Destination
        let health: DeliveryHealth
    }

    let rules: RulesHolder
    let store: any OperatorStore & WaitingStore
    /// Koala first, then each Segment-compatible destination.
    let deliveries: [Delivery]
    let recent: RecentOutcomes
    let guards: ClientGuards

    init(rules: RulesHolder, store: any OperatorStore & WaitingStore, deliveries: [Delivery], recent: RecentOutcomes, guards: ClientGuards) {
        self.rules = rules
        self.store = store
        self.deliveries = deliveries
        self.recent = recent
        self.guards = guards
    }

    init(_ components: RouterComponents) {
        self.init(rules: components.rules, store: components.store,
                  deliveries: ([components.sender] + components.destinationSenders).map { Delivery(destination: $0.destination, health: $0.health) },
                  recent: components.metrics.recent, guards: components.guards)
    }
}

/// The fields any console form may carry (`application/x-www-form-urlencoded`, decoded by Hummingbird).
struct ConsoleForm: Decodable, Sendable {
    var token: String?
    var csrf: String?
    var id: String?
    var destination: String?
    var source: String?
    var route: String?
    var reason: String?
    var since: String?
    var until: String?

    /// The dead-letter filter's fields by name.
    var filter: [String: String] {
        var fields: [String: String] = [:]
        for (name, value) in [("id", id), ("destination", destination), ("source", source), ("route", route), ("reason", reason),
                              ("since", since), ("until", until)] {
            if let value { fields[name] = value }
        }
        return fields
    }
}

/// The console's response headers on every response under `/console`: a strict Content-Security-Policy (styles
/// from our origin only, no script, no frames), no framing, no referrer, no sniffing, no caching unless the
/// route says otherwise.
struct ConsoleHeadersMiddleware<Context: RequestContext>: RouterMiddleware {
    static var headers: HTTPFields {
        [
            .contentSecurityPolicy: "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            HTTPField.Name("X-Frame-Options")!: "DENY",
            HTTPField.Name("Referrer-Policy")!: "no-referrer",
            HTTPField.Name("X-Content-Type-Options")!: "nosniff",
            HTTPField.Name("Cross-Origin-Opener-Policy")!: "same-origin",
            .cacheControl: "no-store",
        ]
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        for field in Self.headers where response.headers[field.name] == nil {
            response.headers.append(field)
        }
        return response
    }
}

/// The ops console at `/console`, on only when `KOALA_ROUTER_ADMIN_TOKEN` is set (as the admin API): sign in
/// with the token, then server-rendered pages that work without JavaScript. Pages are Mustache templates that
/// escape every value (`ConsoleTemplates`); every response carries the console's security headers
/// (`ConsoleHeadersMiddleware`); every state-changing request is a POST from our own origin carrying the
/// session's CSRF token.
struct Console: Sendable {
    let data: ConsoleData
    let sessions: ConsoleSessions
    /// The rule files' folder (its `tests/` are run by the rules page).
    let routesDirectory: String
    let logger: Logger

    func addRoutes(to router: Router<RouterRequestContext>) {
        let console = router.group("console").add(middleware: ConsoleHeadersMiddleware())
        console.get("assets/console.css") { _, _ -> Response in
            let headers: HTTPFields = [.contentType: "text/css; charset=utf-8", .cacheControl: "max-age=3600"]
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: ConsoleAssets.css)))
        }
        console.get("sign-in") { request, _ -> Response in
            if await session(request) != nil { return redirect("/console") }
            return html(.ok, SignInView(problem: nil))
        }
        console.post("sign-in") { request, context -> Response in
            guard sameOrigin(request) else { return forbidden("This form must be sent from the console's own page.") }
            let guards = data.guards, client = guards.client(request, context)
            // Wrong tokens count per client with the admin API's: past the limit, nothing is compared until it refills.
            if let retryAfter = guards.adminFailures.retryAfter(client.text) {
                var response = html(.tooManyRequests, SignInView(problem: "Too many wrong tokens from this address: try again in \(retryAfter) s."))
                response.headers[.retryAfter] = String(retryAfter)
                return response
            }
            guard let token = try await Self.form(request).token, sessions.isAdminToken(token) else {
                guards.adminFailures.failed(client.text)
                guards.rejections.warning("console sign-in refused: wrong admin token", key: "sign-in", client: client, metadata: [:])
                return html(.unauthorized, SignInView(problem: "That is not the admin token. Use the value of KOALA_ROUTER_ADMIN_TOKEN."))
            }
            var response = redirect("/console")
            response.setCookie(cookie(sessions.start(), maxAge: Int(sessions.lifetime), request: request))
            return response
        }
        console.post("sign-out") { request, _ -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            guard sameOrigin(request), session.acceptsCSRF(try await Self.form(request).csrf) else {
                return forbidden("The form's CSRF token is missing or wrong: reload the page and try again.")
            }
            return signedOut(everywhere: false, stored: await sessions.revoke(session), request: request)
        }
        console.post("sign-out-everywhere") { request, _ -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            guard sameOrigin(request), session.acceptsCSRF(try await Self.form(request).csrf) else {
                return forbidden("The form's CSRF token is missing or wrong: reload the page and try again.")
            }
            logger.notice("console: every session signed out")
            return signedOut(everywhere: true, stored: await sessions.revokeAll(), request: request)
        }
        console.get { request, _ -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            return html(.ok, try await overview(session: session))
        }
        console.get("webhooks") { request, _ -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            return html(.ok, try await webhooksPage(Self.parameters(request), session: session))
        }
        console.get("rules") { request, _ -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            return html(.ok, rulesPage(session: session))
        }
        console.get("dead-letters") { request, _ -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            return html(.ok, try await deadLettersPage(Self.parameters(request), session: session))
        }
        console.get("dead-letters/confirm") { request, _ -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            return html(.ok, try await confirmPage(Self.parameters(request), session: session))
        }
        for action in ["retry", "drop"] {
            console.post("dead-letters/\(action)") { request, _ -> Response in
                guard let session = await session(request) else { return redirect("/console/sign-in") }
                let form = try await Self.form(request)
                guard sameOrigin(request), session.acceptsCSRF(form.csrf) else {
                    return forbidden("The form's CSRF token is missing or wrong: reload the page and try again.")
                }
                switch try await act(action, form: form.filter) {
                case .success(let next): return redirect(next)
                case .failure(let error):
                    return html(.badRequest, NoticeView(layout: .signedIn("Refused", current: "/console/dead-letters", csrf: session.csrf),
                                                        alert: error.body ?? "refused"))
                }
            }
        }
        console.get("webhooks/:source/:id") { request, context -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            // The router matches the raw path: a parameter still holds its escapes (`%3A`, `%2F`, `%25`, `%C3%BC`).
            return try await webhookPage(source: Self.decodedParameter(context.parameters.get("source")),
                                         webhookID: Self.decodedParameter(context.parameters.get("id")), session: session)
        }
        // The same page by query, for ids a browser would resolve away as a path (`.`, `..`).
        console.get("webhook") { request, _ -> Response in
            guard let session = await session(request) else { return redirect("/console/sign-in") }
            let parameters = Self.parameters(request)
            return try await webhookPage(source: parameters["source"], webhookID: parameters["id"], session: session)
        }
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
            response = html(.serviceUnavailable, SignInView(problem: "Signed out on this replica only: the database did not answer, so "
                + (everywhere ? "other sessions" : "this session") + " may still work on other replicas until it expires. Try again when the store is back."))
        }
        response.setCookie(cookie("", maxAge: 0, request: request))
        return response
    }

    /// A page rendered by its template.
    func html<View: ConsoleView>(_ status: HTTPResponse.Status, _ view: View) -> Response {
        Response(status: status, headers: [.contentType: "text/html; charset=utf-8"],
                 body: .init(byteBuffer: ByteBuffer(string: ConsoleTemplates.render(view))))
    }

    func redirect(_ location: String) -> Response {
        Response(status: .seeOther, headers: [.location: location])
    }

    func forbidden(_ message: String) -> Response {
        html(.forbidden, NoticeView(layout: .signedOut("Refused"), alert: message, backLink: true))
    }

    /// The session cookie: HttpOnly, SameSite=Strict, scoped to /console, Secure when the request came over
    /// TLS (a proxy in front says so with `X-Forwarded-Proto: https` or `Forwarded: proto=https`).
    func cookie(_ value: String, maxAge: Int, request: Request) -> Cookie {
        Cookie(name: ConsoleSessions.cookieName, value: value, maxAge: maxAge, path: "/console", secure: Self.overTLS(request.headers),
               httpOnly: true, sameSite: .strict)
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

    /// A form body (`application/x-www-form-urlencoded`, at most 16 KB), decoded by Hummingbird; a body that does
    /// not decode reads as an empty form (which then fails its CSRF or token check).
    static func form(_ request: Request) async throws -> ConsoleForm {
        var request = request
        let buffer = try await request.collectBody(upTo: 16 * 1024)
        return (try? URLEncodedFormDecoder().decode(ConsoleForm.self, from: String(buffer: buffer))) ?? ConsoleForm()
    }
}

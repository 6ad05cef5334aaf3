import Foundation
import HTTPTypes
import Hummingbird
import KoalaCore
import KoalaDelivery
import KoalaStore

/// A count of a webhook's messages in one state (`2 delivered`).
struct StateCount {
    let count: Int
    let state: String
    let stateClass: String
}

/// The webhook listing: the filter form, and the problems with it or one page of webhooks.
struct WebhooksView: ConsoleView {
    /// One page of webhooks.
    struct Listing {
        /// A webhook's row.
        struct Row {
            let receivedAt: TimeView
            let source: String
            let eventType: String
            let link: String
            let webhookID: String
            let messages: [StateCount]
        }

        let heading: String
        let rows: [Row]
        let hasRows: Bool
        let shown: Int
        let millis: Int
        /// The next page's link, when there is one.
        let older: String?
        /// The first page's link, when this is not it.
        let newest: String?
    }

    static let template = "webhooks"
    static let text = """
        {{<layout}}{{$content}}<h1>Webhooks</h1>{{#form}}{{> filterForm}}{{/form}}\
        {{#problems}}{{#first()}}<p class="error" role="alert">{{/first()}}{{^first()}}<br>{{/first()}}{{.}}{{#last()}}</p>{{/last()}}{{/problems}}\
        {{#listing}}{{^hasRows}}<p>No stored webhook matches.</p>{{/hasRows}}{{#hasRows}}<section aria-labelledby="list"><h2 id="list">{{heading}}</h2>\
        <div class="scroll"><table class="rows"><thead><tr><th scope="col">Received</th><th scope="col">Source</th>\
        <th scope="col">Type</th><th scope="col">Webhook id</th><th scope="col">Messages</th></tr></thead><tbody>
        {{#rows}}<tr><td data-label="Received">{{#receivedAt}}{{> time}}{{/receivedAt}}</td><td data-label="Source">{{source}}</td>\
        <td data-label="Type"><code>{{eventType}}</code></td><td data-label="Webhook id"><a href="{{link}}">{{webhookID}}</a></td>\
        <td data-label="Messages">{{#messages}}{{^first()}}, {{/first()}}<span class="{{stateClass}}">{{count}} {{state}}</span>{{/messages}}\
        {{^messages}}<span class="muted">none</span>{{/messages}}</td></tr>
        {{/rows}}</tbody></table></div></section>{{/hasRows}}\
        <p class="muted">{{shown}} shown, read in {{millis}} ms.{{#older}} <a href="{{.}}" rel="next">Older webhooks</a>{{/older}}\
        {{#newest}} <a href="{{.}}">Newest</a>{{/newest}}</p>{{/listing}}{{/content}}{{/layout}}
        """

    let layout: Layout
    let form: FilterForm
    var problems: [String] = []
    /// nil when the filters had problems.
    var listing: Listing? = nil
}

/// One stored webhook: what it is, its messages, how today's rules route it, its headers and payload.
struct WebhookView: ConsoleView {
    /// One message it produced.
    struct Message {
        let destination: String
        let route: String
        let endpoint: String
        let state: String
        let stateClass: String
        let nextTry: TimeView?
        let finished: TimeView?
        let attempts: Int
        let deadReason: String?
        let deadDetail: String?
        let lastError: String?
        let messageID: String
    }

    /// A route of today's rules and what it made of the webhook.
    struct RouteResult {
        /// A message it would send.
        struct Routed {
            let output: String
            let path: String
            let messageID: String
            let note: String?
        }

        let matched: Bool
        let route: String
        let reason: String
        let routed: [Routed]
    }

    /// A stored header.
    struct Header {
        let name: String
        let value: String
    }

    static let template = "webhook"
    static let text = """
        {{<layout}}{{$content}}<h1>Webhook <code>{{webhookID}}</code></h1>
        <section aria-labelledby="about"><h2 id="about">About</h2><dl>\
        <dt>Source</dt><dd>{{source}}</dd><dt>Type</dt><dd><code>{{eventType}}</code></dd>\
        <dt>Event time</dt><dd>{{#eventTime}}{{> time}}{{/eventTime}}{{^eventTime}}never{{/eventTime}}</dd>\
        <dt>Received</dt><dd>{{#receivedAt}}{{> time}}{{/receivedAt}}</dd>\
        <dt>Verified with</dt><dd><code>{{secretLabel}}</code></dd>\
        <dt>Rules</dt><dd>routed by <code>{{rulesVersion}}</code>; the explanation below uses today's <code>{{todaysVersion}}</code></dd></dl></section>
        <section aria-labelledby="messages"><h2 id="messages">Messages</h2>{{^hasMessages}}<p>It produced no message.</p>{{/hasMessages}}\
        {{#hasMessages}}<div class="scroll"><table class="rows"><thead><tr><th scope="col">Destination</th><th scope="col">Route</th>\
        <th scope="col">State</th><th scope="col">Attempts</th><th scope="col">Last answer</th><th scope="col">message_id</th></tr></thead><tbody>
        {{#messages}}<tr><td data-label="Destination">{{destination}}</td><td data-label="Route">{{route}} → {{endpoint}}</td>\
        <td data-label="State"><span class="{{stateClass}}">{{state}}</span>{{#nextTry}}, next try {{> time}}{{/nextTry}}{{#finished}} {{> time}}{{/finished}}</td>\
        <td data-label="Attempts">{{attempts}}</td>\
        <td data-label="Last answer">{{#deadReason}}{{.}}{{#deadDetail}}<pre>{{.}}</pre>{{/deadDetail}}{{/deadReason}}\
        {{^deadReason}}{{#lastError}}{{.}}{{/lastError}}{{^lastError}}<span class="muted">none</span>{{/lastError}}{{/deadReason}}</td>\
        <td data-label="message_id"><code>{{messageID}}</code></td></tr>
        {{/messages}}</tbody></table></div>{{/hasMessages}}</section>
        <section aria-labelledby="routing"><h2 id="routing">Routing explanation</h2>\
        {{#unexplained}}<p class="warn">The source '{{source}}' is not in today's rules: nothing to explain.</p>{{/unexplained}}\
        {{^unexplained}}<ul class="routes">{{#explanation}}<li>{{#matched}}<span class="ok">✓ matched</span>{{/matched}}\
        {{^matched}}<span class="muted">✗ not matched</span>{{/matched}} <strong>{{route}}</strong>: {{reason}}\
        {{#routed}}{{#first()}}<ul>{{/first()}}<li>{{output}} → {{path}} <code>{{messageID}}</code>{{#note}} ({{.}}){{/note}}</li>{{#last()}}</ul>{{/last()}}{{/routed}}</li>\
        {{/explanation}}</ul>{{#noRoute}}<p>No route of today's rules takes this type.</p>{{/noRoute}}{{/unexplained}}</section>
        <section aria-labelledby="headers"><h2 id="headers">Headers</h2>\
        <p class="muted">As stored: credential headers (signatures, tokens, passwords) are dropped before storing, so they are never shown.</p><dl>\
        {{#headers}}<dt>{{name}}</dt><dd><code>{{value}}</code></dd>{{/headers}}</dl></section>
        <section aria-labelledby="payload"><h2 id="payload">Payload</h2><pre>{{payload}}</pre></section>{{/content}}{{/layout}}
        """

    let layout: Layout
    let webhookID: String
    let source: String
    let eventType: String
    let eventTime: TimeView?
    let receivedAt: TimeView
    let secretLabel: String
    let rulesVersion: String
    let todaysVersion: String
    let messages: [Message]
    let hasMessages: Bool
    /// nil when the source is not in today's rules.
    let explanation: [RouteResult]?
    let unexplained: Bool
    let noRoute: Bool
    let headers: [Header]
    let payload: String
}

/// The console's webhook pages: the list (filters, search by id or email, a cursor for the next page) and
/// one webhook (its headers, payload, routing explanation and messages).
extension Console {
    static let pageSize = 50

    /// A listing's filters, read from the query string; every problem is named for the person who typed it.
    struct WebhookFilters {
        var source: String?
        var query = WebhookQuery()
        var email: String?
        var after: WebhookCursor?
        var problems: [String] = []
        var raw: [String: String] = [:]

        init(_ parameters: [String: String], sources: [String], now: Date = Date()) {
            func value(_ name: String) -> String? {
                guard let v = parameters[name]?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
                raw[name] = v
                return v
            }
            if let s = value("source") {
                if sources.contains(s) { source = s } else { problems.append("source: no source named '\(s)'") }
            }
            query.eventType = value("type")
            if let state = value("state") {
                switch state {
                case "none": query.noMessages = true
                default:
                    if let status = OutboxStatus.allCases.first(where: { $0.name == state }) { query.state = status }
                    else { problems.append("state: expected pending, delivered, dead, dry_run or none, got '\(state)'") }
                }
            }
            for name in ["since", "until"] {
                guard let text = value(name) else { continue }
                guard let date = parseTimeArgument(text, now: now) else {
                    problems.append("\(name): expected an ISO-8601 time (2026-11-30T09:00:00Z) or an age (90s, 30m, 2h, 7d), got '\(text)'")
                    continue
                }
                if name == "since" { query.since = date } else { query.until = date }
            }
            if let q = value("q") {
                if q.contains("@") { email = q.lowercased() } else { query.webhookID = q }
            }
            if let text = value("after") {
                let parts = text.split(separator: "~", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
                if parts.count == 3, let at = Double(parts[0]), at.isFinite { after = WebhookCursor(receivedAt: at, source: parts[1], webhookID: parts[2]) }
                else { problems.append("after: not a page cursor; start again from the first page") }
            }
        }

        /// The query string of this listing with `after` set to `cursor`.
        func link(after cursor: WebhookCursor?) -> String {
            var fields = raw.filter { $0.key != "after" }
            if let cursor { fields["after"] = "\(cursor.receivedAt)~\(cursor.source)~\(cursor.webhookID)" }
            return "/console/webhooks" + (fields.isEmpty ? "" : "?" + Console.queryString(fields))
        }
    }

    func webhooksPage(_ parameters: [String: String], session: ConsoleSessions.Session, now: Date = Date()) async throws -> WebhooksView {
        let sources = data.rules.table.sources.keys.sorted()
        let filters = WebhookFilters(parameters, sources: sources, now: now)
        let form = FilterForm(action: "/console/webhooks", prefix: "f", fields: [
            .text("q", "Webhook id or email", "evt_… or ada@acme.io", in: filters.raw),
            .select("source", "Source", sources, in: filters.raw),
            .text("type", "Type", "invoice.paid", in: filters.raw),
            .select("state", "Messages", ["pending", "delivered", "dead", "dry_run", "none"], in: filters.raw),
            .text("since", "Since", "24h or 2026-11-30T09:00:00Z", in: filters.raw),
            .text("until", "Until", "1h", in: filters.raw),
        ])
        var view = WebhooksView(layout: .signedIn("Webhooks", current: "/console/webhooks", csrf: session.csrf), form: form)
        guard filters.problems.isEmpty else {
            view.problems = filters.problems
            return view
        }
        let started = ContinuousClock.now
        var rows: [WebhookSummary]
        var more = false
        if let email = filters.email {
            rows = try await data.store.webhooks(email: email, limit: 500)
                .filter { filters.source == nil || $0.source == filters.source }
        } else {
            // Each source's newest (an index range scan each), merged: one page and whether another follows.
            var merged: [WebhookSummary] = []
            for source in filters.source.map({ [$0] }) ?? sources {
                merged += try await data.store.webhooks(source: source, matching: filters.query, after: filters.after, limit: Self.pageSize + 1)
            }
            merged.sort { $0.cursor < $1.cursor }
            more = merged.count > Self.pageSize
            rows = Array(merged.prefix(Self.pageSize))
        }
        let took = ContinuousClock.now - started
        view.listing = WebhooksView.Listing(
            heading: filters.email.map { "Webhooks that produced a message for \($0)" } ?? "Newest first",
            rows: rows.map { row in
                .init(receivedAt: TimeView(row.receivedAt, now: now), source: row.source, eventType: row.eventType,
                      link: Self.webhookLink(source: row.source, webhookID: row.webhookID), webhookID: row.webhookID,
                      messages: Self.messageCounts(row.messages))
            },
            hasRows: !rows.isEmpty,
            shown: rows.count, millis: Int(took.components.seconds * 1000 + took.components.attoseconds / 1_000_000_000_000_000),
            older: more ? rows.last.map { filters.link(after: $0.cursor) } : nil,
            newest: filters.after != nil ? filters.link(after: nil) : nil)
        return view
    }

    /// `2 delivered, 1 dead` as counts with their classes; empty for none.
    static func messageCounts(_ counts: [OutboxStatus: Int]) -> [StateCount] {
        OutboxStatus.allCases.compactMap { status in counts[status].map { StateCount(count: $0, state: status.name, stateClass: stateClass(status)) } }
    }

    static func stateClass(_ status: OutboxStatus) -> String {
        switch status {
        case .delivered: "ok"
        case .dead: "bad"
        case .pending, .waiting: "warn"
        case .dryRun: "muted"
        }
    }

    // MARK: One webhook

    /// One stored webhook's page, or a 404 page saying it is not (or no longer) stored.
    func webhookPage(source: String?, webhookID: String?, session: ConsoleSessions.Session) async throws -> Response {
        let source = source ?? "", id = webhookID ?? ""
        guard !source.isEmpty, !id.isEmpty, let view = try await webhookView(source: source, webhookID: id, session: session) else {
            return html(.notFound, NoticeView(layout: .signedIn("Not found", current: "", csrf: session.csrf), heading: "Not found",
                                              paragraph: "No stored webhook \(source)/\(id): it may have been pruned after the retention period."))
        }
        return html(.ok, view)
    }

    func webhookView(source: String, webhookID: String, session: ConsoleSessions.Session, now: Date = Date()) async throws -> WebhookView? {
        let store = data.store
        guard let webhook = try await store.storedWebhook(source: source, webhookID: webhookID) else { return nil }
        let table = data.rules.table
        let messages = try await store.messages(source: source, webhookID: webhookID).map { m in
            WebhookView.Message(destination: m.destination.rawValue, route: m.route, endpoint: m.endpoint.rawValue, state: m.state.name,
                                stateClass: Self.stateClass(m.state),
                                nextTry: m.state == .pending ? TimeView.of(m.nextAttemptAt, now: now) : nil,
                                finished: TimeView.of(m.finishedAt, now: now), attempts: m.attempts, deadReason: m.deadReason,
                                deadDetail: m.deadDetail.map { LogText.bounded($0, limit: 4096) },
                                lastError: m.lastError.map { LogText.bounded($0, limit: 4096) }, messageID: m.messageID)
        }
        var explanation: [WebhookView.RouteResult]?
        if let definition = table.sources[source] {
            let router = WebhookRouter(source: definition)
            let recalled = (try? await store.recall(source: source, keys: router.recallKeys(webhook))) ?? [:]
            let routing = router.routing(webhook, memory: webhook.memoryAsRouted(recalled), destinations: data.deliveries.map(\.destination))
            explanation = routing.results.map { result in
                .init(matched: result.matched, route: result.route, reason: result.reason, routed: result.messages.map { m in
                    var note: String?
                    if let problem = m.problem { note = "dead letter: \(problem)" }
                    if let waits = m.waitingFor { note = "waits for \(waits.namespace) '\(waits.key)'" }
                    return .init(output: m.output.rawValue, path: m.endpoint.path, messageID: m.messageID, note: note)
                })
            }
        }
        return WebhookView(
            layout: .signedIn("Webhook \(webhookID)", current: "/console/webhooks", csrf: session.csrf),
            webhookID: webhookID, source: source, eventType: webhook.eventType, eventTime: TimeView.of(webhook.eventTime, now: now),
            receivedAt: TimeView(webhook.receivedAt, now: now), secretLabel: webhook.secretLabel, rulesVersion: webhook.rulesVersion,
            todaysVersion: table.version, messages: messages, hasMessages: !messages.isEmpty,
            explanation: explanation, unexplained: explanation == nil, noRoute: explanation?.isEmpty ?? false,
            headers: webhook.headers.sorted { $0.key < $1.key }.map { .init(name: $0.key, value: LogText.bounded($0.value, limit: 2048)) },
            payload: Self.pretty(webhook.body))
    }

    /// The payload indented for reading (keys sorted); a body that is not JSON is shown as it came.
    static func pretty(_ body: [UInt8]) -> String {
        if let object = try? JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed]),
           let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes, .fragmentsAllowed]),
           let text = String(data: data, encoding: .utf8) {
            return text
        }
        return String(decoding: body, as: UTF8.self)
    }

    /// A value as one path segment or query value: every byte of its UTF-8 outside RFC 3986's unreserved
    /// characters (ASCII letters, digits, `-._~`) percent-encoded, so `/`, `%`, `:`, spaces and non-ASCII text
    /// survive the round trip through a link (`webhookPath` decodes them).
    static func pathComponent(_ value: String) -> String {
        var out = ""
        out.reserveCapacity(value.utf8.count)
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += "%" + String(byte >> 4, radix: 16, uppercase: true) + String(byte & 0xF, radix: 16, uppercase: true)
            }
        }
        return out
    }

    /// The console's page of one stored webhook: `/console/webhooks/<source>/<id>`, each part percent-encoded.
    /// An id that is a dot segment (`.`, `..`, even escaped) would be resolved away by the browser, so those
    /// pages are linked by query instead (`/console/webhook?source=…&id=…`).
    static func webhookLink(source: String, webhookID: String) -> String {
        let dots: Set<String> = [".", ".."]
        if dots.contains(source) || dots.contains(webhookID) {
            return "/console/webhook?" + queryString(["source": source, "id": webhookID])
        }
        return "/console/webhooks/\(pathComponent(source))/\(pathComponent(webhookID))"
    }

    /// A path parameter as the router hands it (still percent-encoded) decoded to the text it stands for; nil
    /// when its escapes are not valid UTF-8.
    static func decodedParameter(_ raw: String?) -> String? {
        guard let raw else { return nil }
        return raw.removingPercentEncoding
    }

    static func queryString(_ fields: [String: String]) -> String {
        fields.sorted { $0.key < $1.key }.map { "\(pathComponent($0.key))=\(pathComponent($0.value))" }.joined(separator: "&")
    }
}

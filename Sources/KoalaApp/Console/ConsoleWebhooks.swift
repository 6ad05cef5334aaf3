import Foundation
import HTTPTypes
import Hummingbird
import KoalaCore
import KoalaDelivery
import KoalaStore

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

    func webhooksPage(_ parameters: [String: String], now: Date = Date()) async throws -> String {
        let table = components.rules.table
        let sources = table.sources.keys.sorted()
        let filters = WebhookFilters(parameters, sources: sources, now: now)
        var html = "<h1>Webhooks</h1>" + filterForm(filters, sources: sources)
        if !filters.problems.isEmpty {
            return html + "<p class=\"error\" role=\"alert\">\(filters.problems.map(HTML.text).joined(separator: "<br>"))</p>"
        }
        let started = ContinuousClock.now
        var rows: [WebhookSummary]
        var more = false
        if let email = filters.email {
            rows = try await components.store.webhooks(email: email, limit: 500)
                .filter { filters.source == nil || $0.source == filters.source }
        } else {
            // Each source's newest (an index range scan each), merged: one page and whether another follows.
            var merged: [WebhookSummary] = []
            for source in filters.source.map({ [$0] }) ?? sources {
                merged += try await components.store.webhooks(source: source, matching: filters.query, after: filters.after, limit: Self.pageSize + 1)
            }
            merged.sort { $0.cursor < $1.cursor }
            more = merged.count > Self.pageSize
            rows = Array(merged.prefix(Self.pageSize))
        }
        let took = ContinuousClock.now - started
        if rows.isEmpty {
            html += "<p>No stored webhook matches.</p>"
        } else {
            html += "<section aria-labelledby=\"list\"><h2 id=\"list\">\(filters.email == nil ? "Newest first" : "Webhooks that produced a message for \(HTML.text(filters.email!))")</h2>"
            html += "<div class=\"scroll\"><table class=\"rows\"><thead><tr><th scope=\"col\">Received</th><th scope=\"col\">Source</th>"
            html += "<th scope=\"col\">Type</th><th scope=\"col\">Webhook id</th><th scope=\"col\">Messages</th></tr></thead><tbody>"
            for row in rows {
                let link = Self.webhookLink(source: row.source, webhookID: row.webhookID)
                html += "<tr><td data-label=\"Received\">\(HTML.time(row.receivedAt, now: now))</td>" + cell("Source", HTML.text(row.source))
                html += cell("Type", "<code>\(HTML.text(row.eventType))</code>")
                html += cell("Webhook id", "<a href=\"\(HTML.text(link))\">\(HTML.text(row.webhookID))</a>")
                html += cell("Messages", Self.messageSummary(row.messages)) + "</tr>"
            }
            html += "</tbody></table></div></section>"
        }
        let millis = Double(took.components.attoseconds / 1_000_000_000_000_000 + took.components.seconds * 1000)
        html += "<p class=\"muted\">\(rows.count) shown, read in \(Int(millis)) ms."
        if more, let last = rows.last { html += " <a href=\"\(HTML.text(filters.link(after: last.cursor)))\" rel=\"next\">Older webhooks</a>" }
        if filters.after != nil { html += " <a href=\"\(HTML.text(filters.link(after: nil)))\">Newest</a>" }
        return html + "</p>"
    }

    func filterForm(_ filters: WebhookFilters, sources: [String]) -> String {
        func input(_ name: String, _ label: String, _ hint: String) -> String {
            "<div><label for=\"f-\(name)\">\(label)</label><br><input type=\"text\" id=\"f-\(name)\" name=\"\(name)\" value=\"\(HTML.text(filters.raw[name] ?? ""))\" placeholder=\"\(HTML.text(hint))\"></div>"
        }
        func select(_ name: String, _ label: String, _ options: [String]) -> String {
            var html = "<div><label for=\"f-\(name)\">\(label)</label><br><select id=\"f-\(name)\" name=\"\(name)\"><option value=\"\">any</option>"
            for option in options {
                html += "<option\(filters.raw[name] == option ? " selected" : "")>\(HTML.text(option))</option>"
            }
            return html + "</select></div>"
        }
        return "<form class=\"filters\" method=\"get\" action=\"/console/webhooks\" role=\"search\">"
            + input("q", "Webhook id or email", "evt_… or ada@acme.io")
            + select("source", "Source", sources)
            + input("type", "Type", "invoice.paid")
            + select("state", "Messages", ["pending", "delivered", "dead", "dry_run", "none"])
            + input("since", "Since", "24h or 2026-11-30T09:00:00Z")
            + input("until", "Until", "1h")
            + "<div><button type=\"submit\">Filter</button> <a href=\"/console/webhooks\">Clear</a></div></form>"
    }

    /// `2 delivered, 1 dead`, or `none`.
    static func messageSummary(_ counts: [OutboxStatus: Int]) -> String {
        guard !counts.isEmpty else { return "<span class=\"muted\">none</span>" }
        return OutboxStatus.allCases.compactMap { status in
            counts[status].map { "<span class=\"\(Self.stateClass(status))\">\($0) \(HTML.text(status.name))</span>" }
        }.joined(separator: ", ")
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

    func webhookPage(source: String, webhookID: String, now: Date = Date()) async throws -> String? {
        let store = components.store
        guard let webhook = try await store.storedWebhook(source: source, webhookID: webhookID) else { return nil }
        let table = components.rules.table
        var html = "<h1>Webhook <code>\(HTML.text(webhookID))</code></h1>"
        html += "<section aria-labelledby=\"about\"><h2 id=\"about\">About</h2><dl>"
        html += "<dt>Source</dt><dd>\(HTML.text(source))</dd><dt>Type</dt><dd><code>\(HTML.text(webhook.eventType))</code></dd>"
        html += "<dt>Event time</dt><dd>\(HTML.time(webhook.eventTime, now: now))</dd>"
        html += "<dt>Received</dt><dd>\(HTML.time(webhook.receivedAt, now: now))</dd>"
        html += "<dt>Verified with</dt><dd><code>\(HTML.text(webhook.secretLabel))</code></dd>"
        html += "<dt>Rules</dt><dd>routed by <code>\(HTML.text(webhook.rulesVersion))</code>; the explanation below uses today's <code>\(HTML.text(table.version))</code></dd>"
        html += "</dl></section>"

        let messages = try await store.messages(source: source, webhookID: webhookID)
        html += "<section aria-labelledby=\"messages\"><h2 id=\"messages\">Messages</h2>"
        if messages.isEmpty {
            html += "<p>It produced no message.</p>"
        } else {
            html += "<div class=\"scroll\"><table class=\"rows\"><thead><tr><th scope=\"col\">Destination</th><th scope=\"col\">Route</th>"
            html += "<th scope=\"col\">State</th><th scope=\"col\">Attempts</th><th scope=\"col\">Last answer</th><th scope=\"col\">message_id</th></tr></thead><tbody>"
            for m in messages {
                var state = "<span class=\"\(Self.stateClass(m.state))\">\(HTML.text(m.state.name))</span>"
                if m.state == .pending, let next = m.nextAttemptAt { state += ", next try " + HTML.time(next, now: now) }
                if let finished = m.finishedAt { state += " " + HTML.time(finished, now: now) }
                var answer = "<span class=\"muted\">none</span>"
                if let reason = m.deadReason {
                    answer = HTML.text(reason) + (m.deadDetail.map { "<pre>\(HTML.text(LogText.bounded($0, limit: 4096)))</pre>" } ?? "")
                } else if let error = m.lastError {
                    answer = HTML.text(LogText.bounded(error, limit: 4096))
                }
                html += "<tr><td data-label=\"Destination\">\(HTML.text(m.destination.rawValue))</td>" + cell("Route", HTML.text(m.route) + " → " + HTML.text(m.endpoint.rawValue))
                html += cell("State", state) + cell("Attempts", "\(m.attempts)") + cell("Last answer", answer)
                html += cell("message_id", "<code>\(HTML.text(m.messageID))</code>") + "</tr>"
            }
            html += "</tbody></table></div>"
        }
        html += "</section>"

        html += "<section aria-labelledby=\"routing\"><h2 id=\"routing\">Routing explanation</h2>"
        if let definition = table.sources[source] {
            let router = WebhookRouter(source: definition)
            let recalled = (try? await store.recall(source: source, keys: router.recallKeys(webhook))) ?? [:]
            let destinations = [Destination.koala] + components.destinationSenders.map(\.destination)
            let routing = router.routing(webhook, memory: webhook.memoryAsRouted(recalled), destinations: destinations)
            html += "<ul class=\"routes\">"
            for result in routing.results {
                html += "<li><span class=\"\(result.matched ? "ok" : "muted")\">\(result.matched ? "✓ matched" : "✗ not matched")</span> "
                html += "<strong>\(HTML.text(result.route))</strong>: \(HTML.text(result.reason))"
                if !result.messages.isEmpty {
                    html += "<ul>" + result.messages.map { m in
                        var note = ""
                        if let problem = m.problem { note = " (dead letter: \(HTML.text(problem)))" }
                        if let waits = m.waitingFor { note = " (waits for \(HTML.text(waits.namespace)) '\(HTML.text(waits.key))')" }
                        return "<li>\(HTML.text(m.output.rawValue)) → \(HTML.text(m.endpoint.path)) <code>\(HTML.text(m.messageID))</code>\(note)</li>"
                    }.joined() + "</ul>"
                }
                html += "</li>"
            }
            html += "</ul>"
            if routing.results.isEmpty { html += "<p>No route of today's rules takes this type.</p>" }
        } else {
            html += "<p class=\"warn\">The source '\(HTML.text(source))' is not in today's rules: nothing to explain.</p>"
        }
        html += "</section>"

        html += "<section aria-labelledby=\"headers\"><h2 id=\"headers\">Headers</h2>"
        html += "<p class=\"muted\">As stored: credential headers (signatures, tokens, passwords) are dropped before storing, so they are never shown.</p><dl>"
        for (name, value) in webhook.headers.sorted(by: { $0.key < $1.key }) {
            html += "<dt>\(HTML.text(name))</dt><dd><code>\(HTML.text(LogText.bounded(value, limit: 2048)))</code></dd>"
        }
        html += "</dl></section>"

        html += "<section aria-labelledby=\"payload\"><h2 id=\"payload\">Payload</h2><pre>\(HTML.text(Self.pretty(webhook.body)))</pre></section>"
        return html
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

import Foundation
import HTTPTypes
import Hummingbird
import KoalaCore
import KoalaDelivery
import KoalaStore
import Logging

/// The console's dead letters: filtered like `koala-router dead-letters`, with retry and drop for one or for
/// everything a filter matches, each behind a confirmation page (a GET that changes nothing) whose form
/// POSTs with the session's CSRF token.
extension Console {
    static let filterNames = ["id", "destination", "source", "route", "reason", "since", "until"]

    /// The filter's fields as given (for links and hidden form fields).
    static func filterFields(_ parameters: [String: String]) -> [String: String] {
        var fields: [String: String] = [:]
        for name in filterNames {
            if let value = parameters[name]?.trimmingCharacters(in: .whitespaces), !value.isEmpty { fields[name] = value }
        }
        return fields
    }

    static func parseFilter(_ fields: [String: String]) -> Result<DeadLetterFilter, HTTPError> {
        Result { () throws(HTTPError) in try deadLetterFilter(ids: fields["id"].map { [$0] } ?? []) { fields[$0] } }
    }

    func deadLettersPage(_ parameters: [String: String], now: Date = Date()) async throws -> String {
        let fields = Self.filterFields(parameters)
        var html = "<h1>Dead letters</h1>"
        if let done = parameters["done"], let (verb, count) = Self.doneMessage(done) {
            html += "<p class=\"notice\" role=\"status\">\(verb.capitalized) \(count) dead letter\(count == 1 ? "" : "s")"
            html += verb == "retried" ? ": queued again with the same message ids and a fresh retry budget.</p>" : ".</p>"
        }
        html += deadLetterForm(fields)
        let filter: DeadLetterFilter
        switch Self.parseFilter(fields) {
        case .success(let f): filter = f
        case .failure(let error): return html + "<p class=\"error\" role=\"alert\">\(HTML.text(error.body ?? "bad filter"))</p>"
        }
        let letters = try await components.store.deadLetters(matching: filter, limit: 201)
        if letters.isEmpty { return html + "<p>No dead letter matches.</p>" }
        let shown = letters.prefix(200)
        let query = fields.isEmpty ? "" : "&" + Self.queryString(fields)
        html += "<p>\(letters.count > 200 ? "More than 200" : "\(letters.count)") match. "
        html += "<a href=\"/console/dead-letters/confirm?action=retry\(HTML.text(query))\">Retry all that match</a>"
        if !fields.isEmpty { html += " · <a href=\"/console/dead-letters/confirm?action=drop\(HTML.text(query))\">Drop all that match</a>" }
        html += "</p><section aria-labelledby=\"letters\"><h2 id=\"letters\">Newest first</h2><div class=\"scroll\"><table class=\"rows\"><thead><tr>"
        html += "<th scope=\"col\">Failed</th><th scope=\"col\">Destination</th><th scope=\"col\">Webhook</th><th scope=\"col\">Route</th>"
        html += "<th scope=\"col\">Reason</th><th scope=\"col\">message_id</th><th scope=\"col\">Act</th></tr></thead><tbody>"
        for letter in shown {
            let webhook = Self.webhookLink(source: letter.source, webhookID: letter.webhookID)
            let one = Self.queryString(["id": letter.messageID, "destination": letter.destination.rawValue])
            var reason = HTML.text(letter.reason)
            if let detail = letter.detail { reason += "<pre>\(HTML.text(LogText.bounded(detail, limit: 2048)))</pre>" }
            html += "<tr><td data-label=\"Failed\">\(HTML.time(letter.failedAt, now: now))</td>" + cell("Destination", HTML.text(letter.destination.rawValue))
            html += cell("Webhook", "\(HTML.text(letter.source)) <a href=\"\(HTML.text(webhook))\">\(HTML.text(letter.webhookID))</a>")
            html += cell("Route", HTML.text(letter.route)) + cell("Reason", reason) + cell("message_id", "<code>\(HTML.text(letter.messageID))</code>")
            html += cell("Act", "<a href=\"/console/dead-letters/confirm?action=retry&amp;\(HTML.text(one))\">Retry</a> · "
                         + "<a href=\"/console/dead-letters/confirm?action=drop&amp;\(HTML.text(one))\">Drop</a>") + "</tr>"
        }
        return html + "</tbody></table></div></section>"
    }

    func deadLetterForm(_ fields: [String: String]) -> String {
        func input(_ name: String, _ label: String, _ hint: String) -> String {
            "<div><label for=\"d-\(name)\">\(label)</label><br><input type=\"text\" id=\"d-\(name)\" name=\"\(name)\" value=\"\(HTML.text(fields[name] ?? ""))\" placeholder=\"\(HTML.text(hint))\"></div>"
        }
        return "<form class=\"filters\" method=\"get\" action=\"/console/dead-letters\" role=\"search\">"
            + input("source", "Source", "stripe") + input("route", "Route", "payment-succeeded") + input("reason", "Reason contains", "422")
            + input("destination", "Destination", Destination.allCases.map(\.rawValue).joined(separator: ", "))
            + input("since", "Since", "24h") + input("until", "Until", "1h") + input("id", "message_id", "")
            + "<div><button type=\"submit\">Filter</button> <a href=\"/console/dead-letters\">Clear</a></div></form>"
    }

    /// The confirmation: what would be retried or dropped, and the form that does it.
    func confirmPage(_ parameters: [String: String], session: ConsoleSessions.Session) async throws -> String {
        let fields = Self.filterFields(parameters)
        guard let action = parameters["action"], action == "retry" || action == "drop" else {
            return "<p class=\"error\" role=\"alert\">action must be retry or drop.</p>"
        }
        let filter: DeadLetterFilter
        switch Self.parseFilter(fields) {
        case .success(let f): filter = f
        case .failure(let error): return "<p class=\"error\" role=\"alert\">\(HTML.text(error.body ?? "bad filter"))</p>"
        }
        if action == "drop" && filter == DeadLetterFilter() {
            return "<p class=\"error\" role=\"alert\">Refusing to drop every dead letter: filter by source, route, reason, time or message_id first.</p>"
        }
        let letters = try await components.store.deadLetters(matching: filter, limit: 10_001)
        let back = "/console/dead-letters" + (fields.isEmpty ? "" : "?" + Self.queryString(fields))
        var html = "<h1>\(action == "retry" ? "Retry" : "Drop") dead letters?</h1><section>"
        guard !letters.isEmpty else { return html + "<p>No dead letter matches any more.</p><p><a href=\"\(HTML.text(back))\">Back</a></p></section>" }
        let count = letters.count > 10_000 ? "more than 10,000" : "\(letters.count)"
        html += action == "retry"
            ? "<p>\(count) dead letter\(letters.count == 1 ? "" : "s") will be queued again, with the same message ids (Koala drops a repeat) and a fresh retry budget.</p>"
            : "<p class=\"warn\">\(count) dead letter\(letters.count == 1 ? "" : "s") will be deleted. This cannot be undone.</p>"
        html += "<ul>" + letters.prefix(20).map { "<li><code>\(HTML.text($0.messageID))</code> \(HTML.text($0.source))/\(HTML.text($0.route)): \(HTML.text($0.reason))</li>" }.joined()
        if letters.count > 20 { html += "<li>…</li>" }
        html += "</ul><form method=\"post\" action=\"/console/dead-letters/\(action)\">"
        html += "<input type=\"hidden\" name=\"csrf\" value=\"\(HTML.text(session.csrf))\">"
        for (name, value) in fields.sorted(by: { $0.key < $1.key }) {
            html += "<input type=\"hidden\" name=\"\(HTML.text(name))\" value=\"\(HTML.text(value))\">"
        }
        html += "<button type=\"submit\">\(action == "retry" ? "Retry" : "Drop") \(count)</button> <a href=\"\(HTML.text(back))\">Cancel</a></form></section>"
        return html
    }

    /// Runs a confirmed retry or drop; the answer is where to go next.
    func act(_ action: String, form: [String: String]) async throws -> Result<String, HTTPError> {
        let fields = Self.filterFields(form)
        let filter: DeadLetterFilter
        switch Self.parseFilter(fields) {
        case .success(let f): filter = f
        case .failure(let error): return .failure(error)
        }
        let count: Int
        if action == "retry" {
            count = try await components.store.retryDeadLetters(matching: filter, at: Date())
        } else {
            guard filter != DeadLetterFilter() else { return .failure(HTTPError(.badRequest, message: "refusing to drop every dead letter")) }
            count = try await components.store.dropDeadLetters(matching: filter)
        }
        logger.notice("console: \(action == "retry" ? "retried" : "dropped") dead letters", metadata: [
            "count": "\(count)", "filter": "\(LogText.escaped(Self.queryString(fields)))",
        ])
        return .success("/console/dead-letters?done=\(action == "retry" ? "retried" : "dropped")-\(count)")
    }

    /// `retried-3` → ("retried", 3).
    static func doneMessage(_ text: String) -> (String, Int)? {
        let parts = text.split(separator: "-")
        guard parts.count == 2, ["retried", "dropped"].contains(String(parts[0])), let n = Int(parts[1]), n >= 0 else { return nil }
        return (String(parts[0]), n)
    }
}

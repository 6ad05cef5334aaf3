import Foundation
import HTTPTypes
import Hummingbird
import KoalaCore
import KoalaDelivery
import KoalaStore
import Logging

/// The dead letters page: the filter form, a notice after a retry or drop, and the newest 200 that match.
struct DeadLettersView: ConsoleView {
    /// The dead letters that match.
    struct Listing {
        /// A dead letter's row.
        struct Letter {
            let failedAt: TimeView
            let destination: String
            let source: String
            let webhookLink: String
            let webhookID: String
            let route: String
            let reason: String
            let detail: String?
            let messageID: String
            let retry: String
            let drop: String
        }

        let count: String
        let retryAll: String
        /// nil without a filter (dropping everything is refused).
        let dropAll: String?
        let letters: [Letter]
    }

    static let template = "deadLetters"
    static let text = """
        {{<layout}}{{$content}}<h1>Dead letters</h1>{{#done}}<p class="notice" role="status">{{.}}</p>{{/done}}{{#form}}{{> filterForm}}{{/form}}\
        {{#problem}}<p class="error" role="alert">{{.}}</p>{{/problem}}{{#noMatch}}<p>No dead letter matches.</p>{{/noMatch}}\
        {{#listing}}<p>{{count}} match. <a href="{{retryAll}}">Retry all that match</a>{{#dropAll}} · <a href="{{.}}">Drop all that match</a>{{/dropAll}}</p>\
        <section aria-labelledby="letters"><h2 id="letters">Newest first</h2><div class="scroll"><table class="rows"><thead><tr>\
        <th scope="col">Failed</th><th scope="col">Destination</th><th scope="col">Webhook</th><th scope="col">Route</th>\
        <th scope="col">Reason</th><th scope="col">message_id</th><th scope="col">Act</th></tr></thead><tbody>
        {{#letters}}<tr><td data-label="Failed">{{#failedAt}}{{> time}}{{/failedAt}}</td><td data-label="Destination">{{destination}}</td>\
        <td data-label="Webhook">{{source}} <a href="{{webhookLink}}">{{webhookID}}</a></td><td data-label="Route">{{route}}</td>\
        <td data-label="Reason">{{reason}}{{#detail}}<pre>{{.}}</pre>{{/detail}}</td><td data-label="message_id"><code>{{messageID}}</code></td>\
        <td data-label="Act"><a href="{{retry}}">Retry</a> · <a href="{{drop}}">Drop</a></td></tr>
        {{/letters}}</tbody></table></div></section>{{/listing}}{{/content}}{{/layout}}
        """

    let layout: Layout
    let form: FilterForm
    /// What the last retry or drop did.
    var done: String? = nil
    /// Why the filter cannot be used.
    var problem: String? = nil
    var noMatch = false
    var listing: Listing? = nil
}

/// The confirmation of a retry or drop: what it would change, and the POST form that does it.
struct ConfirmView: ConsoleView {
    /// What would change, and the form.
    struct Question {
        /// One dead letter of the first 20.
        struct Line {
            let messageID: String
            let source: String
            let route: String
            let reason: String
        }

        /// A filter field carried by the form.
        struct Hidden {
            let name: String
            let value: String
        }

        let heading: String
        let back: String
        let noMatch: Bool
        let retrying: Bool
        let summary: String
        let sample: [Line]
        let more: Bool
        let action: String
        let hidden: [Hidden]
        let button: String
    }

    static let template = "confirm"
    static let text = """
        {{<layout}}{{$content}}{{#problem}}<p class="error" role="alert">{{.}}</p>{{/problem}}{{#question}}<h1>{{heading}}</h1><section>\
        {{#noMatch}}<p>No dead letter matches any more.</p><p><a href="{{back}}">Back</a></p>{{/noMatch}}\
        {{^noMatch}}{{#retrying}}<p>{{summary}}</p>{{/retrying}}{{^retrying}}<p class="warn">{{summary}}</p>{{/retrying}}\
        <ul>{{#sample}}<li><code>{{messageID}}</code> {{source}}/{{route}}: {{reason}}</li>{{/sample}}{{#more}}<li>…</li>{{/more}}</ul>\
        <form method="post" action="/console/dead-letters/{{action}}"><input type="hidden" name="csrf" value="{{layout.csrf}}">\
        {{#hidden}}<input type="hidden" name="{{name}}" value="{{value}}">{{/hidden}}\
        <button type="submit">{{button}}</button> <a href="{{back}}">Cancel</a></form>{{/noMatch}}</section>{{/question}}{{/content}}{{/layout}}
        """

    let layout: Layout
    /// Why nothing can be confirmed.
    var problem: String? = nil
    var question: Question? = nil
}

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

    func deadLettersPage(_ parameters: [String: String], session: ConsoleSessions.Session, now: Date = Date()) async throws -> DeadLettersView {
        let fields = Self.filterFields(parameters)
        let form = FilterForm(action: "/console/dead-letters", prefix: "d", fields: [
            .text("source", "Source", "stripe", in: fields), .text("route", "Route", "payment-succeeded", in: fields),
            .text("reason", "Reason contains", "422", in: fields),
            .text("destination", "Destination", Destination.allCases.map(\.rawValue).joined(separator: ", "), in: fields),
            .text("since", "Since", "24h", in: fields), .text("until", "Until", "1h", in: fields), .text("id", "message_id", "", in: fields),
        ])
        var view = DeadLettersView(layout: .signedIn("Dead letters", current: "/console/dead-letters", csrf: session.csrf), form: form)
        if let done = parameters["done"], let (verb, count) = Self.doneMessage(done) {
            view.done = "\(verb.capitalized) \(count) dead letter\(count == 1 ? "" : "s")"
                + (verb == "retried" ? ": queued again with the same message ids and a fresh retry budget." : ".")
        }
        let filter: DeadLetterFilter
        switch Self.parseFilter(fields) {
        case .success(let f): filter = f
        case .failure(let error):
            view.problem = error.body ?? "bad filter"
            return view
        }
        let letters = try await data.store.deadLetters(matching: filter, limit: 201)
        let query = fields.isEmpty ? "" : "&" + Self.queryString(fields)
        view.noMatch = letters.isEmpty
        view.listing = letters.isEmpty ? nil : DeadLettersView.Listing(
            count: letters.count > 200 ? "More than 200" : "\(letters.count)",
            retryAll: "/console/dead-letters/confirm?action=retry" + query,
            dropAll: fields.isEmpty ? nil : "/console/dead-letters/confirm?action=drop" + query,
            letters: letters.prefix(200).map { letter in
                let one = Self.queryString(["id": letter.messageID, "destination": letter.destination.rawValue])
                return .init(failedAt: TimeView(letter.failedAt, now: now), destination: letter.destination.rawValue, source: letter.source,
                             webhookLink: Self.webhookLink(source: letter.source, webhookID: letter.webhookID), webhookID: letter.webhookID,
                             route: letter.route, reason: letter.reason, detail: letter.detail.map { LogText.bounded($0, limit: 2048) },
                             messageID: letter.messageID, retry: "/console/dead-letters/confirm?action=retry&" + one,
                             drop: "/console/dead-letters/confirm?action=drop&" + one)
            })
        return view
    }

    /// The confirmation: what would be retried or dropped, and the form that does it.
    func confirmPage(_ parameters: [String: String], session: ConsoleSessions.Session) async throws -> ConfirmView {
        let fields = Self.filterFields(parameters)
        var view = ConfirmView(layout: .signedIn("Confirm", current: "/console/dead-letters", csrf: session.csrf))
        guard let action = parameters["action"], action == "retry" || action == "drop" else {
            view.problem = "action must be retry or drop."
            return view
        }
        let filter: DeadLetterFilter
        switch Self.parseFilter(fields) {
        case .success(let f): filter = f
        case .failure(let error):
            view.problem = error.body ?? "bad filter"
            return view
        }
        if action == "drop" && filter == DeadLetterFilter() {
            view.problem = "Refusing to drop every dead letter: filter by source, route, reason, time or message_id first."
            return view
        }
        let letters = try await data.store.deadLetters(matching: filter, limit: 10_001)
        let count = letters.count > 10_000 ? "more than 10,000" : "\(letters.count)"
        let plural = letters.count == 1 ? "" : "s"
        view.question = ConfirmView.Question(
            heading: "\(action == "retry" ? "Retry" : "Drop") dead letters?",
            back: "/console/dead-letters" + (fields.isEmpty ? "" : "?" + Self.queryString(fields)),
            noMatch: letters.isEmpty, retrying: action == "retry",
            summary: action == "retry"
                ? "\(count) dead letter\(plural) will be queued again, with the same message ids (Koala drops a repeat) and a fresh retry budget."
                : "\(count) dead letter\(plural) will be deleted. This cannot be undone.",
            sample: letters.prefix(20).map { .init(messageID: $0.messageID, source: $0.source, route: $0.route, reason: $0.reason) },
            more: letters.count > 20, action: action,
            hidden: fields.sorted { $0.key < $1.key }.map { .init(name: $0.key, value: $0.value) },
            button: "\(action == "retry" ? "Retry" : "Drop") \(count)")
        return view
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
            count = try await data.store.retryDeadLetters(matching: filter, at: Date())
        } else {
            guard filter != DeadLetterFilter() else { return .failure(HTTPError(.badRequest, message: "refusing to drop every dead letter")) }
            count = try await data.store.dropDeadLetters(matching: filter)
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

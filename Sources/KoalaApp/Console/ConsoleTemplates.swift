import Foundation
import KoalaCore
import Mustache

/// A page's data: plain stored values (the templates read them by name), rendered by one named template.
protocol ConsoleView {
    /// The template that renders this view.
    static var template: String { get }
}

/// The console's pages as Mustache templates compiled into the binary (no files to ship beside it).
///
/// Escaping is the default and cannot be bypassed: every template renders under the `KOALA_HTML` content type,
/// whose escaping is `HTML.text` (HTML's five special characters, and control, bidi and invisible characters
/// shown as `\u{…}`), and no template may use an unescaped tag (`{{{…}}}`, `{{&…}}`): the library refuses to
/// start with one, and a test holds every template to it. Markup a page needs is in its template; values are
/// only ever text.
enum ConsoleTemplates {
    /// The content type every template renders under.
    static let contentType = "KOALA_HTML"

    /// `HTML.text` as a Mustache content type.
    struct ConsoleHTML: MustacheContentType {
        func escapeText(_ text: String) -> String { HTML.text(text) }
    }

    /// Every template by name: the pages, their shared layout (inherited with `{{<layout}}`) and partials.
    static let sources: [String: String] = {
        var all = shared
        all.merge(pages) { first, _ in first }
        return all
    }()

    /// The pages' templates, each declared beside its view.
    static let pages: [String: String] = [
        OverviewView.template: OverviewView.text,
        WebhooksView.template: WebhooksView.text,
        WebhookView.template: WebhookView.text,
        RulesView.template: RulesView.text,
        DeadLettersView.template: DeadLettersView.text,
        ConfirmView.template: ConfirmView.text,
        SignInView.template: SignInView.text,
        NoticeView.template: NoticeView.text,
    ]

    /// Problems with a template's text that would let a value through unescaped (empty when all are sound).
    static func unescapedTags(in text: String) -> [String] {
        var found: [String] = []
        for marker in ["{{{", "{{&", "{{ &", "{{=" ] where text.contains(marker) {
            found.append(marker)
        }
        return found
    }

    /// The parsed templates; built once, on the first page rendered.
    static let library: MustacheLibrary = {
        MustacheContentTypes.register(ConsoleHTML(), named: contentType)
        var library = MustacheLibrary()
        for (name, text) in sources.sorted(by: { $0.key < $1.key }) {
            // The templates are constants of this file's module: a broken one is a programming error that the
            // console tests catch, never something a request or a rule file can cause.
            precondition(unescapedTags(in: text).isEmpty, "console template \(name) has an unescaped tag")
            do {
                try library.register("{{% CONTENT_TYPE: \(contentType)}}" + text, named: name)
            } catch {
                preconditionFailure("console template \(name) does not parse: \(error)")
            }
        }
        return library
    }()

    /// `view` rendered by its template.
    static func render<View: ConsoleView>(_ view: View) -> String {
        library.render(view, withTemplate: View.template) ?? ""
    }

    /// The layout, the time partial, the filter form partial.
    static let shared: [String: String] = [
        // Every page: head, the signed-in header (when there is a session), and the page's `content` block.
        "layout": """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>{{layout.title}} · koala-router</title><link rel="stylesheet" href="/console/assets/console.css"></head>
            <body>{{#layout.csrf}}<header><span class="brand">koala-router</span><nav aria-label="Console"><ul>\
            {{#layout.nav}}<li><a href="{{path}}"{{#current}} aria-current="page"{{/current}}>{{label}}</a></li>{{/layout.nav}}</ul></nav>\
            <form class="inline" method="post" action="/console/sign-out"><input type="hidden" name="csrf" value="{{layout.csrf}}">\
            <button type="submit" class="link">Sign out</button></form></header>{{/layout.csrf}}\
            <main{{#layout.mainClass}} class="{{.}}"{{/layout.mainClass}}>{{$content}}{{/content}}</main></body></html>
            """,
        // A `TimeView`: `2026-11-30 09:12:04 UTC (3 min ago)`, machine-readable in `datetime`.
        "time": #"<time datetime="{{iso}}">{{shown}}</time> ({{age}})"#,
        // A `RulesStatus`: version, folder, last reload.
        "rulesStatus": RulesStatus.partial,
        // A `Refusals`: counts by reason.
        "refusals": Refusals.partial,
        // A `FilterForm`: a GET form of text fields and selects.
        "filterForm": """
            <form class="filters" method="get" action="{{action}}" role="search">{{#fields}}<div><label for="{{prefix}}-{{name}}">{{label}}</label><br>\
            {{#options}}{{#first()}}<select id="{{prefix}}-{{name}}" name="{{name}}"><option value="">any</option>{{/first()}}\
            <option{{#selected}} selected{{/selected}}>{{text}}</option>{{#last()}}</select>{{/last()}}{{/options}}\
            {{^options}}<input type="text" id="{{prefix}}-{{name}}" name="{{name}}" value="{{value}}" placeholder="{{hint}}">{{/options}}</div>{{/fields}}\
            <div><button type="submit">Filter</button> <a href="{{action}}">Clear</a></div></form>
            """,
    ]
}

// MARK: Shared views

/// What every page's layout shows: its title, and for a signed-in page the navigation and the sign-out form.
struct Layout {
    /// A link of the navigation.
    struct NavLink {
        let path: String
        let label: String
        let current: Bool
    }

    let title: String
    /// Empty before sign-in.
    let nav: [NavLink]
    /// The session's CSRF token; nil before sign-in (then there is no header).
    let csrf: String?
    /// The `<main>` element's class, if any.
    let mainClass: String?

    /// A signed-in page; `current` is the navigation entry it belongs to.
    static func signedIn(_ title: String, current: String, csrf: String) -> Layout {
        let links = [("/console", "Overview"), ("/console/webhooks", "Webhooks"), ("/console/dead-letters", "Dead letters"), ("/console/rules", "Rules")]
        return Layout(title: title, nav: links.map { NavLink(path: $0.0, label: $0.1, current: $0.0 == current) }, csrf: csrf, mainClass: nil)
    }

    /// A page without a session (sign-in, refusals).
    static func signedOut(_ title: String, mainClass: String? = nil) -> Layout {
        Layout(title: title, nav: [], csrf: nil, mainClass: mainClass)
    }
}

/// A UTC time with its age, for the `time` partial.
struct TimeView {
    /// `2026-11-30T09:12:04.000Z`.
    let iso: String
    /// `2026-11-30 09:12:04 UTC`.
    let shown: String
    /// `3 min ago`, `in 5 min`.
    let age: String

    init(_ date: Date, now: Date) {
        iso = Timestamps.iso(date)
        shown = iso.prefix(19).replacingOccurrences(of: "T", with: " ") + " UTC"
        age = HTML.age(now.timeIntervalSince(date))
    }

    /// nil for no time (templates show `never`).
    static func of(_ date: Date?, now: Date) -> TimeView? { date.map { TimeView($0, now: now) } }
}

/// A GET filter form, for the `filterForm` partial.
struct FilterForm {
    /// A text field, or a select when it has options.
    struct Field {
        /// An option of a select.
        struct Option {
            let text: String
            let selected: Bool
        }

        let name: String
        let label: String
        let hint: String
        let value: String
        let options: [Option]

        static func text(_ name: String, _ label: String, _ hint: String, in values: [String: String]) -> Field {
            Field(name: name, label: label, hint: hint, value: values[name] ?? "", options: [])
        }

        static func select(_ name: String, _ label: String, _ options: [String], in values: [String: String]) -> Field {
            Field(name: name, label: label, hint: "", value: "", options: options.map { Option(text: $0, selected: values[name] == $0) })
        }
    }

    /// Where it is sent, and its Clear link.
    let action: String
    /// The fields' id prefix (`f-q`).
    let prefix: String
    let fields: [Field]
}

/// A short page: a heading, an alert, a paragraph, a link back (refusals, not found).
struct NoticeView: ConsoleView {
    static let template = "notice"
    static let text = """
        {{<layout}}{{$content}}{{#heading}}<h1>{{.}}</h1>{{/heading}}{{#alert}}<p class="error" role="alert">{{.}}</p>{{/alert}}\
        {{#paragraph}}<p>{{.}}</p>{{/paragraph}}{{#backLink}}<p><a href="/console">Back to the console</a></p>{{/backLink}}{{/content}}{{/layout}}
        """

    let layout: Layout
    var heading: String? = nil
    var alert: String? = nil
    var paragraph: String? = nil
    var backLink = false
}

/// The sign-in page.
struct SignInView: ConsoleView {
    static let template = "signIn"
    static let text = """
        {{<layout}}{{$content}}<section><h1>koala-router console</h1>{{#problem}}<p class="error" role="alert">{{.}}</p>{{/problem}}
        <form method="post" action="/console/sign-in">
        <label for="token">Admin token</label>
        <input type="password" id="token" name="token" autocomplete="current-password" required autofocus>
        <button type="submit">Sign in</button>
        </form></section>{{/content}}{{/layout}}
        """

    let layout = Layout.signedOut("Sign in", mainClass: "signin")
    let problem: String?
}

import Foundation
import KoalaCore
import KoalaRuleTools

/// The rules page: the loaded files, their sources and routes, the last reload's result, and the rule tests.
struct RulesView: ConsoleView {
    /// The rule tests, run against the rules in use.
    struct Tests {
        /// A failed test.
        struct Failure {
            let file: String
            let line: Int
            let name: String
            let text: String
        }

        /// No test file at all.
        let none: Bool
        let folder: String
        let resultClass: String
        let passedCount: Int
        let failedCount: Int
        /// nil when every test file could be read.
        let unreadable: Int?
        let version: String
        let errors: [String]
        let failures: [Failure]
        /// nil when every route is covered.
        let untested: String?
    }

    /// A source and its routes.
    struct Source {
        /// A route's row.
        struct Route {
            let routeName: String
            let location: String
            let types: [String]
            let produces: String
        }

        let name: String
        let file: String
        let scheme: String
        let disabled: String?
        let routes: [Route]
    }

    static let template = "rules"
    static let text = """
        {{<layout}}{{$content}}<h1>Rules</h1><section aria-labelledby="loaded"><h2 id="loaded">In use</h2><dl>{{#status}}{{> rulesStatus}}{{/status}}</dl>\
        {{#secretErrors}}{{#first()}}<h3>Unusable secrets</h3><ul>{{/first()}}<li class="bad">{{.}}</li>{{#last()}}</ul>{{/last()}}{{/secretErrors}}\
        {{#warnings}}{{#first()}}<h3>Warnings</h3><ul>{{/first()}}<li>{{.}}</li>{{#last()}}</ul>{{/last()}}{{/warnings}}</section>
        <section aria-labelledby="tests"><h2 id="tests">Rule tests</h2>{{#tests}}\
        {{#none}}<p>No test files in <code>{{folder}}/tests</code>: <code>koala-router new-test</code> writes one from a sample.</p>{{/none}}\
        {{^none}}<p class="{{resultClass}}">{{passedCount}} passed, {{failedCount}} failed{{#unreadable}}, {{.}} test files could not be read{{/unreadable}} \
        (run just now against <code>{{version}}</code>).</p>{{#errors}}<p class="error">{{.}}</p>{{/errors}}\
        {{#failures}}<h3>{{file}}:{{line}} {{name}}</h3><pre>{{text}}</pre>{{/failures}}\
        {{#untested}}<p class="muted">Routes no test covers: {{.}}</p>{{/untested}}{{/none}}{{/tests}}</section>
        {{#sources}}<section aria-labelledby="src-{{name}}"><h2 id="src-{{name}}">{{name}}</h2><dl>\
        <dt>File</dt><dd><code>{{file}}</code></dd><dt>Signature</dt><dd>{{scheme}}</dd><dt>State</dt><dd>\
        {{#disabled}}<span class="bad">disabled</span>: {{.}}{{/disabled}}{{^disabled}}<span class="ok">enabled</span>{{/disabled}}</dd></dl>\
        <div class="scroll"><table class="rows"><thead><tr><th scope="col">Route</th><th scope="col">Where</th>\
        <th scope="col">Types</th><th scope="col">Produces</th></tr></thead><tbody>
        {{#routes}}<tr><th scope="row">{{routeName}}</th><td data-label="Where"><code>{{location}}</code></td>\
        <td data-label="Types">{{#types}}{{^first()}}, {{/first()}}<code>{{.}}</code>{{/types}}</td><td data-label="Produces">{{produces}}</td></tr>
        {{/routes}}</tbody></table></div></section>
        {{/sources}}{{/content}}{{/layout}}
        """

    let layout: Layout
    let status: RulesStatus
    let secretErrors: [String]
    let warnings: [String]
    let tests: Tests
    let sources: [Source]
}

/// The console's rules page: the loaded files, their sources and routes, the last reload's result, and the
/// rule tests (`<rules>/tests`, as `koala-router test` runs them) run against the rules in use.
extension Console {
    func rulesPage(session: ConsoleSessions.Session, now: Date = Date()) -> RulesView {
        let table = data.rules.table
        // The tests, run now against the rules in use (they read files only; ~100 tests take well under a second).
        let report = RuleTestRunner(table: table).run(directory: (routesDirectory as NSString).appendingPathComponent("tests"))
        let failed = report.outcomes.filter { !$0.passed }
        let tests = RulesView.Tests(
            none: report.outcomes.isEmpty && report.errors.isEmpty, folder: routesDirectory, resultClass: report.passed ? "ok" : "bad",
            passedCount: report.outcomes.count - failed.count, failedCount: failed.count,
            unreadable: report.errors.isEmpty ? nil : report.errors.count, version: table.version,
            errors: report.errors.map(\.description),
            failures: failed.map { .init(file: $0.file, line: $0.line, name: $0.name, text: $0.failures.joined(separator: "\n")) },
            untested: report.untested.isEmpty ? nil : report.untested.joined(separator: ", "))
        let sources = table.sources.keys.sorted().map { name -> RulesView.Source in
            let source = table.sources[name]!
            var disabled: String?
            if case .disabled(let reason) = source.state { disabled = reason }
            return .init(name: name, file: source.file, scheme: source.scheme, disabled: disabled, routes: source.routes.map {
                .init(routeName: $0.name, location: $0.location.description, types: $0.typePatterns, produces: $0.outputNames.joined(separator: ", "))
            })
        }
        return RulesView(layout: .signedIn("Rules", current: "/console/rules", csrf: session.csrf),
                         status: RulesStatus(data.rules, folder: routesDirectory, now: now),
                         secretErrors: table.secretErrors, warnings: table.warnings, tests: tests, sources: sources)
    }
}

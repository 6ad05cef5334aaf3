import Foundation
import KoalaCore
import KoalaRuleTools

/// The console's rules page: the loaded files, their sources and routes, the last reload's result, and the
/// rule tests (`<rules>/tests`, as `koala-router test` runs them) run against the rules in use.
extension Console {
    func rulesPage(now: Date = Date()) -> String {
        let table = components.rules.table
        var html = "<h1>Rules</h1><section aria-labelledby=\"loaded\"><h2 id=\"loaded\">In use</h2><dl>"
        html += "<dt>Version</dt><dd><code>\(HTML.text(table.version))</code>, loaded \(HTML.time(components.rules.loadedAt, now: now))</dd>"
        html += "<dt>Folder</dt><dd><code>\(HTML.text(routesDirectory))</code></dd><dt>Last reload</dt><dd>"
        if let error = components.rules.lastReloadError {
            html += "<span class=\"bad\">refused</span> \(HTML.time(components.rules.lastReloadAttempt, now: now)); the version above stays in use:<pre>\(HTML.text(error))</pre>"
        } else {
            html += components.rules.lastReloadAttempt.map { "<span class=\"ok\">loaded</span> " + HTML.time($0, now: now) } ?? "none since start"
        }
        html += "</dd></dl>"
        if !table.secretErrors.isEmpty {
            html += "<h3>Unusable secrets</h3><ul>" + table.secretErrors.map { "<li class=\"bad\">\(HTML.text($0))</li>" }.joined() + "</ul>"
        }
        if !table.warnings.isEmpty {
            html += "<h3>Warnings</h3><ul>" + table.warnings.map { "<li>\(HTML.text($0))</li>" }.joined() + "</ul>"
        }
        html += "</section>"

        // The tests, run now against the rules in use (they read files only; ~100 tests take well under a second).
        let report = RuleTestRunner(table: table).run(directory: (routesDirectory as NSString).appendingPathComponent("tests"))
        let failed = report.outcomes.filter { !$0.passed }
        html += "<section aria-labelledby=\"tests\"><h2 id=\"tests\">Rule tests</h2>"
        if report.outcomes.isEmpty && report.errors.isEmpty {
            html += "<p>No test files in <code>\(HTML.text(routesDirectory))/tests</code>: <code>koala-router new-test</code> writes one from a sample.</p>"
        } else {
            html += "<p class=\"\(report.passed ? "ok" : "bad")\">\(report.outcomes.count - failed.count) passed, \(failed.count) failed"
            html += report.errors.isEmpty ? "" : ", \(report.errors.count) test files could not be read"
            html += " (run just now against <code>\(HTML.text(table.version))</code>).</p>"
            for error in report.errors { html += "<p class=\"error\">\(HTML.text(error.description))</p>" }
            for outcome in failed {
                html += "<h3>\(HTML.text(outcome.file)):\(outcome.line) \(HTML.text(outcome.name))</h3><pre>\(HTML.text(outcome.failures.joined(separator: "\n")))</pre>"
            }
            if !report.untested.isEmpty {
                html += "<p class=\"muted\">Routes no test covers: \(report.untested.map(HTML.text).joined(separator: ", "))</p>"
            }
        }
        html += "</section>"

        for name in table.sources.keys.sorted() {
            let source = table.sources[name]!
            html += "<section aria-labelledby=\"src-\(HTML.text(name))\"><h2 id=\"src-\(HTML.text(name))\">\(HTML.text(name))</h2><dl>"
            html += "<dt>File</dt><dd><code>\(HTML.text(source.file))</code></dd><dt>Signature</dt><dd>\(HTML.text(source.scheme))</dd><dt>State</dt><dd>"
            switch source.state {
            case .enabled: html += "<span class=\"ok\">enabled</span>"
            case .disabled(let reason): html += "<span class=\"bad\">disabled</span>: \(HTML.text(reason))"
            }
            html += "</dd></dl><div class=\"scroll\"><table class=\"rows\"><thead><tr><th scope=\"col\">Route</th><th scope=\"col\">Where</th>"
            html += "<th scope=\"col\">Types</th><th scope=\"col\">Produces</th></tr></thead><tbody>"
            for route in source.routes {
                html += "<tr><th scope=\"row\">\(HTML.text(route.name))</th>" + cell("Where", "<code>\(HTML.text(route.location.description))</code>")
                html += cell("Types", route.typePatterns.map { "<code>\(HTML.text($0))</code>" }.joined(separator: ", "))
                html += cell("Produces", HTML.text(route.outputNames.joined(separator: ", "))) + "</tr>"
            }
            html += "</tbody></table></div></section>"
        }
        return html
    }
}

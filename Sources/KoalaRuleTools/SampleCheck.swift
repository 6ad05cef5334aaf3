import Foundation
package import KoalaCore
import HTTPTypes
import Yams

/// `koala-router check` with samples: every sample webhook of a source (`<rules>/samples/<source>/*.json`, with
/// the headers in `*.headers` beside it, and the webhooks of the rule tests) is routed through its rules, and what the rules read is checked against
/// what the samples hold. Each finding points at the rule (`file:line:column`) and names a sample.
///
/// - Errors (certain mistakes): a sample the source cannot identify (its id, type or time path); an identity
///   field (`person.email`, `person.profile_id`, `account.domain`, …) that reads a number, boolean, object or
///   list; a filter given a value of a type it cannot convert (`cents` on text).
/// - Warnings: a path that resolves in no sample the route takes (with a did-you-mean from the keys that are
///   there); a route no sample exercises; two routes sending the same event, or the same output for the same
///   identity, for one webhook.
package struct SampleCheck: Sendable {
    /// One sample webhook.
    package struct Sample: Sendable {
        /// Where it comes from: a sample file, or `tests/x.yaml:12` for a rule test's webhook.
        package let name: String
        let body: [UInt8]
        let headers: HTTPFields
        let memory: [MemoryKey: Remembered]

        init(name: String, body: [UInt8], headers: HTTPFields = HTTPFields(), memory: [MemoryKey: Remembered] = [:]) {
            self.name = name
            self.body = body
            self.headers = headers
            self.memory = memory
        }
    }

    /// How sure a finding is.
    package enum Severity: String, Sendable {
        case error, warning
    }

    /// One thing found, at the rule it concerns.
    package struct Finding: Sendable, CustomStringConvertible {
        /// Error or warning.
        package let severity: Severity
        /// Where in the rule files (or the sample, when the rule is not the cause).
        package let location: String
        /// What is wrong.
        package let message: String
        /// What to do.
        package let hint: String

        package var description: String { "\(severity.rawValue): \(location): \(message)\(hint.isEmpty ? "" : "; \(hint)")" }
    }

    /// The findings, and how many samples each source was checked with.
    package struct Report: Sendable {
        /// Errors first, then warnings, each in rule order.
        package var findings: [Finding] = []
        /// Samples per source.
        package var samples: [String: Int] = [:]
        /// Problems reading the samples themselves (unreadable files, broken test files).
        package var problems: [RuleError] = []
        /// Whether any finding is an error.
        package var hasErrors: Bool { !problems.isEmpty || findings.contains { $0.severity == .error } }
        /// Whether any finding is a warning.
        package var hasWarnings: Bool { findings.contains { $0.severity == .warning } }
    }

    let table: RuleTable

    package init(table: RuleTable) {
        self.table = table
    }

    /// Reads `<samples>/<source>/*.json` and the webhooks of every rule test in `tests`, and checks each
    /// source against its samples. A folder that does not exist is skipped.
    package func run(samplesDirectory: String?, testsDirectory: String?) -> Report {
        var report = Report()
        var samples: [String: [Sample]] = [:]
        let files = FileManager.default
        if let samplesDirectory {
            for source in table.sources.keys.sorted() {
                let folder = (samplesDirectory as NSString).appendingPathComponent(source)
                let names = ((try? files.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".json") }.sorted()
                for name in names {
                    let path = (folder as NSString).appendingPathComponent(name)
                    guard let data = files.contents(atPath: path) else {
                        report.problems.append(RuleError(file: path, line: 0, column: 0, message: "cannot read the sample", hint: "check its permissions"))
                        continue
                    }
                    // Headers the source reads (e.g. Svix's svix-id) sit beside the body: `x.headers`, one `Name: value` a line.
                    var headers = HTTPFields()
                    let sidecar = String(path.dropLast(".json".count)) + ".headers"
                    if let text = try? String(contentsOfFile: sidecar, encoding: .utf8) {
                        for line in text.split(whereSeparator: \.isNewline) {
                            let parts = line.split(separator: ":", maxSplits: 1)
                            guard parts.count == 2, let name = HTTPField.Name(String(parts[0]).trimmingSpaces) else {
                                report.problems.append(RuleError(file: sidecar, line: 0, column: 0, message: "'\(line)' is not a header line",
                                                                 hint: "write one 'Name: value' a line"))
                                continue
                            }
                            headers[name] = parts[1].trimmingSpaces
                        }
                    }
                    samples[source, default: []].append(Sample(name: path, body: [UInt8](data), headers: headers))
                }
            }
        }
        if let testsDirectory {
            let names = ((try? files.contentsOfDirectory(atPath: testsDirectory)) ?? []).filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted()
            for name in names {
                let path = (testsDirectory as NSString).appendingPathComponent(name)
                guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
                var file = TestFile(path: path, text: text, table: table)
                if let (source, found) = file.samples() { samples[source, default: []] += found }
                report.problems += file.errors
            }
        }
        let checked = check(samples)
        report.findings = checked.findings
        report.samples = samples.mapValues(\.count)
        return report
    }

    /// Checks each source with samples against them.
    func check(_ samples: [String: [Sample]]) -> Report {
        var report = Report()
        for (name, source) in table.sources.sorted(by: { $0.key < $1.key }) {
            guard let list = samples[name], !list.isEmpty else { continue }
            report.findings += SourceCheck(source: source, samples: list).run()
        }
        report.findings.sort { ($0.severity == .error ? 0 : 1) < ($1.severity == .error ? 0 : 1) }
        return report
    }
}

/// The checks of one source against its samples.
struct SourceCheck {
    let source: SourceDefinition
    let samples: [SampleCheck.Sample]

    /// Identity fields: a value there is never a number, a boolean, an object or a list.
    static let identityFields: Set<String> = ["person.email", "person.profile_id", "person.user_id", "account.domain", "account.account_id"]

    /// Paths read by a route — one, or the alternatives of a `coalesce` (one resolving is enough) — and what
    /// the samples showed of them.
    struct PathRecord {
        let route: Route
        let site: ExpressionSite
        let paths: [Path]
        var resolved = false
        var samplesSeen = 0
        /// Where it stopped: the path up to the missing key, the key, and the keys that were there.
        var missingKey: String?
        var prefix = ""
        var keysThere = Set<String>()
    }

    func run() -> [SampleCheck.Finding] {
        var findings: [SampleCheck.Finding] = []
        var reported = Set<String>()
        func add(_ severity: SampleCheck.Severity, _ location: any CustomStringConvertible, _ message: String, _ hint: String, once key: String) {
            guard reported.insert(key).inserted else { return }
            findings.append(.init(severity: severity, location: location.description, message: message, hint: hint))
        }
        var typeSeen = Set<String>(), exercised = Set<String>()
        /// Every event type the samples of this source have, for a did-you-mean on a route's type.
        var sampleTypes = Set<String>()
        /// Why a route whose type a sample has did not take it (its `where`, the part that failed and the value).
        var whyNot: [String: String] = [:]
        /// Per property (or trait) name, the JSON types it was sent as: the first route, sample and value of each.
        var sentAs: [String: [String: (route: String, sample: String, value: JSONValue)]] = [:]
        var sentOrder: [String] = []
        var records: [String: PathRecord] = [:]
        var recordOrder: [String] = []
        let router = WebhookRouter(source: source)

        for sample in samples {
            guard let tape = try? JSONTape.parse(sample.body) else {
                add(.error, sample.name, "the sample is not valid JSON", "save the webhook's body exactly as the provider sent it", once: "json \(sample.name)")
                continue
            }
            let webhook: VerifiedWebhook
            let json = tape.value
            switch source.webhook(body: sample.body, json: tape, headers: sample.headers, receivedAt: Date(timeIntervalSince1970: 0),
                                  secretLabel: "sample", rulesVersion: "check") {
            case .success(let w): webhook = w
            case .failure(let problem):
                add(.error, sample.name, "source '\(source.name)' cannot identify this sample: \(problem.message)",
                    "check the source's id, type and time paths (\(source.file)) against the sample", once: "identify \(sample.name)")
                continue
            }
            let routing = router.routing(webhook, memory: sample.memory)
            let context = EvaluationContext(body: json, headers: webhook.headers, webhook: webhook.fields)
            sampleTypes.insert(webhook.eventType)

            for route in source.routes where route.types.contains(where: { $0.matches(webhook.eventType) }) {
                typeSeen.insert(route.name)
                let result = routing.results.first { $0.route == route.name }
                let matched = result?.matched ?? false
                if matched { exercised.insert(route.name) }
                if !matched, whyNot[route.name] == nil, let reason = result?.reason { whyNot[route.name] = "in \(sample.name): \(reason)" }
                for (siteIndex, site) in route.sites.enumerated() {
                    for (groupIndex, group) in Self.pathGroups(site.expression).enumerated() {
                        let key = "\(route.name)#\(siteIndex)#\(groupIndex)"
                        if records[key] == nil {
                            records[key] = PathRecord(route: route, site: site, paths: group)
                            recordOrder.append(key)
                        }
                        records[key]?.samplesSeen += 1
                        if group.contains(where: { $0.resolve(in: context) != nil }) {
                            records[key]?.resolved = true
                        } else if group.count == 1, let stop = Self.stop(group[0], in: json) {
                            records[key]?.missingKey = stop.key
                            records[key]?.prefix = stop.prefix
                            records[key]?.keysThere.formUnion(stop.keys)
                        }
                    }
                    guard matched else { continue }
                    // Identity fields read from the payload: text or nothing.
                    if Self.identityFields.contains(site.what), !site.expression.reads(root: .person), site.expression.recalls.isEmpty,
                       let value = site.expression.evaluate(in: context), value != .null, value.stringValue == nil {
                        let emails = site.what == "person.email" || site.what == "account.domain" ? Self.emailPaths(in: json) : []
                        add(.error, site.location,
                            "\(site.what) ← \(site.expression) is \(IdentityDiagnosis.excerpt(value)) in \(sample.name), not text: the message would never be sent",
                            emails.isEmpty ? "point \(site.what) at the field that holds it" : "text fields holding an email in that sample: \(emails.joined(separator: ", "))",
                            once: "identity \(route.name) \(site.what)")
                    }
                    for problem in Self.filterProblems(site.expression, in: context) {
                        add(.error, site.location,
                            "in \(site.what): filter '\(problem.filter)' takes \(problem.takes), but \(problem.input) is \(IdentityDiagnosis.excerpt(problem.value)) in \(sample.name): the value would be left out",
                            "check the path, or convert the value first (e.g. '| number' for numeric text)",
                            once: "filter \(route.name) \(site.what) \(problem.filter)")
                    }
                }
            }

            // The JSON type each route sends each property and trait as (Koala keeps one type per name).
            for message in routing.messages where message.problem == nil {
                let (what, fields): (String, JSONValue?) = message.output == .track ? ("property", message.item["properties"]) : (message.output == .account ? "account trait" : "trait", message.item["traits"])
                guard case .object(let values)? = fields else { continue }
                for (name, value) in values {
                    guard let kind = Self.kind(value) else { continue }
                    let key = "\(what)\u{0}\(name)"
                    if sentAs[key] == nil { sentAs[key] = [:]; sentOrder.append(key) }
                    if sentAs[key]?[kind] == nil { sentAs[key]?[kind] = (message.route, sample.name, value) }
                }
            }

            // Two routes saying the same thing about one webhook.
            let messages = routing.messages
            for (i, a) in messages.enumerated() {
                for b in messages[(i + 1)...] where a.route != b.route {
                    guard let second = source.routes.first(where: { $0.name == b.route }) else { continue }
                    if a.output == .track, b.output == .track, let event = a.item["event"]?.stringValue, event == b.item["event"]?.stringValue {
                        add(.warning, second.location, "routes '\(a.route)' and '\(b.route)' both send '\(event)' for \(sample.name) (type \(webhook.eventType))",
                            "Koala would count it twice: narrow one route's 'when' (type or where) so only one takes this webhook",
                            once: "event \(a.route) \(b.route) \(event)")
                    } else if a.output == b.output, a.output != .track, a.identity == b.identity, a.problem == nil, b.problem == nil {
                        add(.warning, second.location,
                            "routes '\(a.route)' and '\(b.route)' both send \(a.output == .account ? "account" : "visitor") traits for the same \(a.output == .account ? "account" : "person") from \(sample.name) (type \(webhook.eventType))",
                            "one message is enough: merge the traits into one route, or narrow one route's 'when'",
                            once: "output \(a.route) \(b.route) \(a.output)")
                    }
                }
            }
        }

        for key in recordOrder {
            guard let record = records[key], !record.resolved else { continue }
            let guess = record.missingKey.flatMap { Suggest.closest(to: $0, in: Array(record.keysThere)) }
            var hint: String
            if record.paths.count > 1 {
                add(.warning, record.site.location,
                    "in \(record.site.what): none of coalesce's alternatives (\(record.paths.map(\.description).joined(separator: ", "))) resolves in the \(record.samplesSeen) sample(s) of '\(source.name)' that route '\(record.route.name)' takes",
                    "check each path; if the fields are optional, add a sample that has one", once: "path \(key)")
                continue
            }
            if let guess, let missing = record.missingKey {
                hint = "did you mean '\(guess)'? (\(record.prefix).\(missing) is not in the samples; \(record.prefix) has \(Self.list(record.keysThere)))"
            } else if let missing = record.missingKey {
                hint = "'\(missing)' is not under \(record.prefix) in any of them (it has \(Self.list(record.keysThere))); if the field is optional, add a sample that has it"
            } else {
                hint = "if the field is optional, add a sample that has it"
            }
            // A typo in the field that says who a message is for dead-letters every message of the route: an error
            // when the samples have a key close to it beside it.
            let identityTypo = guess != nil && Self.identityFields.contains(record.site.what)
            if identityTypo { hint += "; without it every message of this route is dead-lettered (identity missing)" }
            add(identityTypo ? .error : .warning, record.site.location,
                "in \(record.site.what): \(record.paths[0]) resolves in none of the \(record.samplesSeen) sample(s) of '\(source.name)' that route '\(record.route.name)' takes",
                hint, once: "path \(key)")
        }
        for key in sentOrder {
            guard let kinds = sentAs[key], kinds.count > 1 else { continue }
            let parts = key.split(separator: "\u{0}", maxSplits: 1).map(String.init)
            // The type most routes use is the property's; each other one is pointed at its route.
            let byRoutes = kinds.sorted { ($0.value.route, $0.key) < ($1.value.route, $1.key) }
            let usual = byRoutes.first { $0.key != "text" } ?? byRoutes[0]
            for (kind, first) in byRoutes where kind != usual.key {
                guard let route = source.routes.first(where: { $0.name == first.route }) else { continue }
                add(.warning, route.location,
                    "route '\(first.route)' sends \(parts[0]) '\(parts[1])' as \(kind) (\(IdentityDiagnosis.excerpt(first.value)) for \(first.sample)), while route '\(usual.value.route)' sends it as \(usual.key)",
                    "Koala keeps one type per \(parts[0]): convert it (e.g. '| number' for numeric text) or give it another name",
                    once: "type \(key) \(kind)")
            }
        }
        for route in source.routes {
            if let outcome = route.condition?.constantOutcome {
                add(.warning, route.location, "in route '\(route.name)', when.where: \(outcome)",
                    "a 'where' that does not depend on the payload lets every webhook of the type through, or none", once: "constant \(route.name)")
            }
        }
        for route in source.routes where !exercised.contains(route.name) {
            if typeSeen.contains(route.name) {
                add(.warning, route.location, "no sample exercises route '\(route.name)': samples of its type(s) exist, but its 'where' never held"
                    + (whyNot[route.name].map { " (\($0))" } ?? ""),
                    "add a sample (or a rule test) where it should match, or check the condition with 'koala-router simulate'", once: "route \(route.name)")
            } else {
                // A type no sample has, close to one the samples (or the source's other routes) name: likely a typo.
                let known = sampleTypes.union(source.routes.flatMap { $0.types.filter { !$0.isGlob }.map(\.pattern) })
                let typos = route.types.filter { !$0.isGlob && !sampleTypes.contains($0.pattern) }.compactMap { type in
                    Suggest.closest(to: type.pattern, in: Array(known.subtracting([type.pattern]))).map { "'\(type.pattern)': did you mean '\($0)'?" }
                }
                add(.warning, route.location, "no sample exercises route '\(route.name)': none has type \(route.types.map(\.description).joined(separator: " or "))",
                    (typos.isEmpty ? "" : typos.joined(separator: "; ") + " ") + "add one to samples/\(source.name)/ (or a rule test with its webhook)",
                    once: "route \(route.name)")
            }
        }
        return findings
    }

    /// A value's JSON type as people say it; nil for null (nothing is sent).
    static func kind(_ value: JSONValue) -> String? {
        switch value {
        case .null: nil
        case .bool: "a boolean"
        case .int, .double: "a number"
        case .string: "text"
        case .array: "a list"
        case .object: "an object"
        }
    }

    /// The payload paths `expression` reads, grouped: the paths of one `coalesce(…)` are alternatives (one
    /// group), every other path is a group of its own.
    static func pathGroups(_ expression: KoalaCore.Expression) -> [[Path]] {
        switch expression {
        case .literal: return []
        case .path(let path): return path.root == .body ? [[path]] : []
        case .template(let parts):
            return parts.flatMap { part -> [[Path]] in
                if case .expression(let e) = part { return pathGroups(e) }
                return []
            }
        case .call("coalesce", let args):
            let alternatives = args.flatMap(\.paths).filter { $0.root == .body }
            return alternatives.isEmpty ? [] : [alternatives]
        // The MRR functions' arguments after the subscription are remembered discounts, there only when one is named.
        case .call(let name, let args) where Functions.mrrFunctions.contains(name) && !args.isEmpty: return pathGroups(args[0])
        case .call(_, let args): return args.flatMap(pathGroups)
        case .access(let base, _): return pathGroups(base)
        case .piped(let base, let filters): return pathGroups(base) + filters.flatMap { $0.arguments.flatMap(pathGroups) }
        }
    }

    /// Where `path` stops in `json`: the path up to the first missing key, that key, and the keys there.
    static func stop(_ path: Path, in json: JSONValue) -> (prefix: String, key: String, keys: [String])? {
        var current = json
        var walked: [Path.Component] = []
        for component in path.components {
            switch (component, current) {
            case (.key(let key), .object(let object)):
                guard let next = object[key] else {
                    return (Path(root: .body, components: walked).description, key, Array(object.keys))
                }
                current = next
            case (.index(let index), .array(let items)):
                let position = index < 0 ? items.count + index : index
                guard position >= 0, position < items.count else { return nil }
                current = items[position]
            case (.select, .array(let items)):
                guard let first = items.first else { return nil }
                current = first
            default:
                return nil
            }
            walked.append(component)
        }
        return nil
    }

    /// A filter given a value of a type it cannot convert, anywhere in `expression`.
    static func filterProblems(_ expression: KoalaCore.Expression, in context: EvaluationContext) -> [(filter: String, takes: String, input: String, value: JSONValue)] {
        switch expression {
        case .literal, .path: return []
        case .template(let parts):
            return parts.flatMap { part -> [(filter: String, takes: String, input: String, value: JSONValue)] in
                if case .expression(let e) = part { return filterProblems(e, in: context) }
                return []
            }
        case .call(_, let args): return args.flatMap { filterProblems($0, in: context) }
        case .access(let base, _): return filterProblems(base, in: context)
        case .piped(let base, let filters):
            var out = filterProblems(base, in: context)
            var value = base.evaluate(in: context)
            var input = base.description
            for filter in filters {
                if let present = value, present != .null, let takes = Filters.all[filter.name]?.input.refusal(of: present) {
                    out.append((filter.name, takes, input, present))
                    break
                }
                value = filter.apply(value, filter.arguments.map { $0.evaluate(in: context) })
                input += " | \(filter)"
            }
            return out
        }
    }

    /// Paths of text values in `json` that are email addresses (at most three), for a did-you-mean.
    static func emailPaths(in json: JSONValue) -> [String] {
        var found: [String] = []
        func walk(_ value: JSONValue, _ components: [Path.Component]) {
            guard found.count < 3 else { return }
            switch value {
            case .string(let text) where text.contains("@") && Identity.normalizeEmail(text) != nil:
                found.append(Path(root: .body, components: components).description)
            case .object(let object):
                for key in object.keys.sorted() { walk(object[key] ?? .null, components + [.key(key)]) }
            case .array(let items):
                for (index, item) in items.prefix(5).enumerated() { walk(item, components + [.index(index)]) }
            default:
                break
            }
        }
        walk(json, [])
        return found
    }

    static func list(_ keys: Set<String>) -> String {
        let sorted = keys.sorted()
        return sorted.prefix(12).joined(separator: ", ") + (sorted.count > 12 ? ", …" : "")
    }
}

extension TestFile {
    /// The webhooks of this file's tests, as samples of its source (nil when the file cannot be read).
    mutating func samples() -> (source: String, samples: [SampleCheck.Sample])? {
        guard let root = try? Yams.compose(yaml: text), case .mapping(let top) = root,
              let source = top["source"]?.string,
              case .sequence(let tests)? = top["tests"] else { return nil }
        guard let definition = table.sources[source] else { return nil }
        for test in tests {
            if case .mapping(let map) = test, let name = map["name"]?.string { testsByName[name] = map }
        }
        var out: [SampleCheck.Sample] = []
        for test in tests {
            guard case .mapping(let map) = test else { continue }
            let name = map["name"]?.string ?? "test"
            guard let (body, headers, own) = input(map, node: test, name: name),
                  let memory = memoryAfter(map, own: own, name: name, source: definition) else { continue }
            out.append(SampleCheck.Sample(name: "\(path):\(at(test).line)", body: body, headers: headers, memory: memory))
        }
        return (source, out)
    }
}

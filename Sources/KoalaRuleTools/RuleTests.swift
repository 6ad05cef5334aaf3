import Foundation
package import KoalaCore
import HTTPTypes
import Yams

/// Rule tests kept beside the rules (`routes/tests/*.yaml`), like `vector test`: a sample webhook in, the
/// exact Koala messages expected out. Verification is skipped (tests hold no secrets); everything after it
/// runs as in production: id/type/time extraction, conditions, identity memory, every output.
package struct RuleTestRunner: Sendable {
    let table: RuleTable

    package init(table: RuleTable) {
        self.table = table
    }

    /// One rule test's result.
    package struct Outcome: Sendable {
        /// The test file.
        package let file: String
        /// The line the test starts at.
        package let line: Int
        /// The test's name.
        package let name: String
        /// Empty when the test passed.
        package let failures: [String]
        /// True when every expectation held.
        package var passed: Bool { failures.isEmpty }
    }

    /// Every test's result and the problems that stopped a test file from running.
    package struct Report: Sendable {
        /// One outcome per test, in file order.
        package var outcomes: [Outcome] = []
        /// Problems with the test files themselves, as `file:line:column: …`.
        package var errors: [RuleError] = []
        /// `source/route` pairs no test produced a message for.
        package var untested: [String] = []
        /// With `update`: each file rewritten, with the names of the tests whose `expect:` was refreshed.
        package var updated: [(file: String, tests: [String])] = []
        /// True when no file had an error and every test passed.
        package var passed: Bool { errors.isEmpty && outcomes.allSatisfy(\.passed) }
    }

    /// Runs every `*.yaml` in `directory` (default: `<routes>/tests`). With `update`, the `expect:` block of
    /// every failing test is first rewritten from the current output (files with errors are left alone), and
    /// the report is that of the rewritten files.
    /// `filter`: only the tests whose name contains it (any case); the tests they name in `after:` still feed them.
    package func run(directory: String, update: Bool = false, filter: String? = nil) -> Report {
        var report = Report()
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted()
        if names.isEmpty {
            report.errors.append(RuleError(file: directory, line: 0, column: 0, message: "no rule tests (*.yaml) found",
                                           hint: "add tests such as routes/tests/stripe.yaml"))
        }
        var covered = Set<String>()
        for name in names {
            let path = directory.hasSuffix("/") ? directory + name : directory + "/" + name
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                report.errors.append(RuleError(file: path, line: 0, column: 0, message: "cannot read the file", hint: "save it as UTF-8"))
                continue
            }
            var file = TestFile(path: path, text: text, table: table)
            file.update = update
            file.filter = filter
            file.run()
            if update, file.errors.isEmpty, !file.edits.isEmpty {
                let rewritten = ExpectEdit.apply(file.edits, to: text)
                do {
                    try rewritten.write(toFile: path, atomically: true, encoding: .utf8)
                    report.updated.append((path, file.updatedTests))
                    file = TestFile(path: path, text: rewritten, table: table)
                    file.filter = filter
                    file.run()
                } catch {
                    report.errors.append(RuleError(file: path, line: 0, column: 0, message: "cannot write the file: \(error)",
                                                   hint: "check the folder's permissions"))
                }
            }
            report.outcomes += file.outcomes
            report.errors += file.errors
            covered.formUnion(file.covered)
        }
        // Coverage is a property of the whole suite: not judged from a filtered run.
        for (name, source) in table.sources where filter == nil {
            for route in source.routes where !covered.contains("\(name)/\(route.name)") {
                report.untested.append("\(name)/\(route.name)")
            }
        }
        report.untested.sort()
        return report
    }
}

/// One test file.
struct TestFile {
    let path: String
    let text: String
    let table: RuleTable
    var outcomes: [RuleTestRunner.Outcome] = []
    var errors: [RuleError] = []
    var covered = Set<String>()
    /// `test --update`: collect an edit refreshing each failing test's `expect:` block.
    var update = false
    /// With `update`, only the test starting at this line (`new-test`).
    var onlyLine: Int?
    /// `test --filter`: only tests whose name contains this (any case).
    var filter: String?
    var edits: [ExpectEdit] = []
    var updatedTests: [String] = []
    /// The file's tests by name, for `after:`.
    var testsByName: [String: Node.Mapping] = [:]

    init(path: String, text: String, table: RuleTable) {
        self.path = path
        self.text = text
        self.table = table
    }

    func at(_ node: Node) -> SourceLocation {
        SourceLocation(file: path, line: node.mark?.line ?? 1, column: node.mark?.column ?? 1)
    }

    mutating func fail(_ node: Node, _ message: String, _ hint: String) {
        errors.append(at(node).error(message, hint: hint))
    }

    mutating func run() {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                errors.append(RuleError(file: path, line: 1, column: 1, message: "the file is empty", hint: "start with 'source: <name>' and 'tests:'"))
                return
            }
            root = node
        } catch let error as YamlError {
            let parser = FileParser(path: path, text: text, environment: [:])
            errors.append(parser.yamlError(error))
            return
        } catch {
            errors.append(RuleError(file: path, line: 1, column: 1, message: "invalid YAML: \(error)", hint: "fix the YAML syntax"))
            return
        }
        guard case .mapping(let top) = root, let sourceNode = top["source"], let sourceName = sourceNode.string else {
            fail(root, "a test file needs 'source' and 'tests'", "start with 'source: stripe' and a list under 'tests:'")
            return
        }
        guard let source = table.sources[sourceName] else {
            fail(sourceNode, "no rule file declares source '\(sourceName)'", "name a source from the routes folder: \(table.sources.keys.sorted().joined(separator: ", "))")
            return
        }
        guard case .sequence(let tests)? = top["tests"] else {
            fail(root, "missing 'tests' list", "add 'tests:' with one '- name: …' entry per sample webhook")
            return
        }
        for test in tests {
            if case .mapping(let map) = test, let name = map["name"]?.string { testsByName[name] = map }
        }
        for (index, test) in tests.enumerated() {
            if let filter, case .mapping(let map) = test, let name = map["name"]?.string,
               name.range(of: filter, options: .caseInsensitive) == nil { continue }
            let next = index + 1 < tests.count ? tests[index + 1].mark?.line : nil
            runTest(test, source: source, nextTestLine: next)
        }
    }

    static let testKeys = ["name", "after", "webhook", "body", "headers", "memory", "expect"]
    static let expectKeys = ["route", "output", "email", "profile_id", "domain", "account_id", "event", "properties", "traits",
                             "sent_at", "message_id", "problem", "waiting_for"]

    /// The memory a test's webhook is routed against: its own, after the webhooks of the tests it names in
    /// `after:` were routed first, in that order, through one memory (each with its own memory added), so a test
    /// can follow a customer's life step by step. Their messages are not checked here (their own tests check
    /// them). Nil, with the failure recorded, when an earlier test cannot be found or identified.
    mutating func memoryAfter(_ map: Node.Mapping, own: [MemoryKey: Remembered], name: String, source: SourceDefinition) -> [MemoryKey: Remembered]? {
        var memory = own
        guard let afterNode = map["after"] else { return memory }
        let names: [(String, Node)]
        switch afterNode {
        case .sequence(let items): names = items.compactMap { item in item.string.map { ($0, item) } }
        case .scalar(let scalar): names = [(scalar.string, afterNode)]
        default: names = []
        }
        if names.isEmpty { fail(afterNode, "'after' must name earlier tests of this file", "e.g. 'after: [\"life 1: the trial starts\"]'") }
        for (earlier, at) in names {
            guard earlier != name, let earlierMap = testsByName[earlier] else {
                let suggestion = Suggest.closest(to: earlier, in: Array(testsByName.keys)).map { "did you mean '\($0)'? " } ?? ""
                fail(at, "no test named '\(earlier)' in this file", "\(suggestion)'after' names tests of the same file, whose webhooks are routed first")
                return nil
            }
            guard let (earlierBody, earlierHeaders, earlierMemory) = input(earlierMap, node: at, name: earlier) else { return nil }
            for (key, entry) in earlierMemory where memory[key] == nil { memory[key] = entry }
            guard let json = try? JSONTape.parse(earlierBody),
                  case .success(let webhook) = source.webhook(body: earlierBody, json: json, headers: earlierHeaders,
                                                                receivedAt: Date(timeIntervalSince1970: 0), secretLabel: "test", rulesVersion: table.version)
            else {
                fail(at, "the webhook of test '\(earlier)' cannot be identified", "fix that test first")
                return nil
            }
            for entry in WebhookRouter(source: source).routing(webhook, memory: memory).remembers {
                memory[entry.key] = memory[entry.key].map { $0.updated(by: entry) } ?? entry
            }
        }
        return memory
    }

    mutating func runTest(_ node: Node, source: SourceDefinition, nextTestLine: Int? = nil) {
        guard case .mapping(let map) = node else {
            fail(node, "a test must be a mapping", "write '- name: …' with webhook and expect")
            return
        }
        for (key, _) in map {
            if let k = key.string, !Self.testKeys.contains(k) {
                let suggestion = Suggest.closest(to: k, in: Self.testKeys).map { "did you mean '\($0)'? " } ?? ""
                fail(key, "unknown key '\(k)' in a test", "\(suggestion)allowed keys: \(Self.testKeys.joined(separator: ", "))")
            }
        }
        let name = map["name"]?.string ?? "test at line \(at(node).line)"
        guard let (body, headers, ownMemory) = input(map, node: node, name: name) else { return }
        guard let memory = memoryAfter(map, own: ownMemory, name: name, source: source) else { return }
        guard let expectNode = map["expect"] else {
            fail(node, "test '\(name)' has no 'expect'", "list the expected messages, or write 'expect: []' for no output")
            return
        }
        let json: JSONTape
        do {
            json = try JSONTape.parse(body)
        } catch {
            outcomes.append(.init(file: path, line: at(node).line, name: name, failures: ["the webhook is not valid JSON: \(error)"]))
            return
        }
        let webhook: VerifiedWebhook
        switch source.webhook(body: body, json: json, headers: headers, receivedAt: Date(timeIntervalSince1970: 0),
                              secretLabel: "test", rulesVersion: table.version) {
        case .success(let w): webhook = w
        case .failure(let problem):
            outcomes.append(.init(file: path, line: at(node).line, name: name, failures: [problem.message]))
            return
        }
        let routing = WebhookRouter(source: source).routing(webhook, memory: memory)
        // A route is exercised when it matches, messages or not (one may only remember a state).
        for result in routing.results where result.matched { covered.insert("\(source.name)/\(result.route)") }

        var expected: [Node] = []
        switch expectNode {
        case .sequence(let items): expected = Array(items)
        case .scalar(let s) where ["none", "nothing", "[]"].contains(s.string): expected = []
        default:
            fail(expectNode, "'expect' must be a list of messages", "write one '- route: …' entry per expected message, or 'expect: []'")
            return
        }
        var failures: [String] = []
        let actual = routing.messages
        if expected.count != actual.count {
            failures.append("expected \(expected.count) message(s), got \(actual.count): \(actual.map { "\($0.route)/\($0.output)" }.joined(separator: ", "))")
            let unmatched = routing.results.filter { !$0.matched }.map { "  \($0.route): \($0.reason)" }
            if actual.isEmpty && !unmatched.isEmpty { failures.append("routes that did not match:\n" + unmatched.joined(separator: "\n")) }
        }
        for (index, expectation) in expected.enumerated() {
            guard case .mapping(let e) = expectation else {
                fail(expectation, "an expected message must be a mapping", "write 'route:', 'output:' and the fields to check")
                continue
            }
            for (key, _) in e {
                if let k = key.string, !Self.expectKeys.contains(k) {
                    let suggestion = Suggest.closest(to: k, in: Self.expectKeys).map { "did you mean '\($0)'? " } ?? ""
                    fail(key, "unknown key '\(k)' in an expected message", "\(suggestion)allowed keys: \(Self.expectKeys.joined(separator: ", "))")
                }
            }
            guard index < actual.count else { continue }
            failures += compare(e, actual[index], index: index + 1)
        }
        if update, !failures.isEmpty, onlyLine == nil || onlyLine == at(node).line,
           let span = expectSpan(map, nextTestLine: nextTestLine) {
            edits.append(ExpectEdit(first: span.first, last: span.last,
                                    lines: ExpectWriter(source: text.components(separatedBy: "\n")).block(actual, indent: span.indent, previous: expected)))
            updatedTests.append(name)
        }
        outcomes.append(.init(file: path, line: at(node).line, name: name, failures: failures))
    }

    /// A test's webhook: its body (a file next to the test, or inline), headers and remembered memory.
    mutating func input(_ map: Node.Mapping, node: Node, name: String) -> (body: [UInt8], headers: HTTPFields, memory: [MemoryKey: Remembered])? {
        var body: [UInt8]
        if let fileNode = map["webhook"], let file = fileNode.string {
            let base = URL(fileURLWithPath: path).deletingLastPathComponent()
            let url = file.hasPrefix("/") ? URL(fileURLWithPath: file) : base.appendingPathComponent(file)
            guard let data = FileManager.default.contents(atPath: url.path) else {
                fail(fileNode, "cannot read webhook file '\(file)'", "paths are relative to \(base.path)")
                return nil
            }
            body = [UInt8](data)
        } else if let inline = map["body"] {
            body = Array(Self.json(inline).encoded().utf8)
        } else {
            fail(node, "test '\(name)' has no webhook", "add 'webhook: ../samples/<source>/<event>.json' or an inline 'body:'")
            return nil
        }
        var headers = HTTPFields()
        if case .mapping(let h)? = map["headers"] {
            for (k, v) in h {
                guard let key = k.string, let field = HTTPField.Name(key) else { continue }
                headers[field] = Self.json(v).textValue ?? ""
            }
        }
        // memory: { namespace: { key: { email, profile_id, domain, <state values>, remembered_at } } }: any
        // value besides the identity is remembered state, as of remembered_at (default: long ago).
        var memory: [MemoryKey: Remembered] = [:]
        if case .mapping(let namespaces)? = map["memory"] {
            for (ns, entries) in namespaces {
                guard let namespace = ns.string, case .mapping(let keys) = entries else { continue }
                for (k, v) in keys {
                    guard let key = k.string, case .object(var fields) = Self.json(v) else { continue }
                    let identity = KoalaIdentity(email: fields["email"]?.stringValue, profileID: fields["profile_id"]?.stringValue,
                                                 domain: fields["domain"]?.stringValue)
                    let at = fields["remembered_at"]?.stringValue.flatMap(Timestamps.parseISO) ?? Date(timeIntervalSince1970: 0)
                    for name in Remembered.reservedNames { fields[name] = nil }
                    let memoryKey = MemoryKey(namespace: namespace, key: key)
                    memory[memoryKey] = Remembered(key: memoryKey, identity: identity, state: fields.isEmpty ? nil : fields, stateAt: at)
                }
            }
        }
        return (body, headers, memory)
    }

    /// The lines of a test's `expect:` block: from its key to the line before the test's next key or the
    /// next test, without the blank and comment lines that end it (they belong to what follows).
    func expectSpan(_ map: Node.Mapping, nextTestLine: Int?) -> (first: Int, last: Int, indent: Int)? {
        guard let key = map.first(where: { $0.key.string == "expect" })?.key, let mark = key.mark else { return nil }
        let lines = text.components(separatedBy: "\n")
        let laterKeys = map.compactMap { $0.key.mark?.line }.filter { $0 > mark.line }
        var last = (laterKeys.min() ?? nextTestLine ?? lines.count + 1) - 1
        while last > mark.line, last <= lines.count {
            let line = lines[last - 1].trimmingSpaces
            guard line.isEmpty || line.hasPrefix("#") else { break }
            last -= 1
        }
        return (mark.line, min(last, lines.count), mark.column - 1)
    }

    func compare(_ e: Node.Mapping, _ m: KoalaMessage, index: Int) -> [String] {
        var diffs: [String] = []
        let label = "message \(index) (\(m.route)/\(m.output))"
        func check(_ key: String, _ actual: JSONValue?) {
            guard let node = e[key] else { return }
            let wanted = Self.json(node)
            diffs += Self.diff(wanted, actual ?? .null, path: key).map { "\(label): \($0)" }
        }
        // A message that would not be sent says why first, so an identity diff never ends at "got nothing".
        if let problem = m.problem, e["problem"] == nil {
            diffs.append("\(label): not sent: \(problem)")
        }
        check("route", .string(m.route))
        check("output", .string(m.output.rawValue))
        // The identity is always compared, whole: a field not written is expected to be absent, so a test never
        // passes whoever the message goes to. (Koala's identity: an account's, not the person its traits came with.)
        let who = Self.identity(of: m)
        let actual: [(key: String, value: String?)] = [("email", who.email), ("profile_id", who.profileID),
                                                       ("domain", who.domain), ("account_id", who.accountID)]
        for (key, value) in actual {
            let wanted = e[key].map(Self.json) ?? .null
            let got = value.map { JSONValue.string($0) } ?? .null
            if wanted != got {
                let hint = e[key] == nil ? " (a field left out means none is expected: write `\(key): \(got.stringValue ?? "")`)" : ""
                diffs.append("\(label): \(key): expected \(Self.show(wanted)), got \(Self.show(got))\(hint)")
            }
        }
        check("event", m.item["event"])
        check("properties", m.item["properties"])
        check("traits", m.item["traits"])
        check("sent_at", m.item["sent_at"])
        check("message_id", m.item["message_id"])
        check("problem", m.problem.map { .string($0) })
        check("waiting_for", m.waitingFor.map { .string("\($0.namespace) \($0.key)") })
        return diffs
    }

    /// The identity a rule test states and compares: an account message's domain or account id (never the person
    /// its traits came with, even when the account has none), else the person's Koala identity.
    static func identity(of m: KoalaMessage) -> KoalaIdentity {
        m.endpoint == .account ? KoalaIdentity(domain: m.identity.domain, accountID: m.identity.accountID) : m.identity.koala
    }

    static func show(_ value: JSONValue) -> String {
        value == .null ? "nothing" : value.encoded()
    }

    /// Differences between an expected and an actual value, each as `path: expected X, got Y`.
    static func diff(_ wanted: JSONValue, _ actual: JSONValue, path: String) -> [String] {
        switch (wanted, actual) {
        case (.object(let w), .object(let a)):
            var out: [String] = []
            for key in Set(w.keys).union(a.keys).sorted() {
                out += diff(w[key] ?? .null, a[key] ?? .null, path: "\(path).\(key)")
            }
            return out
        default:
            if Path.looselyEqual(wanted, actual) && sameKind(wanted, actual) { return [] }
            return ["\(path): expected \(show(wanted)), got \(show(actual))"]
        }
    }

    static func sameKind(_ a: JSONValue, _ b: JSONValue) -> Bool {
        switch (a, b) {
        case (.string, .string), (.bool, .bool), (.null, .null), (.array, .array), (.object, .object): true
        case (.int, .int), (.int, .double), (.double, .int), (.double, .double): true
        default: false
        }
    }

    /// YAML → JSON, with YAML's own typing of plain scalars.
    static func json(_ node: Node) -> JSONValue {
        switch node {
        case .scalar(let scalar):
            if scalar.style == .plain {
                if node.null != nil { return .null }
                if let b = node.bool { return .bool(b) }
                if let i = node.int { return .int(Int64(i)) }
                if let d = node.float { return .double(d) }
            }
            return .string(scalar.string)
        case .sequence(let items): return .array(items.map(json))
        case .mapping(let map):
            var out: [String: JSONValue] = [:]
            for (k, v) in map { out[k.string ?? ""] = json(v) }
            return .object(out)
        case .alias: return .null
        }
    }
}

import Foundation
import HTTPTypes
package import KoalaCore
import Yams

/// `koala-router test --update`: rewrites the `expect:` block of every failing test from what the rules
/// produce now, like a snapshot test's update. Only those lines change, so the result is a reviewable diff;
/// comments, other tests and the rest of the file are kept as written.
struct ExpectEdit {
    /// First and last line replaced (1-based, inclusive); `last == first - 1` inserts before `first`.
    let first: Int
    let last: Int
    let lines: [String]

    /// `text` with `edits` applied (they never overlap: one per test).
    static func apply(_ edits: [ExpectEdit], to text: String) -> String {
        var lines = text.components(separatedBy: "\n")
        for edit in edits.sorted(by: { $0.first > $1.first }) {
            let first = min(edit.first - 1, lines.count), last = min(edit.last, lines.count)
            lines.replaceSubrange(first..<max(first, last), with: edit.lines)
        }
        return lines.joined(separator: "\n")
    }
}

/// Writes the expected messages of a rule test as YAML in the style of the shipped test files: one block
/// entry per message, small objects on one line, every scalar read back by the test runner as written.
struct ExpectWriter {
    /// The keys a refreshed expectation keeps only when the old one checked them.
    static let optionalKeys: Set<String> = ["sent_at", "message_id"]
    /// The order of an expected message's keys, for keys the old expectation did not have.
    static let keyOrder = ["route", "output", "email", "profile_id", "domain", "account_id", "event", "properties", "traits",
                           "sent_at", "message_id", "problem", "waiting_for"]

    /// The test file's lines, to see how the old expectation was written (Yams does not keep a mapping's style).
    let source: [String]

    /// Whether `node` was written in flow style (`{ … }`) in the test file.
    func isFlow(_ node: Node?) -> Bool {
        guard case .mapping? = node, let mark = node?.mark, mark.line >= 1, mark.line <= source.count else { return false }
        let line = Array(source[mark.line - 1].unicodeScalars)
        return mark.column >= 1 && mark.column <= line.count && line[mark.column - 1] == "{"
    }

    /// The `expect:` block for `messages`, its key at `indent` spaces. `previous` are the old expectations,
    /// whose choice of optional keys (`sent_at`, `message_id`) is kept per position.
    func block(_ messages: [KoalaMessage], indent: Int, previous: [Node]) -> [String] {
        let pad = String(repeating: " ", count: indent)
        guard !messages.isEmpty else { return [pad + "expect: []"] }
        var lines = [pad + "expect:"]
        for (index, message) in messages.enumerated() {
            var kept = Set<String>()
            var old: Node.Mapping?
            if index < previous.count, case .mapping(let mapping) = previous[index] {
                kept = Self.optionalKeys.filter { mapping[$0] != nil }
                old = mapping
            } else {
                kept = ["sent_at"]   // a new expectation checks the event time: the lifecycle moment Koala records
            }
            var fields: [String: JSONValue] = ["route": .string(message.route), "output": .string(message.output.rawValue)]
            let who = TestFile.identity(of: message)
            let identity: [(String, String?)] = [("email", who.email), ("profile_id", who.profileID),
                                                 ("domain", who.domain), ("account_id", who.accountID)]
            for (key, value) in identity { if let value { fields[key] = .string(value) } }
            for key in ["event", "properties", "traits", "sent_at", "message_id"] {
                guard let value = message.item[key], !Self.optionalKeys.contains(key) || kept.contains(key) else { continue }
                fields[key] = value
            }
            if let problem = message.problem { fields["problem"] = .string(problem) }
            if let waiting = message.waitingFor { fields["waiting_for"] = .string("\(waiting.namespace) \(waiting.key)") }
            let oldOrder = old.map { $0.keys.compactMap(\.string) } ?? []
            let order = oldOrder.filter { fields[$0] != nil } + Self.keyOrder.filter { fields[$0] != nil && !oldOrder.contains($0) }
            for (position, key) in order.enumerated() {
                guard let value = fields[key] else { continue }
                let lead = pad + (position == 0 ? "  - " : "    ")
                lines += entry(key, value, lead: lead, nested: pad + "      ", previous: old?[key])
            }
        }
        return lines
    }

    /// `key: value` on one line when it fits (or when the old expectation wrote it on one line), otherwise a
    /// block mapping whose members are at `nested`. Members keep the old expectation's order; new ones follow
    /// in alphabetical order, so a refreshed test differs from the old one only where the output did.
    func entry(_ key: String, _ value: JSONValue, lead: String, nested: String, previous: Node?) -> [String] {
        let line = lead + Self.scalarKey(key) + ": " + flow(value, previous: previous)
        guard line.count > 120, !isFlow(previous), case .object(let members) = value, !members.isEmpty else { return [line] }
        var lines = [lead + Self.scalarKey(key) + ":"]
        for (k, v) in Self.ordered(members, like: previous) {
            lines += entry(k, v, lead: nested, nested: nested + "  ", previous: previous?[k])
        }
        return lines
    }

    /// An object's members in the order `previous` (the old expectation) wrote them, then the rest sorted.
    static func ordered(_ members: [String: JSONValue], like previous: Node?) -> [(key: String, value: JSONValue)] {
        var order: [String] = []
        if case .mapping(let old)? = previous { order = old.keys.compactMap(\.string).filter { members[$0] != nil } }
        let known = Set(order)
        return (order + members.keys.filter { !known.contains($0) }.sorted()).compactMap { key in members[key].map { (key, $0) } }
    }

    /// A value in YAML flow style: `{ a: 1, b: x }`, `[a, b]`, or a scalar.
    func flow(_ value: JSONValue, previous: Node? = nil) -> String {
        switch value {
        case .object(let members):
            if members.isEmpty { return "{}" }
            return "{ " + Self.ordered(members, like: previous).map { Self.scalarKey($0.key) + ": " + flow($0.value, previous: previous?[$0.key]) }.joined(separator: ", ") + " }"
        case .array(let items):
            return "[" + items.map { flow($0) }.joined(separator: ", ") + "]"
        case .string(let text):
            var quoted = false
            if case .scalar(let old)? = previous { quoted = old.style == .doubleQuoted || old.style == .singleQuoted }
            return !quoted && Self.isPlainSafe(text) ? text : value.encoded()
        default:
            return value.encoded()
        }
    }

    static func scalarKey(_ key: String) -> String {
        isPlainSafe(key) ? key : JSONValue.string(key).encoded()
    }

    /// Whether `text` can be written unquoted, even inside a flow collection, and is read back as the same
    /// text (not a number, boolean or null): otherwise it is written as a JSON string, which YAML reads as is.
    static func isPlainSafe(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, let last = text.unicodeScalars.last,
              first != " ", last != " ", text.utf8.count <= 200 else { return false }
        if "-?:,[]{}#&*!|>'\"%@`~".unicodeScalars.contains(first) { return false }
        if text.unicodeScalars.contains(where: { ",[]{}#\"'\\".unicodeScalars.contains($0) || LogText.needsEscape($0) }) { return false }
        if text.contains(": ") || text.hasSuffix(":") || text.contains(" #") { return false }
        // YAML 1.1 readers (PyYAML, and so the JSON Schema check) load 2024-11-29 and 2024-11-29T09:12:00Z as dates.
        let digits = Array(text.utf8.prefix(10))
        if digits.count == 10, digits[4] == UInt8(ascii: "-"), digits[7] == UInt8(ascii: "-"),
           digits.enumerated().allSatisfy({ $0.offset == 4 || $0.offset == 7 || (48...57).contains($0.element) }) { return false }
        guard let node = try? Yams.compose(yaml: text) else { return false }
        return TestFile.json(node) == .string(text)
    }
}

extension RuleTestRunner {
    /// What `new-test` wrote.
    package struct Scaffold: Sendable {
        /// The test file the test was added to (created when missing).
        package let file: String
        /// The new test's line in that file.
        package let line: Int
        /// Its name.
        package let name: String
        /// The messages its `expect:` holds.
        package let messages: Int
        /// Each route that did not match the sample, and why, when none did.
        package let unmatched: [String]
    }

    /// `koala-router new-test SOURCE SAMPLE`: appends a test for `sample` to `<tests>/<source>.yaml` (creating
    /// the file), with the webhook path relative to the tests folder and `expect:` written from the current output.
    /// `memory`: identities earlier webhooks would have remembered (`stripe_customer` `cus_9` → an email), written
    /// into the test's `memory:` so a route that recalls them is tested as it runs, not in its waiting state.
    package func scaffold(source: String, sample: String, testsDirectory: String, name: String?,
                         memory: [MemoryKey: KoalaIdentity] = [:]) throws(RuleError) -> Scaffold {
        guard let definition = table.sources[source] else {
            throw RuleError(file: sample, line: 0, column: 0, message: "no rule file declares source '\(source)'",
                            hint: "name a source from the routes folder: \(table.sources.keys.sorted().joined(separator: ", "))")
        }
        let sampleURL = URL(fileURLWithPath: sample).standardizedFileURL
        guard let data = FileManager.default.contents(atPath: sampleURL.path) else {
            throw RuleError(file: sample, line: 0, column: 0, message: "cannot read the sample", hint: "give the path of a JSON payload, e.g. routes/samples/\(source)/…json")
        }
        let body = [UInt8](data)
        guard let json = try? JSONTape.parse(body) else {
            throw RuleError(file: sample, line: 0, column: 0, message: "the sample is not valid JSON", hint: "save the webhook's body exactly as the provider sent it")
        }
        var eventType: String?
        if case .success(let webhook) = definition.webhook(body: body, json: json, headers: [:], receivedAt: Date(timeIntervalSince1970: 0),
                                                           secretLabel: "test", rulesVersion: table.version) {
            eventType = webhook.eventType
        }
        let testName = name ?? "\(eventType ?? sampleURL.deletingPathExtension().lastPathComponent) (\(sampleURL.lastPathComponent))"
        let testsURL = URL(fileURLWithPath: testsDirectory).standardizedFileURL
        let file = testsURL.appendingPathComponent("\(source).yaml").path
        var text: String
        if let existing = try? String(contentsOfFile: file, encoding: .utf8) {
            text = existing
        } else {
            // A new file names the editor schema when the project's schema/ folder is beside the rules folder.
            let schema = testsURL.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("schema/rule-tests.schema.json")
            let modeline = FileManager.default.fileExists(atPath: schema.path)
                ? "# yaml-language-server: $schema=\(Self.relativePath(from: testsURL, to: schema))\n" : ""
            text = modeline + "# Rule tests for the '\(source)' source: run with `koala-router test`.\nsource: \(source)\ntests:\n"
        }
        if !text.hasSuffix("\n") { text += "\n" }
        if !text.hasSuffix("\n\n") && text.contains("  - name:") { text += "\n" }
        let line = text.components(separatedBy: "\n").count
        text += "  - name: \(ExpectWriter.isPlainSafe(testName) ? testName : JSONValue.string(testName).encoded())\n"
        let relative = Self.relativePath(from: testsURL, to: sampleURL)
        text += "    webhook: \(ExpectWriter.isPlainSafe(relative) ? relative : JSONValue.string(relative).encoded())\n"
        if !memory.isEmpty {
            // { namespace: { key: { email: … } } }, as JSON (valid YAML, quoted as needed).
            var namespaces: [String: JSONValue] = [:]
            for (key, identity) in memory {
                var entry: [String: JSONValue] = [:]
                if let email = identity.email { entry["email"] = .string(email) }
                if let id = identity.profileID { entry["profile_id"] = .string(id) }
                if let domain = identity.domain { entry["domain"] = .string(domain) }
                var keys: [String: JSONValue] = [:]
                if case .object(let existing)? = namespaces[key.namespace] { keys = existing }
                keys[key.key] = .object(entry)
                namespaces[key.namespace] = .object(keys)
            }
            text += "    memory: \(JSONValue.object(namespaces).encoded())\n"
        }
        text += "    expect: []\n"
        var test = TestFile(path: file, text: text, table: table)
        test.update = true
        test.onlyLine = line
        test.run()
        if let error = test.errors.first { throw error }
        let final = ExpectEdit.apply(test.edits, to: text)
        do {
            try FileManager.default.createDirectory(at: testsURL, withIntermediateDirectories: true)
            try final.write(toFile: file, atomically: true, encoding: .utf8)
        } catch {
            throw RuleError(file: file, line: 0, column: 0, message: "cannot write the test file: \(error)", hint: "check the folder's permissions")
        }
        let routing = WebhookRouter(source: definition)
        var unmatched: [String] = []
        var produced = 0
        if case .success(let webhook) = definition.webhook(body: body, json: json, headers: [:], receivedAt: Date(timeIntervalSince1970: 0),
                                                           secretLabel: "test", rulesVersion: table.version) {
            let results = routing.explain(webhook, memory: WebhookRouter.entries(memory))
            produced = results.reduce(0) { $0 + $1.messages.count }
            if produced == 0 { unmatched = results.map { "\($0.route): \($0.reason)" } }
        }
        return Scaffold(file: file, line: line, name: testName, messages: produced, unmatched: unmatched)
    }

    /// `to` relative to the folder `from`, e.g. `../samples/stripe/invoice.paid.json`.
    static func relativePath(from folder: URL, to file: URL) -> String {
        let base = folder.pathComponents, target = file.pathComponents
        var common = 0
        while common < min(base.count, target.count), base[common] == target[common] { common += 1 }
        let up = Array(repeating: "..", count: base.count - common)
        return (up + target[common...]).joined(separator: "/")
    }
}

import ArgumentParser
import Foundation
import HTTPTypes
import KoalaApp
import KoalaCore
import KoalaRuleTools
import KoalaDelivery
import KoalaStore

/// Loads the rule table for offline commands: missing secrets only disable verification, which these skip.
struct TestRules: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Run the rule tests (routes/tests/*.yaml): sample webhooks in, exact Koala messages out.")

    @Argument(help: "Rules folder (default: --routes, KOALA_ROUTER_ROUTES, the config file or routes).")
    var directory: String?
    @OptionGroup var routesOption: RoutesOption
    @Option(name: .long, help: "Folder of test files (default: <rules>/tests).")
    var tests: String?
    @Flag(name: .long, help: "Rewrite the 'expect:' block of every failing test from what the rules produce now (review the diff).")
    var update = false
    @Option(name: .long, help: "Only the tests whose name contains this text (any case); with --update, only those are rewritten.")
    var filter: String?
    @Flag(name: .long, help: "Print every test that passes too (by default: failures and the summary).")
    var verbose = false
    @OptionGroup var settings: SettingsOption

    func run() async throws {
        let config = try await settings.resolve(["KOALA_ROUTER_ROUTES": directory ?? routesOption.routes])
        let directory = config.routesDirectory
        let table = try config.loadRules()
        let report = RuleTestRunner(table: table).run(directory: tests ?? (directory as NSString).appendingPathComponent("tests"), update: update,
                                                      filter: filter)
        if let filter, report.outcomes.isEmpty, report.errors.isEmpty {
            print("no test's name contains '\(filter)'")
            throw ExitCode(1)
        }
        for error in report.errors { print("error: \(error)") }
        for (file, names) in report.updated {
            print("updated \(file): \(names.count) test(s): \(names.joined(separator: "; "))")
        }
        if update, report.updated.isEmpty, report.errors.isEmpty { print("nothing to update: every test passes") }
        for outcome in report.outcomes {
            if outcome.passed {
                if verbose { print("PASS \(outcome.file):\(outcome.line) \(outcome.name)") }
            } else {
                print("FAIL \(outcome.file):\(outcome.line) \(outcome.name)")
                for failure in outcome.failures { print("  " + failure.replacingOccurrences(of: "\n", with: "\n  ")) }
            }
        }
        if !report.untested.isEmpty {
            print("warning: no test produces a message from: \(report.untested.joined(separator: ", "))")
        }
        let failed = report.outcomes.filter { !$0.passed }.count
        // A broken test file never reads as a passing summary: its errors are counted with the failures.
        let broken = report.errors.isEmpty ? "" : ", \(report.errors.count) error(s) in test files (above): those tests did not run"
        print("\(report.outcomes.count - failed) passed, \(failed) failed\(broken)")
        if !report.passed { throw ExitCode(1) }
    }
}

struct NewTest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "new-test",
        abstract: "Add a rule test for a sample webhook, its 'expect:' written from what the rules produce now.",
        discussion: """
            The test is appended to <rules>/tests/<source>.yaml (created when missing). Review what it expects:
            it is what the rules do today, right or wrong.

            Example:
              koala-router new-test stripe routes/samples/stripe/invoice.paid.json
            """)

    @Argument(help: "The source, as named by a rule file.")
    var source: String
    @Argument(help: "The sample webhook body (a JSON file).")
    var sample: String
    @OptionGroup var routesOption: RoutesOption
    @Option(name: .long, help: "Folder of test files (default: <rules>/tests).")
    var tests: String?
    @Option(name: .long, help: "The test's name (default: the event type and the sample's file name).")
    var name: String?
    @Option(name: .long, parsing: .singleValue, help: "A remembered identity, namespace:key=email (repeatable), written into the test's memory:.")
    var memory: [String] = []
    @OptionGroup var settings: SettingsOption

    func run() async throws {
        let config = try await settings.resolve(["KOALA_ROUTER_ROUTES": routesOption.routes])
        let table = try config.loadRules()
        let folder = tests ?? (config.routesDirectory as NSString).appendingPathComponent("tests")
        let remembered = try parseMemoryArguments(memory).mapValues(\.identity)
        do {
            let made = try RuleTestRunner(table: table).scaffold(source: source, sample: sample, testsDirectory: folder, name: name,
                                                                 memory: remembered)
            print("added \(made.file):\(made.line) \(made.name): expects \(made.messages) message(s)")
            if !made.unmatched.isEmpty {
                print("note: no route produces a message for this sample; if one should, fix the rules and run 'koala-router test --update':")
                for line in made.unmatched { print("  " + line) }
            }
        } catch {
            print("error: \(error)")
            throw ExitCode(1)
        }
    }
}

struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Route one payload through the rules: which routes match and why the others do not, and the exact Koala requests.",
        discussion: """
            Examples:
              koala-router simulate stripe routes/samples/stripe/invoice.paid.json
              koala-router simulate clerk user.json --header 'svix-id: msg_1'
              koala-router simulate stripe sub.json --memory stripe_customer:cus_9=ada@acme.io
              koala-router simulate stripe --stored evt_123     (a webhook already in the database)
              koala-router simulate stripe invoice.json --destination segment   (the Segment-compatible request)

            Exit status: 0 when something would be sent, 3 when nothing would (the reasons are printed), 1 when the
            payload is refused (not JSON, no id or type), 2 for a usage error.
            """)

    @Argument(help: "The source, as named by a rule file.")
    var source: String
    @Argument(help: "The payload file (omit with --stored).")
    var file: String?
    @OptionGroup var routesOption: RoutesOption
    @Option(name: .long, parsing: .singleValue, help: "A header to send along, 'Name: value' (repeatable).")
    var header: [String] = []
    @Option(name: .long, parsing: .singleValue, help: "A remembered identity, namespace:key=email (repeatable).")
    var memory: [String] = []
    @Option(name: .long, help: "Explain a stored webhook by its id instead of a file.")
    var stored: String?
    @Option(name: .long, help: "SQLite file or postgres:// URL for --stored (env KOALA_ROUTER_DATABASE, default data/koala-router.sqlite).")
    var database: String?
    @Option(name: .long, help: "Whose requests to show: koala, segment, rudderstack or segment-compatible (default: every destination configured; Koala's alone when none is).")
    var destination: Destination?
    @OptionGroup var settings: SettingsOption

    func run() async throws {
        let config = try await settings.resolve(["KOALA_ROUTER_ROUTES": routesOption.routes, "KOALA_ROUTER_DATABASE": database])
        let table = try config.loadRules()
        guard let definition = table.sources[source] else {
            FileHandle.standardError.write(Data("unknown source '\(source)'; sources: \(table.sources.keys.sorted().joined(separator: ", "))\n".utf8))
            throw ExitCode(2)
        }
        var remembered = try parseMemoryArguments(memory)
        let webhook: VerifiedWebhook
        var storedStates: [Destination: [String: StoredMessage]] = [:]
        if let stored {
            let source = self.source
            let found = try await config.withStore { store -> (VerifiedWebhook, [MemoryKey: Remembered], [Destination: [String: StoredMessage]])? in
                guard let w = try await store.storedWebhook(source: source, webhookID: stored) else { return nil }
                var states: [Destination: [String: StoredMessage]] = [:]
                for target in Destination.allCases {
                    states[target] = try await store.storedMessages(source: source, webhookID: stored, destination: target)
                }
                return (w, try await store.recall(source: source, keys: WebhookRouter(source: definition).recallKeys(w)), states)
            }
            guard let (w, recalled, states) = found else {
                FileHandle.standardError.write(Data("no stored webhook \(source)/\(stored) in \(PostgresURL.redacted(config.database))\n".utf8))
                throw ExitCode(1)
            }
            webhook = w
            storedStates = states
            for (k, v) in w.memoryAsRouted(recalled) where remembered[k] == nil { remembered[k] = v }
            print("stored webhook \(source)/\(stored), received \(Timestamps.iso(w.receivedAt)), routed then by rules \(w.rulesVersion), now by \(table.version)")
        } else {
            guard let file, let data = FileManager.default.contents(atPath: file) else {
                throw ValidationError("give a payload file (or --stored ID)")
            }
            var headers = HTTPFields()
            for h in header {
                let parts = h.split(separator: ":", maxSplits: 1)
                guard parts.count == 2, let name = HTTPField.Name(parts[0].trimmingCharacters(in: .whitespaces)) else {
                    throw ValidationError("--header takes 'Name: value', got '\(h)'")
                }
                headers[name] = parts[1].trimmingCharacters(in: .whitespaces)
            }
            let body = [UInt8](data)
            let json: JSONTape
            do { json = try JSONTape.parse(body) } catch {
                print("400: body is not valid JSON: \(error)")
                throw ExitCode(1)
            }
            switch definition.webhook(body: body, json: json, headers: headers, receivedAt: Date(), secretLabel: "simulate", rulesVersion: table.version) {
            case .success(let w): webhook = w
            case .failure(let problem):
                print("400: \(problem.message)")
                throw ExitCode(1)
            }
        }
        print("webhook id \(webhook.webhookID), type \(webhook.eventType), time \(Timestamps.iso(webhook.eventTime))")
        if let problem = webhook.eventTimeProblem { print("warning: \(problem); the time of receipt is used") }
        let configuredDestinations = [Destination.koala] + ((try? config.segmentDestinations()) ?? []).map(\.destination)
        let routing = WebhookRouter(source: definition).routing(webhook, memory: remembered, destinations: destination.map { [$0] } ?? configuredDestinations)
        var differing: [(String, String, String)] = []
        for result in routing.results {
            print("\(result.matched ? "✓" : "✗") \(result.route): \(result.reason)")
            for m in result.messages {
                var state = "queued"
                if let problem = m.problem { state = "dead letter: \(problem)" }
                if let waits = m.waitingFor { state = "waits for \(waits.namespace) '\(waits.key)'" }
                // A stored webhook: where its message is now (dry_run: handled without a key, never sent).
                if stored != nil {
                    let now = storedStates.sorted { $0.key < $1.key }.compactMap { target, messages in
                        messages[m.messageID].map { "\(target.rawValue) \($0.state.name)" }
                    }
                    state += now.isEmpty ? "; not stored: today's rules produce it, the stored webhook did not" : "; stored: " + now.joined(separator: ", ")
                    // Today's rules may say something else than what was stored (and perhaps sent) for this id.
                    if let old = storedStates[.koala]?[m.messageID], old.itemJSON != m.item.encoded() {
                        state += "; DIFFERS from the stored content (replay queues today's, unless it was delivered)"
                        differing.append((m.messageID, old.itemJSON, m.item.encoded()))
                    }
                }
                print("    \(m.output) \(m.messageID) → \(m.endpoint.path) \(m.identity.topLevel.map { "\($0.0)=\($0.1)" }.joined(separator: " ")) [\(state)]")
                for dropped in m.droppedFields {
                    print("      note: \(dropped.field) \(dropped.reason): left out, the message goes by the other field")
                }
            }
        }
        for (id, old, new) in differing {
            print("differs: \(id)\n  stored: \(old)\n  today:  \(new)")
        }
        if stored != nil, let kept = storedStates[.koala] {
            let produced = Set(routing.messages.map(\.messageID))
            for (id, message) in kept.sorted(by: { $0.key < $1.key }) where !produced.contains(id) {
                print("stored, not produced by today's rules: \(id) (\(message.route), \(message.state.name))")
            }
        }
        for note in WebhookRouter(source: definition).mrrNotes(webhook, memory: remembered) {
            print("note: \(note)")
        }
        for r in routing.remembers {
            print("remembers \(r.key.namespace) '\(r.key.key)' → \(r.value.encoded())")
        }
        let sendable = routing.messages.filter { $0.problem == nil && $0.waitingFor == nil }
        let outbox = sendable.enumerated().map { index, m in
            OutboxMessage(seq: Int64(index), messageID: m.messageID, source: m.source, route: m.route, endpoint: m.endpoint, kind: m.kind,
                          identity: m.identity, itemJSON: m.item.encoded(), eventTime: m.eventTime, createdAt: Date(), attempts: 0)
        }
        let shown = destination.map { [$0] } ?? configuredDestinations
        for target in shown {
            let mine = sendable.enumerated().filter { $0.element.destinations.contains(target) }.map { outbox[$0.offset] }
            if shown.count > 1 { print("— \(target.rawValue)") }
            if target == .koala {
                for batch in Batcher.plan(mine).flatMap({ $0 }) {
                    print("POST /web/projects/<key>/\(batch.endpoint.path)\n\(batch.body)")
                }
            } else {
                let plan = SegmentMapping.plan(mine)
                for batch in plan.batches {
                    print("POST /v1/batch   (Authorization: Basic base64(<write key>:))\n\(batch.body)")
                }
                for refused in plan.refused {
                    print("not sendable to \(target.rawValue): \(refused.messageID): \(refused.reason)")
                }
            }
        }
        if routing.messages.isEmpty {
            // A script (or a person reading $?) learns that this payload sends nothing: the reasons are above.
            print("no output: nothing would be sent")
            throw ExitCode(3)
        }
    }
}

extension Destination: ExpressibleByArgument {}

/// `--memory namespace:key=email` arguments (simulate, new-test), as remembered identities.
func parseMemoryArguments(_ arguments: [String]) throws -> [MemoryKey: Remembered] {
    var remembered: [MemoryKey: Remembered] = [:]
    for entry in arguments {
        let parts = entry.split(separator: "=", maxSplits: 1)
        let key = parts.first?.split(separator: ":", maxSplits: 1) ?? []
        guard parts.count == 2, key.count == 2 else { throw ValidationError("--memory takes namespace:key=email, got '\(entry)'") }
        let memoryKey = MemoryKey(namespace: String(key[0]), key: String(key[1]))
        remembered[memoryKey] = Remembered(key: memoryKey, identity: KoalaIdentity(email: String(parts[1])))
    }
    return remembered
}

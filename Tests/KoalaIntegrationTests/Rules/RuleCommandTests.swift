import Foundation
import Testing
@testable import KoalaCore
import KoalaTestSupport

/// The rule commands as an ops engineer runs them: the real binary.
@Suite("Rule commands")
struct RuleCommandTests {
    func run(_ arguments: [String], environment: [String: String] = [:], in folder: String? = nil) throws -> (status: Int32, output: String) {
        let binary = try #require(CrashTests.binary, "build the koala-router executable first (swift build --build-tests)")
        return try runProgram(binary, arguments, environment: environment.merging(["LOG_LEVEL": "critical"]) { a, _ in a }, in: folder)
    }

    /// Issue 16: a broken test file never reads as a passing summary.
    @Test func aBrokenTestFileIsNoPassingSummary() throws {
        let dir = temporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir + "/tests", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: repositoryRoot + "/routes/stripe.yaml", toPath: dir + "/stripe.yaml")
        try """
            source: stripe
            tests:
              - name: a typo in a key
                webhok: x.json
                expect: []
            """.write(toFile: dir + "/tests/stripe.yaml", atomically: true, encoding: .utf8)
        let result = try run(["test", dir], environment: ["STRIPE_WEBHOOK_SECRET": "whsec_rule_tests_x"])
        #expect(result.status == 1)
        #expect(result.output.contains("unknown key 'webhok' in a test; did you mean 'webhook'?"), "\(result.output)")
        #expect(result.output.contains("0 passed, 0 failed, 2 error(s) in test files (above): those tests did not run"), "\(result.output)")
    }

    /// A copy of the shipped rules, samples and tests.
    func shippedCopy() throws -> String {
        let dir = temporaryDirectory() + "/routes"
        try FileManager.default.copyItem(atPath: repositoryRoot + "/routes", toPath: dir)
        return dir
    }

    func testFiles(_ dir: String) throws -> [String: String] {
        var out: [String: String] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: dir + "/tests") where name.hasSuffix(".yaml") {
            out[name] = try String(contentsOfFile: dir + "/tests/" + name, encoding: .utf8)
        }
        return out
    }

    static let noSecrets: [String: String] = [:]

    /// Issue 16, part 4: `test --update` on every shipped test file. Emptied, every `expect:` is written back
    /// from the output and passes; refreshed after one wrong value, each file is byte-identical to the shipped
    /// one (the diff to review is only what changed); a passing suite is left alone.
    @Test func testUpdateRewritesExpectationsOnEveryShippedFile() throws {
        let dir = try shippedCopy()
        let shipped = try testFiles(dir)
        let baseline = try run(["test", dir, "--verbose"])
        #expect(baseline.status == 0, "\(baseline.output)")
        let passing = baseline.output.split(separator: "\n").filter { $0.hasPrefix("PASS ") }.count
        #expect(passing > 100)

        // Nothing to do on the shipped files: nothing changes.
        let idle = try run(["test", dir, "--update"])
        #expect(idle.status == 0 && idle.output.contains("nothing to update: every test passes"), "\(idle.output)")
        #expect(try testFiles(dir) == shipped)

        // One wrong value per file: refreshed, each file is the shipped one again.
        for (name, text) in shipped {
            let wrong = text.replacingOccurrences(of: "billing_provider: ", with: "billing_provider: x", options: [], range: text.range(of: "billing_provider: "))
            #expect(wrong != text || !text.contains("billing_provider"), "\(name)")
            try wrong.write(toFile: dir + "/tests/" + name, atomically: true, encoding: .utf8)
        }
        let refreshed = try run(["test", dir, "--update"])
        #expect(refreshed.status == 0, "\(refreshed.output)")
        #expect(refreshed.output.contains("updated \(dir)/tests/stripe.yaml: 1 test(s): a paid invoice is a Payment Succeeded event on the payer"), "\(refreshed.output)")
        #expect(try testFiles(dir) == shipped)

        // Every expectation emptied: written back from the output, every test passes again.
        for (name, text) in shipped {
            var lines: [String] = []
            var dropping: Int?
            for line in text.components(separatedBy: "\n") {
                let indent = line.prefix { $0 == " " }.count
                if let d = dropping, !line.trimmingCharacters(in: .whitespaces).isEmpty, indent > d { continue }
                dropping = nil
                if line.trimmingCharacters(in: .whitespaces).hasPrefix("expect:") {
                    lines.append(String(repeating: " ", count: indent) + "expect: []")
                    dropping = indent
                } else {
                    lines.append(line)
                }
            }
            try lines.joined(separator: "\n").write(toFile: dir + "/tests/" + name, atomically: true, encoding: .utf8)
        }
        let emptied = try run(["test", dir])
        #expect(emptied.status == 1)
        let rewritten = try run(["test", dir, "--update"])
        #expect(rewritten.status == 0, "\(rewritten.output)")
        #expect(rewritten.output.contains("\(passing) passed, 0 failed"), "\(rewritten.output)")
        let again = try run(["test", dir])
        #expect(again.status == 0 && again.output.contains("\(passing) passed, 0 failed"), "\(again.output)")
    }

    /// `--update` leaves a test file with errors alone: its mistakes come first.
    @Test func testUpdateLeavesABrokenFileAlone() throws {
        let dir = try shippedCopy()
        let path = dir + "/tests/stripe.yaml"
        let broken = try String(contentsOfFile: path, encoding: .utf8)
            .replacingOccurrences(of: "    webhook: ../samples/stripe/invoice.paid.json", with: "    webhok: ../samples/stripe/invoice.paid.json")
            .replacingOccurrences(of: "amount: 49\n", with: "amount: 48\n")
        try broken.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try run(["test", dir, "--update"])
        #expect(result.status == 1)
        #expect(result.output.contains("unknown key 'webhok' in a test; did you mean 'webhook'?"), "\(result.output)")
        #expect(!result.output.contains("updated \(path)"))
        #expect(try String(contentsOfFile: path, encoding: .utf8) == broken)
    }

    /// `new-test SOURCE SAMPLE` adds a test whose expectation is the current output, with the sample's path
    /// relative to the tests folder, creating the file when the source has none.
    @Test func newTestScaffoldsAPassingTest() throws {
        let dir = try shippedCopy()
        try FileManager.default.removeItem(atPath: dir + "/tests/stripe.yaml")
        let first = try run(["new-test", "stripe", dir + "/samples/stripe/invoice.paid.json", "--routes", dir])
        #expect(first.status == 0, "\(first.output)")
        #expect(first.output == "added \(dir)/tests/stripe.yaml:4 invoice.paid (invoice.paid.json): expects 1 message(s)\n")
        let second = try run(["new-test", "stripe", dir + "/samples/stripe/checkout.session.completed.json", "--routes", dir, "--name", "a checkout"])
        #expect(second.status == 0, "\(second.output)")
        let text = try String(contentsOfFile: dir + "/tests/stripe.yaml", encoding: .utf8)
        #expect(text.hasPrefix("""
            # Rule tests for the 'stripe' source: run with `koala-router test`.
            source: stripe
            tests:
              - name: invoice.paid (invoice.paid.json)
                webhook: ../samples/stripe/invoice.paid.json
                expect:
                  - route: payment-succeeded
                    output: track
                    email: ada.lovelace@analytical-engines.io
                    event: Payment Succeeded
            """))
        // Quoted, so YAML 1.1 readers (PyYAML, the JSON Schema check) read text, not a date.
        #expect(text.contains("    sent_at: \"2024-11-29T09:12:00.000Z\"\n"))
        #expect(text.contains("  - name: a checkout\n    webhook: ../samples/stripe/checkout.session.completed.json\n"))
        #expect(text.contains("        traits:\n          email: ada.lovelace@analytical-engines.io\n          is_customer: true\n          name: Ada Lovelace\n"))
        let tests = try run(["test", dir, "--verbose"])
        #expect(tests.output.contains("PASS \(dir)/tests/stripe.yaml:4 invoice.paid (invoice.paid.json)"), "\(tests.output)")
        #expect(tests.output.contains("PASS \(dir)/tests/stripe.yaml:"), "\(tests.output)")
        #expect(tests.status == 0, "\(tests.output)")

        // A sample no route takes: an empty expectation, and each route's reason.
        try #"{"id":"evt_x","object":"event","type":"charge.dispute.created","created":1732871520,"data":{"object":{}}}"#
            .write(toFile: dir + "/dispute.json", atomically: true, encoding: .utf8)
        let none = try run(["new-test", "stripe", dir + "/dispute.json", "--routes", dir])
        #expect(none.status == 0)
        #expect(none.output.contains("expects 0 message(s)"))
        #expect(none.output.contains("  payment-succeeded: type 'charge.dispute.created' is not invoice.paid"), "\(none.output)")
        #expect(try String(contentsOfFile: dir + "/tests/stripe.yaml", encoding: .utf8).hasSuffix("    webhook: ../dispute.json\n    expect: []\n"))
        let unknown = try run(["new-test", "strpe", dir + "/dispute.json", "--routes", dir])
        #expect(unknown.status == 1 && unknown.output.contains("no rule file declares source 'strpe'"), "\(unknown.output)")
    }

    /// `check` routes the samples too; its exit status says what it found: 0 nothing, 1 an error, 2 warnings only.
    @Test func checkWithSamplesSaysWhatItFoundInItsExitStatus() throws {
        let clean = try run(["check", repositoryRoot + "/routes"])
        #expect(clean.status == 0, "\(clean.output)")
        #expect(clean.output.contains("samples checked: chargebee "), "\(clean.output)")
        #expect(clean.output.contains("0 error(s), 0 warning(s)"), "\(clean.output)")

        // Two routes sending the same event for one webhook: a warning, status 2.
        let dir = try shippedCopy()
        let stripe = try String(contentsOfFile: dir + "/stripe.yaml", encoding: .utf8)
        try (stripe + """

              - name: invoice-paid-again
                when: { type: invoice.paid }
                person: { email: body.data.object.customer_email }
                track: { event: Payment Succeeded }
            """).write(toFile: dir + "/stripe.yaml", atomically: true, encoding: .utf8)
        let warned = try run(["check", dir])
        #expect(warned.status == 2, "\(warned.output)")
        #expect(warned.output.contains("routes 'payment-succeeded' and 'invoice-paid-again' both send 'Payment Succeeded' for \(dir)/samples/stripe/invoice.paid.json"), "\(warned.output)")

        // An identity path at a number: an error, status 1, at the rule's line and column.
        try stripe.replacingOccurrences(of: "      email: body.data.object.customer_email\n", with: "      email: body.data.object.amount_paid\n", options: [], range: stripe.range(of: "      email: body.data.object.customer_email\n"))
            .write(toFile: dir + "/stripe.yaml", atomically: true, encoding: .utf8)
        let failed = try run(["check", dir])
        #expect(failed.status == 1, "\(failed.output)")
        #expect(failed.output.contains("error: \(dir)/stripe.yaml:25:14: person.email ← body.data.object.amount_paid is 4900 (a number) in \(dir)/samples/stripe/invoice.paid.json, not text"), "\(failed.output)")
        #expect(try run(["check", dir, "--no-samples"]).status == 0)
    }

    /// Run where there is no routes folder, the message says where it looked and what to do.
    @Test func outsideTheProjectFolderTheErrorSaysWhereItLooked() throws {
        let elsewhere = temporaryDirectory()
        let (status, output) = try run(["check"], in: elsewhere)
        #expect(status == 1)
        #expect(output.contains("routes: cannot read the rules folder: there is no folder \(URL(fileURLWithPath: elsewhere).standardizedFileURL.path)/routes; run from the folder that holds 'routes', or name the rules folder"), "\(output)")
    }
}

extension RuleCommandTests {
    /// Issue 28: `simulate` of a payload that sends nothing says so and exits 3 (0 when something would be sent).
    @Test func simulateExitsThreeWhenNothingWouldBeSent() throws {
        let file = temporaryDirectory() + "/unrouted.json"
        try #"{"id":"evt_none","type":"balance.available","created":1732871520,"data":{"object":{}}}"#.write(toFile: file, atomically: true, encoding: .utf8)
        let environment = ["STRIPE_WEBHOOK_SECRET": "whsec_rule_tests_x"]
        let nothing = try run(["simulate", "stripe", file, "--routes", repositoryRoot + "/routes"], environment: environment)
        #expect(nothing.status == 3, "\(nothing.output)")
        #expect(nothing.output.contains("no output: nothing would be sent"), "\(nothing.output)")
        let something = try run(["simulate", "stripe", repositoryRoot + "/routes/samples/stripe/invoice.paid.json", "--routes", repositoryRoot + "/routes"],
                                environment: environment)
        #expect(something.status == 0, "\(something.output)")
    }
}

extension RuleCommandTests {
    /// Issue 28: `test` prints failures and the summary (every PASS with --verbose), and `--filter` runs the tests
    /// whose name contains a text, fed by the tests they name in `after:`.
    @Test func testIsQuietAndRunsOneTestByName() throws {
        let environment = ["STRIPE_WEBHOOK_SECRET": "whsec_rule_tests_x", "PADDLE_WEBHOOK_SECRET": "pdl_ntfset_rule_tests_x"]
        let all = try run(["test", repositoryRoot + "/routes"], environment: environment)
        #expect(all.status == 0)
        #expect(!all.output.contains("PASS "), "\(all.output)")
        #expect(all.output.hasSuffix(" passed, 0 failed\n"), "\(all.output)")
        #expect(all.output.split(separator: "\n").count == 1, "one line when all is well: \(all.output)")

        let one = try run(["test", repositoryRoot + "/routes", "--filter", "life 3: UPGRADED", "--verbose"], environment: environment)
        #expect(one.status == 0, "\(one.output)")
        #expect(one.output.contains("PASS \(repositoryRoot)/routes/tests/stripe.yaml:"), "\(one.output)")
        #expect(one.output.contains("life 3: upgraded from Growth to Scale"), "\(one.output)")
        #expect(one.output.hasSuffix("1 passed, 0 failed\n"), "\(one.output)")

        let none = try run(["test", repositoryRoot + "/routes", "--filter", "no such test"], environment: environment)
        #expect(none.status == 1 && none.output.contains("no test's name contains 'no such test'"), "\(none.output)")
    }
}

extension RuleCommandTests {
    /// Issue 28: `new-test --memory` writes the identity a route recalls into the test, so the test records what the
    /// route sends, not its waiting state.
    @Test func newTestWritesTheMemoryItWasGiven() throws {
        let dir = try shippedCopy()
        let sample = dir + "/samples/stripe/customer.subscription.created.coupon.json"
        let waiting = try run(["new-test", "stripe", sample, "--routes", dir, "--name", "scaffolded without memory"])
        #expect(waiting.status == 0, "\(waiting.output)")
        let made = try run(["new-test", "stripe", sample, "--routes", dir, "--name", "scaffolded with memory", "--memory", "stripe_customer:cus_QkoalaCoupon01=grace@hopper.dev"])
        #expect(made.status == 0, "\(made.output)")
        let text = try String(contentsOfFile: dir + "/tests/stripe.yaml", encoding: .utf8)
        let withMemory = try #require(text.components(separatedBy: "  - name: scaffolded with memory\n").last)
        #expect(withMemory.contains(#"    memory: {"stripe_customer":{"cus_QkoalaCoupon01":{"email":"grace@hopper.dev"}}}"#), "\(withMemory)")
        #expect(withMemory.contains("email: grace@hopper.dev"), "\(withMemory)")
        #expect(withMemory.contains("domain: hopper.dev"), "\(withMemory)")
        #expect(!withMemory.contains("waiting_for"), "\(withMemory)")
        let without = try #require(text.components(separatedBy: "  - name: scaffolded without memory\n").last?.components(separatedBy: "  - name: scaffolded with memory").first)
        #expect(without.contains("waiting_for: stripe_customer cus_QkoalaCoupon01"), "\(without)")
        let tests = try run(["test", dir, "--filter", "scaffolded"], environment: ["STRIPE_WEBHOOK_SECRET": "whsec_rule_tests_x"])
        #expect(tests.status == 0 && tests.output.hasSuffix("2 passed, 0 failed\n"), "[\(tests.output)]")
    }
}

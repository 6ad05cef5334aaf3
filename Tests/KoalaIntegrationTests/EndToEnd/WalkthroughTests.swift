import AsyncHTTPClient
import Foundation
import Testing
@testable import KoalaCore
import KoalaTestSupport

/// Issue 16, part 7: README's "Adding a mapping, step by step", run as written — the edit it shows, then each
/// command of its block, in a shell, against a running router on a copy of the rules.
@Suite("README authoring walkthrough")
struct WalkthroughTests {
    /// The README's walkthrough: the YAML line to add and the command lines.
    static func walkthrough() throws -> (edit: String, commands: [String]) {
        let readme = try String(contentsOfFile: repositoryRoot + "/README.md", encoding: .utf8)
        let section = try #require(readme.components(separatedBy: "### Adding a mapping, step by step").dropFirst().first)
        let yaml = try #require(section.components(separatedBy: "```yaml\n").dropFirst().first?.components(separatedBy: "```").first)
        let block = try #require(section.components(separatedBy: "<!-- walkthrough -->\n```sh\n").dropFirst().first?.components(separatedBy: "```").first)
        let commands = block.split(separator: "\n").map { line in
            String(line.components(separatedBy: "  #").first ?? "").trimmingCharacters(in: .whitespaces)
        }
        return (yaml, commands.filter { !$0.isEmpty })
    }

    /// The shell block of README's "Send it a signed webhook".
    static func sendBlock() throws -> String {
        let readme = try String(contentsOfFile: repositoryRoot + "/README.md", encoding: .utf8)
        let section = try #require(readme.components(separatedBy: "## Send it a signed webhook").dropFirst().first)
        return try #require(section.components(separatedBy: "```sh\n").dropFirst().first?.components(separatedBy: "```").first)
    }

    func shell(_ command: String, environment: [String: String]) throws -> (status: Int32, output: String) {
        try runProgram("/bin/bash", ["-c", command], environment: environment, in: temporaryDirectory())   // any directory
    }

    /// The rule table's version the running service reports (`koala_router_rules_info{version="…"} 1`).
    func rulesVersion(port: Int) async -> String? {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/metrics")
        request.method = .GET
        guard let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(2)),
              let body = try? await response.body.collect(upTo: 1 << 20) else { return nil }
        let line = String(buffer: body).split(separator: "\n").first { $0.hasPrefix("koala_router_rules_info{version=\"") && ($0.hasSuffix(" 1") || $0.hasSuffix(" 1.0")) }
        return line.map { String($0.dropFirst("koala_router_rules_info{version=\"".count).prefix { $0 != "\"" }) }
    }

    @Test func theWalkthroughWorksPastedAsWritten() async throws {
        let binary = try #require(CrashTests.binary, "build the koala-router executable first (swift build --build-tests)")
        let (edit, commands) = try Self.walkthrough()
        #expect(commands.count == 7, "\(commands)")

        // A clone of our own at ~/koala-router (README's KR), the rules under git, as in a real checkout.
        let home = temporaryDirectory()
        let clone = home + "/koala-router"
        try FileManager.default.createDirectory(atPath: clone, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: repositoryRoot + "/routes", toPath: clone + "/routes")
        let base = ["PATH": URL(fileURLWithPath: binary).deletingLastPathComponent().path + ":/usr/local/bin:/usr/bin:/bin", "HOME": home,
                    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"]
        let git = try shell("git -C \"\(clone)\" init -q && git -C \"\(clone)\" add -A && git -C \"\(clone)\" commit -qm rules", environment: base)
        #expect(git.status == 0, "\(git.output)")

        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let router = try CrashTests.Router(binary: binary, database: temporaryDirectory() + "/db.sqlite", koala: koala,
                                           extra: ["KOALA_ROUTER_ROUTES": clone + "/routes", "KOALA_ROUTER_RULES_POLL_S": "0.2",
                                                   "STRIPE_WEBHOOK_SECRET": "whsec_local_demo"])   // as README's Set up starts it
        defer { router.kill9() }
        #expect(await router.ready())
        let before = await rulesVersion(port: router.port)

        // "Send it a signed webhook", as written (only the router's address is this test's).
        let sent = try shell(try Self.sendBlock(), environment: base.merging(["KOALA_ROUTER_URL": "http://127.0.0.1:\(router.port)", "LOG_LEVEL": "critical"]) { $1 })
        #expect(sent.status == 0, "\(sent.output)")
        #expect(sent.output.hasPrefix(#"200 {"dead_lettered":0,"messages":1,"source":"stripe","status":"accepted","webhook_id":"evt_1QkoalaInvoicePaid0001"}"#), "\(sent.output)")

        // The edit, as README shows it: one line under payment-succeeded's properties.
        let path = clone + "/routes/stripe.yaml"
        let rules = try String(contentsOfFile: path, encoding: .utf8)
        let anchor = "        invoice_number: body.data.object.number\n"
        let at = try #require(rules.range(of: anchor))
        try rules.replacingCharacters(in: at, with: anchor + edit).write(toFile: path, atomically: true, encoding: .utf8)

        let environment = base.merging(["KR": clone, "KOALA_ROUTER_ROUTES": clone + "/routes", "STRIPE_WEBHOOK_SECRET": "whsec_local_demo",
                                        "LOG_LEVEL": "critical"]) { $1 }
        var outputs: [(status: Int32, output: String)] = []
        for command in commands {
            if command.contains("rules_info") {
                // The service polls the folder: wait for the reload before asking it.
                #expect(await eventually(timeout: 10) { await self.rulesVersion(port: router.port) != before })
            }
            outputs.append(try shell(command.replacingOccurrences(of: "127.0.0.1:8080", with: "127.0.0.1:\(router.port)"), environment: environment))
        }
        let (check, failing, update, diff, passing, simulate, running) = (outputs[0], outputs[1], outputs[2], outputs[3], outputs[4], outputs[5], outputs[6])
        #expect(check.status == 0, "\(check.output)")
        #expect(check.output.contains("0 error(s), 0 warning(s)"), "\(check.output)")
        #expect(failing.status == 1)
        #expect(failing.output.contains(#"properties.customer_name: expected nothing, got "Ada Lovelace""#), "\(failing.output)")
        #expect(update.status == 0 && update.output.contains("updated \(clone)/routes/tests/stripe.yaml: 1 test(s)"), "\(update.output)")
        #expect(diff.output.contains("+          customer_name: Ada Lovelace\n"), "\(diff.output)")
        let added = diff.output.split(separator: "\n").filter { $0.hasPrefix("+") && !$0.hasPrefix("+++") }
        #expect(added == ["+          customer_name: Ada Lovelace"], "one line added: \(diff.output)")
        #expect(passing.status == 0 && passing.output.contains(" passed, 0 failed"), "\(passing.output)")
        #expect(simulate.output.contains(#""customer_name":"Ada Lovelace""#), "\(simulate.output)")
        let version = try #require(check.output.split(separator: "\n").first { $0.hasPrefix("rules version ") }?.dropFirst("rules version ".count))
        #expect(running.output.contains(#"koala_router_rules_info{version="\#(version)"} 1"#), "\(running.output)")
    }
}

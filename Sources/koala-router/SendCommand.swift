import ArgumentParser
import AsyncHTTPClient
import Foundation
import KoalaCore

/// `koala-router send SOURCE FILE`: a provider's webhook, signed the way that provider signs it, posted to a
/// running router. Nothing is sent when the payload cannot be read or the source has no secret here.
struct SendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Sign a payload with the source's own scheme and secret, and POST it to a running router.",
        discussion: """
            The secret is read as the router reads it (the source's 'secrets:' environment variables), so the
            same settings sign and verify. Prints the router's answer; exits 1 unless it is 2xx, and sends nothing
            (exit 2) when the file cannot be read or the source has no secret here.

            Examples:
              STRIPE_WEBHOOK_SECRET=whsec_local_demo koala-router send stripe routes/samples/stripe/invoice.paid.json
              koala-router send clerk user.json --id msg_123 --url https://router.example.com
            """)

    @Argument(help: "The source, as named by a rule file.")
    var source: String
    @Argument(help: "The payload file, sent byte for byte.")
    var file: String
    @Option(name: .long, help: "The router's base URL (env KOALA_ROUTER_URL, default http://127.0.0.1:$KOALA_ROUTER_PORT or :8080).")
    var url: String?
    @Option(name: .long, help: "The webhook id, for schemes that sign one in a header (Svix/Standard Webhooks); default: a new one.")
    var id: String?
    @OptionGroup var routesOption: RoutesOption
    @OptionGroup var settings: SettingsOption

    func run() async throws {
        let config = try await settings.resolve(["KOALA_ROUTER_ROUTES": routesOption.routes])
        let loaded = Result { () throws(RuleTableErrors) -> RuleTable in try RuleLoader(environment: config.environment).load(directory: config.routesDirectory) }
        let table: RuleTable
        switch loaded {
        case .success(let whole):
            table = whole
        case .failure(let errors):
            // Exactly when a broken folder is being fixed, one wants to check that the running router still serves
            // its last good table: signing needs only this source's own file.
            guard let (path, text) = Self.sourceFile(source, in: config.routesDirectory),
                  let alone = try? RuleLoader(environment: config.environment).load(files: [(path, text)]) else {
                FileHandle.standardError.write(Data("\(errors)\nkoala-router: the rules folder is broken and \(source)'s own file cannot be read alone; nothing was sent\n".utf8))
                throw ExitCode(1)
            }
            FileHandle.standardError.write(Data(("koala-router: the rules folder is broken (a running router keeps serving its last good table):\n"
                + "\(errors)\nsigning with \(path) alone, which loads\n").utf8))
            table = alone
        }
        guard let definition = table.sources[source] else {
            fail("no rule file declares source '\(source)'; sources: \(table.sources.keys.sorted().joined(separator: ", "))")
        }
        guard case .enabled(let verifier) = definition.state else {
            if case .disabled(let reason) = definition.state {
                let prefix = "source '\(source)' is disabled: "
                let what = reason.hasPrefix(prefix) ? String(reason.dropFirst(prefix.count)) : reason
                fail("cannot sign for source '\(source)': \(what), the secret the router verifies with; nothing was sent")
            }
            fail("cannot sign for source '\(source)'; nothing was sent")
        }
        guard let data = FileManager.default.contents(atPath: file) else {
            fail("cannot read \(file); nothing was sent")
        }
        let body = [UInt8](data)
        let webhookID = id ?? "msg_send_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(20).lowercased()
        guard let signed = verifier.sign(body: body, id: webhookID, now: Date()) else {
            fail("source '\(source)' has no secret to sign with; nothing was sent")
        }
        let environment = ProcessInfo.processInfo.environment
        let base = url ?? environment["KOALA_ROUTER_URL"] ?? "http://127.0.0.1:\(environment["KOALA_ROUTER_PORT"] ?? "8080")"
        let target = (base.hasSuffix("/") ? String(base.dropLast()) : base) + "/webhooks/" + source
        var request = HTTPClientRequest(url: target)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "koala-router-send/\(KoalaRouterVersion.string)")
        for (name, value) in signed { request.headers.add(name: name, value: value) }
        request.body = .bytes(body)
        let answer: (status: UInt, text: String)
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
            let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
            answer = (response.status.code, text)
        } catch {
            FileHandle.standardError.write(Data("koala-router: \(Self.explain(error, base: base, target: target))\n".utf8))
            throw ExitCode(1)
        }
        print("\(answer.status) \(answer.text)")
        guard (200..<300).contains(answer.status) else { throw ExitCode(1) }
    }

    /// Why the POST failed, said for a person: who is not listening, or did not answer, and what to do.
    static func explain(_ error: any Error, base: String, target: String) -> String {
        let text = String(describing: error)
        if text.contains("Connection refused") || text.contains("errno: 111") || text.contains("connectionRefused") {
            return "nothing is listening at \(base) (connection refused): start the router (koala-router serve) or give its address with --url; nothing was sent"
        }
        if text.contains("deadlineExceeded") || text.contains("connectTimeout") || text.contains("imed out") {
            return "\(base) did not answer within 30 s; it may or may not have received the webhook (send it again: a duplicate is answered as such)"
        }
        return "could not POST to \(target): \(LogText.bounded(text, limit: 300))"
    }

    /// The rule file in `folder` whose top-level `source:` names `source`, and its text.
    static func sourceFile(_ source: String, in folder: String) -> (String, String)? {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }
        for name in names.sorted() {
            let path = (folder as NSString).appendingPathComponent(name)
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            let line = text.split(separator: "\n").first { $0.hasPrefix("source:") }
            let declared = line.map { $0.dropFirst("source:".count).split(separator: "#").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? "" }
            if declared == source { return (path, text) }
        }
        return nil
    }

    func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("koala-router: \(message)\n".utf8))
        Foundation.exit(2)
    }
}

import ArgumentParser
import Foundation
import KoalaApp
import KoalaCore
import KoalaRuleTools
import KoalaDelivery
import KoalaStore
import Logging
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

@main
struct KoalaRouterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "koala-router",
        abstract: "Receives signed billing and signup webhooks and delivers them to Koala as events and traits.",
        version: KoalaRouterVersion.string,
        subcommands: [Serve.self, Check.self, TestRules.self, NewTest.self, Simulate.self, SendCommand.self, DeadLetters.self, ReplayCommand.self, BackfillCommand.self, ReconcileCommand.self, Forget.self, ConfigCommand.self, HealthCheck.self, Sign.self],
        defaultSubcommand: Serve.self
    )
}

/// Flags shared by commands that read the rule files.
struct RoutesOption: ParsableArguments {
    @Option(name: .long, help: "Folder of rule files (env KOALA_ROUTER_ROUTES, default: routes).")
    var routes: String?
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the webhook receiver and the Koala sender.")

    @Option(name: .long, help: "Address to listen on (env KOALA_ROUTER_HOST, default 0.0.0.0).")
    var host: String?
    @Option(name: .long, help: "Port to listen on (env KOALA_ROUTER_PORT, default 8080).")
    var port: Int?
    @OptionGroup var routesOption: RoutesOption
    @Option(name: .long, help: "SQLite file or postgres:// URL (env KOALA_ROUTER_DATABASE, default data/koala-router.sqlite).")
    var database: String?
    @Option(name: .long, help: "Koala API base URL (env KOALA_API_URL, default https://api2.getkoala.com).")
    var koalaApiUrl: String?
    @Option(name: .long, help: "Koala project public key (env KOALA_PUBLIC_API_KEY; without it: dry run).")
    var koalaPublicApiKey: String?
    @OptionGroup var settings: SettingsOption

    func run() async throws {
        let onEventLoops = runConcurrencyOnEventLoops()
        let config = try await settings.resolve([
            "KOALA_ROUTER_HOST": host, "KOALA_ROUTER_PORT": port.map(String.init), "KOALA_ROUTER_ROUTES": routesOption.routes,
            "KOALA_ROUTER_DATABASE": database, "KOALA_API_URL": koalaApiUrl, "KOALA_PUBLIC_API_KEY": koalaPublicApiKey,
        ])

        let level = config.logLevel
        let json = config.logFormat == .json
        LoggingSystem.bootstrap { label in
            if json {
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
            // Escaped: a value from a payload can never start a forged log line.
            var handler = EscapingLogHandler(StreamLogHandler.standardError(label: label))
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "koala-router")
        logger.logLevel = level
        raiseOpenFileLimit(need: config.connections.maxConnections + 256, logger: logger)
        if !onEventLoops {
            logger.warning("Swift concurrency stays on its own thread pool (the runtime refused NIO's event loops); requests pay a thread switch each")
        }
        do {
            let traces: (tracing: WebhookTracing, service: (any Service)?)
            do {
                traces = try TraceExport.make(environment: ProcessInfo.processInfo.environment, logger: logger)
            } catch let refused as TraceExport.Refused {
                FileHandle.standardError.write(Data("koala-router: \(refused)\n".utf8))
                throw ExitCode(1)
            }
            let (app, _) = try await buildApplication(config, logger: logger, tracing: traces.tracing)
            logger.info("listening", metadata: ["address": "\(config.host):\(config.port)", "database": "\(PostgresURL.redacted(config.database))"])
            // SIGTERM/SIGINT: stop accepting, let the sender's round finish, close the store; give up after the grace period.
            // The exporter starts first, so it stops last and sends the spans of the shutdown too.
            var group = ServiceGroupConfiguration(services: (traces.service.map { [$0] } ?? []) + [app], gracefulShutdownSignals: [.sigterm, .sigint],
                                                  logger: logger)
            group.maximumGracefulShutdownDuration = .milliseconds(Int64(config.shutdownGrace * 1000))
            try await ServiceGroup(configuration: group).run()
        } catch let errors as RuleTableErrors {
            FileHandle.standardError.write(Data("koala-router: the rule table is broken, refusing to start:\n\(errors)\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate the rule files, then route every sample webhook through them; print each problem as file:line:column.",
        discussion: """
            Samples are <rules>/samples/<source>/*.json (or --samples DIR) and the webhooks of the rule tests
            (<rules>/tests, or --tests DIR). Against them check reports identity fields that read a number or
            an object, filters given the wrong type (errors), paths that resolve in no sample, routes no sample
            exercises and two routes sending the same event for one webhook (warnings).

            Exit status: 0 when all is well, 1 on any error (a secret that is set but unusable, such as a key
            under 16 bytes, is one), 2 when there are warnings from the samples only. (Warnings about secrets
            not set in this environment do not change the status.)
            """)

    @Argument(help: "Rules folder (default: --routes, KOALA_ROUTER_ROUTES, the config file or routes).")
    var directory: String?
    @OptionGroup var routesOption: RoutesOption
    @Option(name: .long, help: "Folder of sample webhooks, one sub-folder per source (default: <rules>/samples).")
    var samples: String?
    @Option(name: .long, help: "Folder of rule tests whose webhooks are samples too (default: <rules>/tests).")
    var tests: String?
    @Flag(name: .long, help: "Only validate the rule files; route no samples.")
    var noSamples = false
    @OptionGroup var settings: SettingsOption

    func run() async throws {
        let config = try await settings.resolve(["KOALA_ROUTER_ROUTES": directory ?? routesOption.routes])
        let table = try config.loadRules()
        for warning in table.warnings { print("warning: \(warning)") }
        for error in table.secretErrors { print("error: \(error)") }
        for (name, source) in table.sources.sorted(by: { $0.key < $1.key }) {
            print("ok: \(source.file): source '\(name)' (\(source.scheme)), \(source.routes.count) routes")
        }
        print("rules version \(table.version)")
        // A secret that is set but unusable is a broken setting: fail, whatever the samples say.
        let secretsFailed = !table.secretErrors.isEmpty
        guard !noSamples else {
            if secretsFailed { throw ExitCode(1) }
            return
        }
        let folder = config.routesDirectory
        func existing(_ given: String?, _ name: String) -> String? {
            if let given { return given }
            let path = (folder as NSString).appendingPathComponent(name)
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue ? path : nil
        }
        let report = SampleCheck(table: table).run(samplesDirectory: existing(samples, "samples"), testsDirectory: existing(tests, "tests"))
        for problem in report.problems { print("error: \(problem)") }
        for finding in report.findings { print(finding) }
        if report.samples.isEmpty {
            print("no samples: add sample webhooks under \((folder as NSString).appendingPathComponent("samples"))/<source>/ (or rule tests) and check routes every one of them")
        } else {
            let counts = report.samples.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            let errors = report.problems.count + report.findings.filter { $0.severity == .error }.count
            let warnings = report.findings.filter { $0.severity == .warning }.count
            print("samples checked: \(counts); \(errors) error(s), \(warnings) warning(s)")
        }
        if report.hasErrors || secretsFailed { throw ExitCode(1) }
        if report.hasWarnings { throw ExitCode(2) }
    }
}

struct Sign: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a Stripe-Signature header for a payload file, for sending test webhooks.",
        discussion: "Example: curl -H \"Stripe-Signature: $(koala-router sign routes/samples/stripe/invoice.paid.json)\" --data-binary @routes/samples/stripe/invoice.paid.json localhost:8080/webhooks/stripe")

    @Argument(help: "The payload file, sent byte for byte.")
    var file: String
    @Option(name: .long, help: "Environment variable holding the secret.")
    var secretEnv = "STRIPE_WEBHOOK_SECRET"
    @Option(name: .long, help: "Timestamp to sign (default: now).")
    var timestamp: Int64?

    func run() throws {
        guard let secret = ProcessInfo.processInfo.environment[secretEnv], !secret.isEmpty else {
            FileHandle.standardError.write(Data("koala-router: set \(secretEnv) to the secret to sign with\n".utf8))
            throw ExitCode(2)
        }
        guard let data = FileManager.default.contents(atPath: file) else {
            FileHandle.standardError.write(Data("koala-router: cannot read \(file)\n".utf8))
            throw ExitCode(2)
        }
        let ts = timestamp ?? Int64(Date().timeIntervalSince1970)
        print(StripeVerifier.sign(body: [UInt8](data), secret: secret, timestamp: ts))
    }
}

struct Forget: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove everything stored about a person: webhooks that mention the email, its messages, identity memory.")

    @Option(name: .long, help: "The email address.")
    var email: String
    @Option(name: .long, help: "SQLite file or postgres:// URL (env KOALA_ROUTER_DATABASE, default data/koala-router.sqlite).")
    var database: String?
    @OptionGroup var settings: SettingsOption

    func run() async throws {
        let email = self.email
        let report = try await settings.resolve(["KOALA_ROUTER_DATABASE": database]).withStore { try await $0.forget(email: email) }
        print("removed \(report.webhooks) webhook(s), \(report.messages) message(s), \(report.identities) identity memory entr\(report.identities == 1 ? "y" : "ies")")
    }
}

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Print the effective configuration (environment, config file and defaults), secrets redacted.")

    @OptionGroup var settings: SettingsOption

    func run() async throws {
        for (name, value) in try await settings.resolve().described { print("\(name)=\(value)") }
    }
}

/// For container HEALTHCHECKs, where no curl is installed.
struct HealthCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "healthcheck", abstract: "Exit 0 if the local service answers /healthz (for Docker HEALTHCHECK).")

    @Option(name: .long, help: "URL to check (default: /healthz on KOALA_ROUTER_METRICS_ADDRESS when set, else http://127.0.0.1:$KOALA_ROUTER_PORT).")
    var url: String?

    func run() throws {
        let environment = ProcessInfo.processInfo.environment
        var target = "http://127.0.0.1:\(environment["KOALA_ROUTER_PORT"] ?? "8080")/healthz"
        // The probes' own listener, when there is one: it answers whatever the webhook connections are doing.
        if let address = environment["KOALA_ROUTER_METRICS_ADDRESS"], !address.isEmpty, let colon = address.lastIndex(of: ":") {
            let host = String(address[..<colon])
            target = "http://\(host.isEmpty || host == "0.0.0.0" ? "127.0.0.1" : host):\(address[address.index(after: colon)...])/healthz"
        }
        if let url { target = url }
        guard let components = URLComponents(string: target), let host = components.host else { throw ExitCode(2) }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(components.port ?? 80).bigEndian)
        address.sin_addr.s_addr = inet_addr(host == "localhost" ? "127.0.0.1" : host)
        var timeout = timeval(tv_sec: 3, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw ExitCode(1) }
        let request = "GET \(components.path.isEmpty ? "/" : components.path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n"
        _ = request.withCString { send(fd, $0, strlen($0), 0) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = recv(fd, &buffer, buffer.count, 0)
        let head = n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : ""
        guard head.hasPrefix("HTTP/1.1 200") || head.hasPrefix("HTTP/1.0 200") else { throw ExitCode(1) }
    }
}

/// Every connection is a file descriptor: raise the soft limit to the hard one, and say so when even that is
/// below what `KOALA_ROUTER_MAX_CONNECTIONS` needs (past it, new connections fail instead of waiting).
func raiseOpenFileLimit(need: Int, logger: Logger) {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    if limit.rlim_cur < rlim_t(need) {
        logger.warning("the open-file limit is below what KOALA_ROUTER_MAX_CONNECTIONS needs", metadata: [
            "limit": "\(limit.rlim_cur)", "needed": "\(need)", "fix": "raise 'ulimit -n' (Docker: --ulimit nofile=...) or lower KOALA_ROUTER_MAX_CONNECTIONS",
        ])
    }
}

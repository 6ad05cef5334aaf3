import Configuration
import Foundation
import KoalaCore
import KoalaDelivery
import KoalaStore
import Logging
import NIOCore
import SystemPackage

/// Every setting of the service. Built from the environment; CLI flags override single fields.
public struct RouterConfiguration: Sendable {
    public var host = "0.0.0.0"
    public var port = 8080
    public var routesDirectory = "routes"
    /// A SQLite file path (optionally `sqlite:` prefixed).
    public var database = "data/koala-router.sqlite"
    public var koalaAPIURL = "https://api2.getkoala.com"
    /// Koala's public project key; nil runs the sender in dry-run mode.
    public var koalaPublicKey: String?
    public var maxBodyBytes = 1 << 20
    /// How long a message whose `recall` missed waits for the identity to be remembered.
    public var identityWait: TimeInterval = 900
    /// How long raw webhooks and delivered messages are kept.
    public var retention: TimeInterval = 7 * 86400
    /// How long SIGTERM/SIGINT may take to drain before the process stops.
    public var shutdownGrace: TimeInterval = 25
    /// Bearer token of the admin API; nil turns the admin API off.
    public var adminToken: String?
    /// A file that adds to (or, with `!domain`, removes from) the shipped free-mail / disposable list.
    public var freeMailDomainsFile: String?
    /// How often rule files are checked for changes (0: only on SIGHUP).
    public var rulesPollInterval: TimeInterval = 2
    /// Whether SIGHUP reloads the rules (off in tests, where the signal would reach every router in the process).
    public var reloadOnSIGHUP = true
    public var delivery = DeliveryPolicy()
    /// Connection deadlines and memory limits for incoming requests.
    public var connections = ConnectionLimits()
    public var logLevel: Logger.Level = .info
    /// `text` for people, `json` (one object per line) for log pipelines.
    public var logFormat = "text"
    /// Where secrets referenced by rule files are looked up.
    public var environment: [String: String]
    /// The YAML config file the settings were read from, if any.
    public var configFile: String?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.environment = environment
    }

    public struct Invalid: Error, CustomStringConvertible {
        public let setting: String
        public let problem: String
        public var description: String { "invalid setting \(setting): \(problem)" }
    }

    /// Every setting's environment name. In a config file the same setting is `prefix: { rest: value }`
    /// with the name lower-cased and split after `KOALA_ROUTER_`, `KOALA_` or `LOG_` (see `key(for:)`).
    public static let settingNames = [
        "KOALA_ROUTER_HOST", "KOALA_ROUTER_PORT", "KOALA_ROUTER_ROUTES", "KOALA_ROUTER_DATABASE", "KOALA_API_URL",
        "KOALA_PUBLIC_API_KEY", "KOALA_ROUTER_ADMIN_TOKEN", "KOALA_ROUTER_MAX_BODY_BYTES", "KOALA_ROUTER_LINGER_MS",
        "KOALA_ROUTER_IDENTITY_WAIT_S", "KOALA_ROUTER_RULES_POLL_S", "KOALA_ROUTER_RETENTION_DAYS",
        "KOALA_ROUTER_SHUTDOWN_GRACE_S", "KOALA_ROUTER_FREE_MAIL_DOMAINS_FILE", "KOALA_ROUTER_CONCURRENCY",
        "KOALA_ROUTER_REQUEST_TIMEOUT_S", "KOALA_ROUTER_LEASE_S", "KOALA_ROUTER_MAX_BACKOFF_S",
        "KOALA_ROUTER_INITIAL_BACKOFF_S", "KOALA_ROUTER_RETRY_BUDGET_H", "KOALA_ROUTER_IDLE_TIMEOUT_S",
        "KOALA_ROUTER_HEADER_TIMEOUT_S", "KOALA_ROUTER_BODY_TIMEOUT_S", "KOALA_ROUTER_MAX_CONNECTIONS",
        "KOALA_ROUTER_MAX_BODY_BYTES_IN_FLIGHT", "LOG_FORMAT", "LOG_LEVEL",
    ]
    /// Settings whose values are never printed.
    public static let secretNames: Set<String> = ["KOALA_PUBLIC_API_KEY", "KOALA_ROUTER_ADMIN_TOKEN", "KOALA_ROUTER_DATABASE"]

    /// The configuration key of a setting: `KOALA_ROUTER_LINGER_MS` → `koala_router.linger_ms`,
    /// `KOALA_API_URL` → `koala.api_url`, `LOG_LEVEL` → `log.level`. swift-configuration's environment
    /// provider maps each key back to exactly the environment name.
    public static func key(for name: String) -> [String] {
        for prefix in ["KOALA_ROUTER_", "KOALA_", "LOG_"] where name.hasPrefix(prefix) {
            return [String(prefix.dropLast()).lowercased(), String(name.dropFirst(prefix.count)).lowercased()]
        }
        return [name.lowercased()]
    }

    /// Loads the settings through swift-configuration, first match wins:
    /// 1. command-line flags (`flags`, by environment name),
    /// 2. environment variables, then `NAME_FILE` (a file holding the value: Docker and Kubernetes secrets),
    /// 3. the YAML config file named by `configFile` or `KOALA_ROUTER_CONFIG`, if any,
    /// 4. the defaults.
    /// A bad value stops start-up with a message naming the setting.
    public static func load(environment env: [String: String] = ProcessInfo.processInfo.environment,
                            flags: [String: String] = [:], configFile: String? = nil) async throws -> RouterConfiguration {
        var providers: [any ConfigProvider] = []
        func values(_ pairs: [String: String]) -> [AbsoluteConfigKey: ConfigValue] {
            var out: [AbsoluteConfigKey: ConfigValue] = [:]
            for (name, value) in pairs where !value.isEmpty {
                out[AbsoluteConfigKey(key(for: name))] = ConfigValue(.string(value), isSecret: secretNames.contains(name))
            }
            return out
        }
        if !flags.isEmpty { providers.append(InMemoryProvider(name: "command-line flags", values: values(flags))) }
        providers.append(EnvironmentVariablesProvider(environmentVariables: env.filter { !$0.value.isEmpty },
                                                      secretsSpecifier: .specific(secretNames)))
        var fromFiles: [String: String] = [:]
        for name in settingNames where env[name + "_FILE"] != nil {
            do {
                // Only the file: a set `NAME` is read by the environment provider above and wins.
                fromFiles[name] = try EnvironmentValue.resolve(name, in: [name + "_FILE": env[name + "_FILE"] ?? ""])
            } catch {
                throw Invalid(setting: name + "_FILE", problem: error.description)
            }
        }
        if !fromFiles.isEmpty { providers.append(InMemoryProvider(name: "*_FILE secrets", values: values(fromFiles))) }
        var config = RouterConfiguration(environment: env)
        if let path = configFile ?? env["KOALA_ROUTER_CONFIG"].flatMap({ $0.isEmpty ? nil : $0 }) {
            try ConfigFile.check(path)
            do {
                providers.append(try await FileProvider<YAMLSnapshot>(filePath: FilePath(path)))
            } catch {
                throw Invalid(setting: "KOALA_ROUTER_CONFIG", problem: "\(path): \(error)")
            }
            config.configFile = path
        }
        return try resolve(ConfigReader(providers: providers), into: config)
    }

    /// Reads every setting from `reader` into `config`.
    static func resolve(_ reader: ConfigReader, into config: RouterConfiguration) throws -> RouterConfiguration {
        var config = config
        func string(_ name: String) -> String? {
            reader.string(forKey: ConfigKey(key(for: name)), isSecret: secretNames.contains(name)).flatMap { $0.isEmpty ? nil : $0 }
        }
        func number(_ name: String, _ range: ClosedRange<Double>) throws -> Double? {
            guard let text = string(name) else { return nil }
            guard let value = Double(text), range.contains(value) else {
                throw Invalid(setting: name, problem: "'\(text)' is not a number in \(range.lowerBound)...\(range.upperBound)")
            }
            return value
        }
        if let v = string("KOALA_ROUTER_HOST") { config.host = v }
        if let v = try number("KOALA_ROUTER_PORT", 0...65535) { config.port = Int(v) }
        if let v = string("KOALA_ROUTER_ROUTES") { config.routesDirectory = v }
        if let v = string("KOALA_ROUTER_DATABASE") {
            if PostgresURL.isPostgres(v) {
                do { _ = try PostgresURL(v) } catch let error as PostgresURL.Invalid {
                    throw Invalid(setting: "KOALA_ROUTER_DATABASE", problem: error.problem)
                }
            }
            config.database = v
        }
        if let v = string("KOALA_API_URL") {
            guard let url = URL(string: v), url.scheme == "http" || url.scheme == "https", url.host != nil else {
                throw Invalid(setting: "KOALA_API_URL", problem: "'\(v)' is not an http(s) URL")
            }
            config.koalaAPIURL = v
        }
        config.koalaPublicKey = string("KOALA_PUBLIC_API_KEY")
        if let token = string("KOALA_ROUTER_ADMIN_TOKEN") {
            guard token.count >= 16 else {
                throw Invalid(setting: "KOALA_ROUTER_ADMIN_TOKEN", problem: "too short; use at least 16 random characters (e.g. openssl rand -hex 24)")
            }
            config.adminToken = token
        }
        if let v = try number("KOALA_ROUTER_MAX_BODY_BYTES", 1...(256 * 1024 * 1024)) { config.maxBodyBytes = Int(v) }
        if let v = try number("KOALA_ROUTER_LINGER_MS", 0...60000) { config.delivery.linger = v / 1000 }
        if let v = try number("KOALA_ROUTER_IDENTITY_WAIT_S", 0...604_800) { config.identityWait = v }
        if let v = try number("KOALA_ROUTER_RULES_POLL_S", 0...3600) { config.rulesPollInterval = v }
        if let v = try number("KOALA_ROUTER_RETENTION_DAYS", 0.001...3650) { config.retention = v * 86400 }
        if let v = try number("KOALA_ROUTER_SHUTDOWN_GRACE_S", 1...3600) { config.shutdownGrace = v }
        if let v = string("KOALA_ROUTER_FREE_MAIL_DOMAINS_FILE") {
            guard FileManager.default.isReadableFile(atPath: v) else {
                throw Invalid(setting: "KOALA_ROUTER_FREE_MAIL_DOMAINS_FILE", problem: "cannot read '\(v)'")
            }
            config.freeMailDomainsFile = v
        }
        if let v = try number("KOALA_ROUTER_CONCURRENCY", 1...1024) { config.delivery.concurrency = Int(v) }
        if let v = try number("KOALA_ROUTER_REQUEST_TIMEOUT_S", 0.1...600) { config.delivery.requestTimeout = v }
        if let v = try number("KOALA_ROUTER_LEASE_S", 1...3600) { config.delivery.lease = v }
        if config.delivery.lease <= config.delivery.requestTimeout {
            throw Invalid(setting: "KOALA_ROUTER_LEASE_S",
                          problem: "the lease (\(config.delivery.lease) s) must outlast KOALA_ROUTER_REQUEST_TIMEOUT_S (\(config.delivery.requestTimeout) s), or a slow request is sent twice")
        }
        if let v = try number("KOALA_ROUTER_MAX_BACKOFF_S", 0.01...86400) { config.delivery.maxBackoff = v }
        if let v = try number("KOALA_ROUTER_INITIAL_BACKOFF_S", 0.001...3600) { config.delivery.initialBackoff = v }
        if let v = try number("KOALA_ROUTER_RETRY_BUDGET_H", 0.001...8760) { config.delivery.retryBudget = v * 3600 }
        func timeout(_ name: String) throws -> TimeAmount? {
            try number(name, 0.1...3600).map { .milliseconds(Int64(($0 * 1000).rounded())) }
        }
        if let v = try timeout("KOALA_ROUTER_IDLE_TIMEOUT_S") { config.connections.idleTimeout = v }
        if let v = try timeout("KOALA_ROUTER_HEADER_TIMEOUT_S") { config.connections.headerTimeout = v }
        if let v = try timeout("KOALA_ROUTER_BODY_TIMEOUT_S") { config.connections.bodyTimeout = v }
        if let v = try number("KOALA_ROUTER_MAX_CONNECTIONS", 16...1_000_000) { config.connections.maxConnections = Int(v) }
        if let v = try number("KOALA_ROUTER_MAX_BODY_BYTES_IN_FLIGHT", 1024...(16 * 1024 * 1024 * 1024)) {
            config.connections.maxBodyBytesInFlight = Int(v)
        }
        if config.connections.maxBodyBytesInFlight < config.maxBodyBytes {
            throw Invalid(setting: "KOALA_ROUTER_MAX_BODY_BYTES_IN_FLIGHT",
                          problem: "\(config.connections.maxBodyBytesInFlight) is below KOALA_ROUTER_MAX_BODY_BYTES (\(config.maxBodyBytes)): no body of the largest allowed size could ever be read")
        }
        if let v = string("LOG_FORMAT") {
            guard ["json", "text"].contains(v.lowercased()) else {
                throw Invalid(setting: "LOG_FORMAT", problem: "'\(v)' is not json or text")
            }
            config.logFormat = v.lowercased()
        }
        if let v = string("LOG_LEVEL") {
            guard let level = Logger.Level(rawValue: v.lowercased()) else {
                throw Invalid(setting: "LOG_LEVEL", problem: "'\(v)' is not one of trace, debug, info, notice, warning, error, critical")
            }
            config.logLevel = level
        }
        return config
    }

    /// Every setting and its effective value, secrets redacted (for `koala-router config`).
    public var described: [(String, String)] {
        [
            ("KOALA_ROUTER_HOST", host), ("KOALA_ROUTER_PORT", String(port)), ("KOALA_ROUTER_ROUTES", routesDirectory),
            ("KOALA_ROUTER_DATABASE", PostgresURL.redacted(database)), ("KOALA_API_URL", koalaAPIURL),
            ("KOALA_PUBLIC_API_KEY", koalaPublicKey == nil ? "(not set: dry run)" : "(set, redacted)"),
            ("KOALA_ROUTER_MAX_BODY_BYTES", String(maxBodyBytes)), ("KOALA_ROUTER_LINGER_MS", String(Int(delivery.linger * 1000))),
            ("KOALA_ROUTER_CONCURRENCY", String(delivery.concurrency)), ("KOALA_ROUTER_REQUEST_TIMEOUT_S", String(delivery.requestTimeout)),
            ("KOALA_ROUTER_LEASE_S", String(delivery.lease)),
            ("KOALA_ROUTER_INITIAL_BACKOFF_S", String(delivery.initialBackoff)), ("KOALA_ROUTER_MAX_BACKOFF_S", String(delivery.maxBackoff)),
            ("KOALA_ROUTER_RETRY_BUDGET_H", String(delivery.retryBudget / 3600)), ("KOALA_ROUTER_IDENTITY_WAIT_S", String(identityWait)),
            ("KOALA_ROUTER_RULES_POLL_S", String(rulesPollInterval)), ("KOALA_ROUTER_RETENTION_DAYS", String(retention / 86400)),
            ("KOALA_ROUTER_SHUTDOWN_GRACE_S", String(shutdownGrace)),
            ("KOALA_ROUTER_IDLE_TIMEOUT_S", Self.seconds(connections.idleTimeout)),
            ("KOALA_ROUTER_HEADER_TIMEOUT_S", Self.seconds(connections.headerTimeout)),
            ("KOALA_ROUTER_BODY_TIMEOUT_S", Self.seconds(connections.bodyTimeout)),
            ("KOALA_ROUTER_MAX_CONNECTIONS", String(connections.maxConnections)),
            ("KOALA_ROUTER_MAX_BODY_BYTES_IN_FLIGHT", String(connections.maxBodyBytesInFlight)),
            ("KOALA_ROUTER_ADMIN_TOKEN", adminToken == nil ? "(not set: admin API off)" : "(set, redacted)"),
            ("KOALA_ROUTER_FREE_MAIL_DOMAINS_FILE", freeMailDomainsFile ?? "(not set)"),
            ("LOG_LEVEL", logLevel.rawValue), ("LOG_FORMAT", logFormat),
            ("KOALA_ROUTER_CONFIG", configFile ?? "(not set)"),
        ]
    }

    static func seconds(_ amount: TimeAmount) -> String {
        String(Double(amount.nanoseconds) / 1e9)
    }

    /// The SQLite path named by `database`.
    public var sqlitePath: String? {
        if PostgresURL.isPostgres(database) { return nil }
        if database.hasPrefix("sqlite://") { return String(database.dropFirst("sqlite://".count)) }
        if database.hasPrefix("sqlite:") { return String(database.dropFirst("sqlite:".count)) }
        return database
    }
}

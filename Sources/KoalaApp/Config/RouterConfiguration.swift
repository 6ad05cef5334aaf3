import Configuration
public import Foundation
public import KoalaCore
import KoalaDelivery
import KoalaStore
public import Logging
import NIOCore
import SystemPackage

/// Every setting of the service: its own (address, routes, database, Koala, admin, retention, logs) and its
/// components' (`delivery`, `connections`), each declared once in its `settings` table, read through
/// swift-configuration from flags, the environment, `NAME_FILE` secrets and the config file.
public struct RouterConfiguration: Sendable, Configurable {
    /// Address to listen on.
    public var host = "0.0.0.0"
    /// Port to listen on.
    public var port = 8080
    /// The folder of rule files.
    public var routesDirectory = "routes"
    /// A SQLite file path (optionally `sqlite:` prefixed) or a `postgres://` URL.
    public var database = "data/koala-router.sqlite"
    /// Koala's API base URL.
    var koalaAPIURL = "https://api2.getkoala.com"
    /// Koala's public project key; nil runs the sender in dry-run mode.
    var koalaPublicKey: String?
    /// Segment's write key: set, messages are delivered to Segment too.
    var segmentWriteKey: String?
    /// Segment's API base URL (its EU endpoint for EU workspaces).
    var segmentURL = SegmentClient.segmentURL
    /// RudderStack's write key: set (with the data plane URL), messages are delivered to RudderStack too.
    var rudderstackWriteKey: String?
    /// The RudderStack data plane URL.
    var rudderstackDataPlaneURL: String?
    /// The base URL of another service that accepts Segment's HTTP Tracking API.
    var segmentCompatibleURL: String?
    /// Its write key.
    var segmentCompatibleWriteKey: String?
    /// How long a message whose `recall` missed waits for the identity to be remembered.
    var identityWait: TimeInterval = 900
    /// How long raw webhooks and delivered messages are kept.
    var retention: TimeInterval = 7 * 86400
    /// How long SIGTERM/SIGINT may take to drain before the process stops.
    public var shutdownGrace: TimeInterval = 25
    /// Bearer token of the admin API; nil turns the admin API off.
    var adminToken: String?
    /// `host:port` of a listener of its own for `/metrics`, `/healthz` and detailed `/readyz`; nil: metrics on the
    /// webhook listener, readiness there with details for the admin token only.
    var metricsAddress: String?
    /// A file that adds to (or, with `!domain`, removes from) the shipped free-mail / disposable list.
    var freeMailDomainsFile: String?
    /// How often rule files are checked for changes (0: only on SIGHUP).
    var rulesPollInterval: TimeInterval = 2
    /// Whether SIGHUP reloads the rules (off in tests, where the signal would reach every router in the process).
    var reloadOnSIGHUP = true
    /// Read-only API keys of the providers `backfill` and `reconcile` read (`STRIPE_API_KEY` …).
    var providerAPIKeys: [ProviderKind: String] = [:]
    /// Their API base URLs where not the provider's own (`STRIPE_API_URL` …; Chargebee's is per site).
    var providerAPIURLs: [ProviderKind: String] = [:]
    /// How often `serve` reconciles each source whose provider API key is set (0: never).
    var reconcileInterval: TimeInterval = 0
    /// The sender's settings.
    var delivery = DeliveryPolicy()
    /// Connection deadlines and memory limits for incoming requests.
    public var connections = ConnectionLimits()
    /// The least severe log level written.
    public var logLevel: Logger.Level = .info
    /// How log lines are written.
    public var logFormat = LogFormat.text
    /// Where secrets referenced by rule files are looked up.
    public var environment: [String: String]
    /// The YAML config file the settings were read from, if any.
    var configFile: String?

    /// The defaults, with rule-file secrets looked up in this process's environment.
    public init() {
        self.init(environment: ProcessInfo.processInfo.environment)
    }

    /// The defaults, with rule-file secrets looked up in `environment`.
    init(environment: [String: String]) {
        self.environment = environment
    }

    /// The largest webhook body accepted (`connections.maxBodyBytes`).
    var maxBodyBytes: Int {
        get { connections.maxBodyBytes }
        set { connections.maxBodyBytes = newValue }
    }

    /// Each key names its own section (`koala_router`, `koala`, `log`).
    package static let section = ""

    /// The service's own settings; README's configuration table documents them with the components'.
    package static var settings: [Setting<RouterConfiguration>] {
        [
            .text("koala_router.host", \.host, help: "Address to listen on"),
            .integer("koala_router.port", \.port, in: 0...65535, help: "Port to listen on"),
            .text("koala_router.routes", \.routesDirectory, help: "Folder of rule files"),
            Setting("koala_router.database", help: "SQLite file or postgres:// URL", isSecret: true, apply: { config, text throws(SettingProblem) in
                if PostgresURL.isPostgres(text) {
                    do { _ = try PostgresURL(text) } catch let error as StoreError { throw SettingProblem(error.message) } catch { throw SettingProblem("\(error)") }
                } else if RouterConfiguration.sqlitePath(text) == nil {
                    throw SettingProblem(StoreError.unsupported(text).message)
                }
                config.database = text
            }, show: { PostgresURL.redacted($0.database) }),
            .text("koala.api_url", \.koalaAPIURL, help: "Koala API base URL", check: Self.httpURLProblem),
            .optionalText("koala.public_api_key", \.koalaPublicKey, isSecret: true, unset: "dry run", help: "Koala project public key"),
            .optionalText("segment.write_key", \.segmentWriteKey, isSecret: true, unset: "not delivered to Segment",
                          help: "Segment source write key: messages go to Segment too"),
            .text("segment.url", \.segmentURL, help: "Segment API base URL (EU workspaces: \(SegmentClient.segmentEUURL))", check: Self.httpURLProblem),
            .optionalText("rudderstack.write_key", \.rudderstackWriteKey, isSecret: true, unset: "not delivered to RudderStack",
                          help: "RudderStack source write key: messages go to RudderStack too"),
            .optionalText("rudderstack.data_plane_url", \.rudderstackDataPlaneURL, unset: "none", help: "RudderStack data plane URL",
                          check: Self.httpURLProblem),
            .optionalText("segment_compatible.url", \.segmentCompatibleURL, unset: "none",
                          help: "Base URL of another service accepting Segment's HTTP API", check: Self.httpURLProblem),
            .optionalText("segment_compatible.write_key", \.segmentCompatibleWriteKey, isSecret: true, unset: "none",
                          help: "Its write key"),
            .optionalText("koala_router.admin_token", \.adminToken, isSecret: true, unset: "admin API off",
                          help: "Bearer token of the admin API", check: { token in
                token.count >= 16 ? nil : "too short; use at least 16 random characters (e.g. openssl rand -hex 24)"
            }),
            .optionalText("koala_router.metrics_address", \.metricsAddress, unset: "metrics on the webhook listener",
                          help: "host:port of a listener of its own for /metrics, /healthz and detailed /readyz", check: { address in
                (try? hostAndPort(address)) == nil ? "'\(address)' is not host:port, e.g. 0.0.0.0:9090 or 127.0.0.1:9090" : nil
            }),
            .number("koala_router.identity_wait_s", \.identityWait, in: 0...604_800,
                    help: "How long a message waits for an identity another webhook will remember"),
            .number("koala_router.rules_poll_s", \.rulesPollInterval, in: 0...3600, help: "How often rule files are checked for changes (0: SIGHUP only)"),
            .number("koala_router.retention_days", \.retention, in: 0.001...3650, scale: 86400,
                    help: "How long raw webhooks and delivered messages are kept"),
            .number("koala_router.shutdown_grace_s", \.shutdownGrace, in: 1...3600, help: "How long SIGTERM may take to drain"),
            .optionalText("koala_router.free_mail_domains_file", \.freeMailDomainsFile, unset: "shipped list only",
                          help: "More free-mail domains (or !domain to remove one)", check: { path in
                FileManager.default.isReadableFile(atPath: path) ? nil : "cannot read '\(path)'"
            }),
            .number("koala_router.reconcile_interval_h", \.reconcileInterval, in: 0...720, scale: 3600,
                    help: "How often serve reconciles every source whose provider API key is set (0: never)"),
        ] + ProviderKind.allCases.flatMap(Self.providerSettings) + [
            Setting("log.level", help: "trace, debug, info, notice, warning, error or critical", apply: { config, text throws(SettingProblem) in
                guard let level = Logger.Level(rawValue: text.lowercased()) else {
                    throw SettingProblem("'\(text)' is not one of trace, debug, info, notice, warning, error, critical")
                }
                config.logLevel = level
            }, show: { $0.logLevel.rawValue }),
            Setting("log.format", help: "text for people, json for log pipelines", apply: { config, text throws(SettingProblem) in
                guard let format = LogFormat(rawValue: text.lowercased()) else { throw SettingProblem("'\(text)' is not json or text") }
                config.logFormat = format
            }, show: { $0.logFormat.rawValue }),
        ]
    }

    /// `<provider>.api_key` and `<provider>.api_url` (`STRIPE_API_KEY`, `STRIPE_API_URL` in the environment).
    static func providerSettings(_ kind: ProviderKind) -> [Setting<RouterConfiguration>] {
        [
            Setting("\(kind.rawValue).api_key", help: "\(kind.displayName) API key (read-only) for backfill and reconcile", isSecret: true,
                    apply: { config, text throws(SettingProblem) in
                guard !text.trimmingCharacters(in: .whitespaces).isEmpty else { throw SettingProblem("is empty") }
                config.providerAPIKeys[kind] = text
            }, show: { $0.providerAPIKeys[kind] == nil ? "(not set: no backfill)" : "(set, redacted)" }),
            Setting("\(kind.rawValue).api_url", help: "\(kind.displayName) API base URL", apply: { config, text throws(SettingProblem) in
                if let problem = httpURLProblem(text) { throw SettingProblem(problem) }
                config.providerAPIURLs[kind] = text
            }, show: { $0.providerAPIURLs[kind] ?? kind.defaultURL ?? "(not set: https://<site>.chargebee.com)" }),
        ]
    }

    /// The key and base URL `backfill` and `reconcile` read `kind`'s API with; an error naming the setting to set.
    package func providerAPI(_ kind: ProviderKind) throws -> (key: String, url: String) {
        guard let key = providerAPIKeys[kind] else {
            throw KoalaRouterError.invalid(setting: "\(kind.settingPrefix)_API_KEY", problem: "not set: give a read-only API key of \(kind.displayName) (README, Backfill and reconcile)")
        }
        guard let url = providerAPIURLs[kind] ?? kind.defaultURL else {
            throw KoalaRouterError.invalid(setting: "\(kind.settingPrefix)_API_URL", problem: "not set: \(kind.displayName) has an API address per site, e.g. https://acme.chargebee.com")
        }
        return (key, url)
    }

    /// The providers whose API key is set, for the reconcile schedule.
    var providersWithKeys: [ProviderKind] { ProviderKind.allCases.filter { providerAPIKeys[$0] != nil } }

    /// `host:port` (`[::1]:9090` for an IPv6 address) split; throws when the port is not 0...65535.
    static func hostAndPort(_ address: String) throws(KoalaRouterError) -> (String, Int) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port) else {
            throw KoalaRouterError.invalid(setting: "KOALA_ROUTER_METRICS_ADDRESS", problem: "'\(address)' is not host:port")
        }
        var host = String(address[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }

    /// Why a URL setting is unusable, or nil.
    static func httpURLProblem(_ text: String) -> String? {
        guard let url = URL(string: text), url.scheme == "http" || url.scheme == "https", url.host != nil else {
            return "'\(text)' is not an http(s) URL"
        }
        return nil
    }

    /// The destinations besides Koala, from their settings: (destination, base URL, write key). A destination
    /// half configured (a key without its URL, or the other way round) is an error naming what is missing.
    package func segmentDestinations() throws -> [(destination: Destination, url: String, writeKey: String)] {
        var out: [(destination: Destination, url: String, writeKey: String)] = []
        if let key = segmentWriteKey { out.append((.segment, segmentURL, key)) }
        switch (rudderstackWriteKey, rudderstackDataPlaneURL) {
        case (let key?, let url?): out.append((.rudderstack, url, key))
        case (nil, nil): break
        case (nil, _?): throw KoalaRouterError.invalid(setting: "RUDDERSTACK_WRITE_KEY", problem: "RUDDERSTACK_DATA_PLANE_URL is set but no write key; set both")
        case (_?, nil): throw KoalaRouterError.invalid(setting: "RUDDERSTACK_DATA_PLANE_URL", problem: "RUDDERSTACK_WRITE_KEY is set but no data plane URL; set both")
        }
        switch (segmentCompatibleWriteKey, segmentCompatibleURL) {
        case (let key?, let url?): out.append((.segmentCompatible, url, key))
        case (nil, nil): break
        case (nil, _?): throw KoalaRouterError.invalid(setting: "SEGMENT_COMPATIBLE_WRITE_KEY", problem: "SEGMENT_COMPATIBLE_URL is set but no write key; set both")
        case (_?, nil): throw KoalaRouterError.invalid(setting: "SEGMENT_COMPATIBLE_URL", problem: "SEGMENT_COMPATIBLE_WRITE_KEY is set but no URL; set both")
        }
        return out
    }

    /// One setting of any component: where it is read and how it is named.
    package struct Entry: Sendable {
        /// The environment name, e.g. `KOALA_ROUTER_LINGER_MS`.
        let name: String
        /// The configuration key, e.g. `["koala_router", "linger_ms"]`.
        let path: [String]
        let isSecret: Bool
        let help: String
    }

    /// Every setting of the service and its components, in the order `koala-router config` prints them.
    static let entries: [Entry] = entries(of: RouterConfiguration.self) + entries(of: DeliveryPolicy.self)
        + entries(of: ConnectionLimits.self)

    static func entries<C: Configurable>(of component: C.Type) -> [Entry] {
        C.settings.map { Entry(name: C.environmentName(of: $0), path: C.path(of: $0), isSecret: $0.isSecret, help: $0.help) }
    }

    /// Every setting's environment name.
    static var settingNames: [String] { entries.map(\.name) }
    /// Settings whose values are never printed.
    static var secretNames: Set<String> { Set(entries.filter(\.isSecret).map(\.name)) }

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
                out[AbsoluteConfigKey(path(forName: name))] = ConfigValue(.string(value), isSecret: secretNames.contains(name))
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
                throw KoalaRouterError.invalid(setting: name + "_FILE", problem: error.description)
            }
        }
        if !fromFiles.isEmpty { providers.append(InMemoryProvider(name: "*_FILE secrets", values: values(fromFiles))) }
        var config = RouterConfiguration(environment: env)
        if let path = configFile ?? env["KOALA_ROUTER_CONFIG"].flatMap({ $0.isEmpty ? nil : $0 }) {
            try ConfigFile.check(path)
            do {
                providers.append(try await FileProvider<YAMLSnapshot>(filePath: FilePath(path)))
            } catch {
                throw KoalaRouterError.invalid(setting: "KOALA_ROUTER_CONFIG", problem: "\(path): \(error)")
            }
            config.configFile = path
        }
        return try resolve(ConfigReader(providers: providers), into: config)
    }

    /// The configuration key of an environment name (every setting's is in `entries`).
    static func path(forName name: String) -> [String] {
        entries.first { $0.name == name }?.path ?? [name.lowercased()]
    }

    /// Reads every setting from `reader`: the service's own, then each component's through `init(reader:)`.
    static func resolve(_ reader: ConfigReader, into config: RouterConfiguration) throws -> RouterConfiguration {
        var config = config
        try read(&config, from: reader)
        config.delivery = try DeliveryPolicy(reader: reader)
        config.connections = try ConnectionLimits(reader: reader)
        return config
    }

    /// Sets `component`'s settings found in `reader` (scoped to its section), then checks them together.
    static func read<C: Configurable>(_ component: inout C, from reader: ConfigReader) throws(KoalaRouterError) {
        let scoped = C.section.isEmpty ? reader : reader.scoped(to: ConfigKey([C.section]))
        for setting in C.settings {
            let key = ConfigKey(setting.key.split(separator: ".").map(String.init))
            guard let text = scoped.string(forKey: key, isSecret: setting.isSecret), !text.isEmpty else { continue }
            do {
                try setting.apply(&component, text)
            } catch {
                throw KoalaRouterError.invalid(setting: C.environmentName(of: setting), problem: error.text)
            }
        }
        do {
            try component.validate()
        } catch {
            throw KoalaRouterError.invalid(setting: error.setting, problem: error.problem)
        }
    }

    /// Every setting and its effective value, secrets redacted (for `koala-router config`).
    var described: [(String, String)] {
        Self.settings.map { (Self.environmentName(of: $0), $0.show(self)) } + delivery.described + connections.described
            + [("KOALA_ROUTER_CONFIG", configFile ?? "(not set)")]
    }

    /// The SQLite path named by `database`.
    var sqlitePath: String? { Self.sqlitePath(database) }

    /// The SQLite file `database` names (`PATH`, `sqlite:PATH`, `sqlite://PATH`); nil for PostgreSQL and for any
    /// other `scheme://` address (`mysql://…` is refused, never taken for a file name).
    static func sqlitePath(_ database: String) -> String? {
        if PostgresURL.isPostgres(database) { return nil }
        if database.hasPrefix("sqlite://") { return String(database.dropFirst("sqlite://".count)) }
        if database.hasPrefix("sqlite:") { return String(database.dropFirst("sqlite:".count)) }
        if database.contains("://") { return nil }
        return database
    }
}

extension Configurable {
    /// The component with its settings read from `reader` (the root reader: the component scopes it to its
    /// section); a bad value throws naming the setting as in the environment.
    init(reader: ConfigReader) throws(KoalaRouterError) {
        self.init()
        try RouterConfiguration.read(&self, from: reader)
    }
}

/// How log lines are written (`LOG_FORMAT`).
public enum LogFormat: String, Sendable, CaseIterable {
    /// One line per event for people, with the metadata after the message.
    case text
    /// One JSON object per line, for log pipelines (`JSONLogHandler`).
    case json
}

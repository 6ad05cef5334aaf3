import Foundation
import KoalaCore
import PostgresNIO

/// A `postgres://user:password@host:port/database?options` address, parsed and checked.
///
/// Options (query string): `sslmode` (disable, prefer — the default —, require, verify-full), `host` (a Unix
/// socket directory instead of TCP), `schema` (tables live in this schema, created if missing), `pool_size`
/// (connections per replica, default 10), `statement_timeout_ms` (default 5000), `operation_timeout_ms` (how long
/// one store call may take, connection wait included, before ingest answers 503; default 5000).
package struct PostgresURL: Sendable, Equatable {
    /// PostgreSQL's `sslmode`, as in libpq.
    package enum SSLMode: String, Sendable { case disable, prefer, require, verifyFull = "verify-full" }

    var host = "localhost"
    var port = 5432
    var socketDirectory: String?
    var username = "postgres"
    var password: String?
    var database: String?
    var sslmode = SSLMode.prefer
    var schema: String?
    var poolSize = 10
    var statementTimeoutMS = 5000
    var operationTimeoutMS = 5000
    /// How long start-up (connecting, checking durability, migrating) may take before `run()` gives up.
    var startTimeoutMS = 10000

    /// Whether `text` names a PostgreSQL database (`postgres://` or `postgresql://`).
    package static func isPostgres(_ text: String) -> Bool {
        text.hasPrefix("postgres://") || text.hasPrefix("postgresql://")
    }

    package init(_ text: String) throws {
        guard Self.isPostgres(text), let components = URLComponents(string: text) else {
            throw StoreError.invalidAddress("expected postgres://user:password@host:5432/database, got \(Self.redacted(text))")
        }
        if let host = components.host, !host.isEmpty { self.host = host }
        if let port = components.port { self.port = port }
        if let user = components.user, !user.isEmpty { username = user.removingPercentEncoding ?? user }
        password = components.password.map { $0.removingPercentEncoding ?? $0 }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        if !path.isEmpty { database = path }
        for item in components.queryItems ?? [] {
            let value = item.value ?? ""
            switch item.name {
            case "sslmode":
                guard let mode = SSLMode(rawValue: value) else {
                    throw StoreError.invalidAddress("sslmode '\(value)' is not one of disable, prefer, require, verify-full")
                }
                sslmode = mode
            case "host":
                socketDirectory = value
            case "schema":
                guard value.range(of: "^[a-z_][a-z0-9_]{0,62}$", options: .regularExpression) != nil else {
                    throw StoreError.invalidAddress("schema '\(value)' must be lower-case letters, digits and underscores")
                }
                schema = value
            case "pool_size":
                guard let n = Int(value), (1...200).contains(n) else { throw StoreError.invalidAddress("pool_size must be 1…200, got '\(value)'") }
                poolSize = n
            case "statement_timeout_ms":
                guard let n = Int(value), n > 0 else { throw StoreError.invalidAddress("statement_timeout_ms must be a positive number, got '\(value)'") }
                statementTimeoutMS = n
            case "operation_timeout_ms":
                guard let n = Int(value), n > 0 else { throw StoreError.invalidAddress("operation_timeout_ms must be a positive number, got '\(value)'") }
                operationTimeoutMS = n
            case "start_timeout_ms":
                guard let n = Int(value), n > 0 else { throw StoreError.invalidAddress("start_timeout_ms must be a positive number, got '\(value)'") }
                startTimeoutMS = n
            default:
                throw StoreError.invalidAddress("unknown option '\(item.name)' (known: sslmode, host, schema, pool_size, statement_timeout_ms, operation_timeout_ms, start_timeout_ms)")
            }
        }
    }

    /// Any database address (a URL of any scheme, or a file path) with its password replaced, for logs,
    /// errors and `koala-router config`. Works on text no URL parser accepts (a password with an unescaped
    /// `@`, `/` or `#`): everything between `scheme://` and the last `@` is the user information.
    package static func redacted(_ text: String) -> String {
        guard let scheme = text.range(of: "://"), let at = text[scheme.upperBound...].lastIndex(of: "@") else { return text }
        let userinfo = text[scheme.upperBound..<at]
        guard let colon = userinfo.firstIndex(of: ":") else { return text }
        return String(text[..<colon]) + ":REDACTED" + String(text[at...])
    }

    var clientConfiguration: PostgresClient.Configuration {
        var configuration: PostgresClient.Configuration
        if let socketDirectory {
            configuration = .init(unixSocketPath: socketDirectory + "/.s.PGSQL.\(port)", username: username, password: password, database: database)
        } else {
            let tls: PostgresClient.Configuration.TLS
            switch sslmode {
            case .disable: tls = .disable
            case .prefer, .require:
                // As libpq: prefer/require encrypt without checking the certificate; verify-full checks it.
                var context = TLSConfiguration.makeClientConfiguration()
                context.certificateVerification = .none
                tls = sslmode == .prefer ? .prefer(context) : .require(context)
            case .verifyFull: tls = .require(.makeClientConfiguration())
            }
            configuration = .init(host: host, port: port, username: username, password: password, database: database, tls: tls)
        }
        configuration.options.maximumConnections = poolSize
        configuration.options.connectTimeout = .seconds(5)
        var parameters = [("statement_timeout", "\(statementTimeoutMS)"), ("application_name", "koala-router")]
        if let schema { parameters.append(("search_path", schema)) }
        configuration.options.additionalStartupParameters = parameters
        return configuration
    }
}

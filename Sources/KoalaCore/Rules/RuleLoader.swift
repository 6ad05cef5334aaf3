import Foundation
import Yams

/// Reads rule files and validates them completely, collecting every error with its file, line and column.
package struct RuleLoader: Sendable {
    let environment: [String: String]
    /// The free-mail list every source routes with.
    let freeMail: FreeMailDomains

    package init(environment: [String: String] = ProcessInfo.processInfo.environment, freeMail: FreeMailDomains = .shipped) {
        self.environment = environment
        self.freeMail = freeMail
    }

    /// Loads every `*.yaml` / `*.yml` file directly inside `directory` (sub-folders such as `tests/` are not rules).
    package func load(directory: String) throws(RuleTableErrors) -> RuleTable {
        let url = URL(fileURLWithPath: directory)
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            let absolute = url.standardizedFileURL.path
            var isDirectory: ObjCBool = false
            let why = !FileManager.default.fileExists(atPath: absolute, isDirectory: &isDirectory) ? "there is no folder \(absolute)"
                : !isDirectory.boolValue ? "\(absolute) is a file, not a folder" : "\(absolute) cannot be read (permissions?)"
            throw RuleTableErrors(errors: [RuleError(file: directory, line: 0, column: 0,
                message: "cannot read the rules folder: \(why)",
                hint: "run from the folder that holds '\(directory)', or name the rules folder: an argument (koala-router check path/to/routes), --routes, or KOALA_ROUTER_ROUTES")])
        }
        let files = names.filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted()
        var inputs: [(path: String, text: String)] = []
        var errors: [RuleError] = []
        for name in files {
            let path = url.appendingPathComponent(name).path
            let displayPath = directory == "." ? name : (directory.hasSuffix("/") ? directory + name : directory + "/" + name)
            guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                errors.append(RuleError(file: displayPath, line: 0, column: 0, message: "cannot read the file as UTF-8 text", hint: "save it as UTF-8"))
                continue
            }
            inputs.append((displayPath, text))
        }
        if inputs.isEmpty && errors.isEmpty {
            throw RuleTableErrors(errors: [RuleError(file: directory, line: 0, column: 0,
                message: "no rule files (*.yaml) found", hint: "add a rule file, e.g. copy routes/stripe.yaml from the project")])
        }
        let result = Result { () throws(RuleTableErrors) -> RuleTable in try load(files: inputs) }
        switch result {
        case .success(let table):
            if !errors.isEmpty { throw RuleTableErrors(errors: errors) }
            return table
        case .failure(let failure):
            throw RuleTableErrors(errors: errors + failure.errors)
        }
    }

    /// Loads rule files given as (path, text) pairs.
    package func load(files: [(path: String, text: String)]) throws(RuleTableErrors) -> RuleTable {
        var errors: [RuleError] = []
        var warnings: [String] = []
        var secretErrors: [String] = []
        var sources: [String: SourceDefinition] = [:]
        var sourceFiles: [String: String] = [:]
        var hashInput = [UInt8]()
        for (path, text) in files {
            hashInput += Array(path.utf8) + [0] + Array(text.utf8) + [0]
            var file = FileParser(path: path, text: text, environment: environment)
            if var source = file.parse() {
                source.freeMail = freeMail
                if let previous = sourceFiles[source.name] {
                    errors.append(RuleError(file: path, line: 1, column: 1,
                        message: "source '\(source.name)' is already defined in \(previous)",
                        hint: "give each source its own name; one file per source"))
                } else {
                    sources[source.name] = source
                    sourceFiles[source.name] = path
                }
            }
            errors += file.errors
            warnings += file.warnings
            secretErrors += file.secretErrors
        }
        guard errors.isEmpty else { throw RuleTableErrors(errors: errors) }
        let version = String(Hex.encode(Crypto.digest(.sha256, hashInput)).prefix(12))
        return RuleTable(version: version, sources: sources, warnings: warnings, secretErrors: secretErrors)
    }
}

/// Parses one rule file.
package struct FileParser {
    let path: String
    let text: String
    let environment: [String: String]
    var errors: [RuleError] = []
    var warnings: [String] = []
    /// Every value expression parsed, with where it is written (for `check --samples`).
    var sites: [ExpressionSite] = []
    /// Secrets whose `NAME_FILE` cannot be read, with the reason.
    var unreadableSecrets: [String: String] = [:]
    /// Secrets that are set but unusable (not valid in their encoding, or shorter than `minimumSecretBytes`).
    var secretErrors: [String] = []
    /// The shortest key accepted: 128 bits, as a guessable HMAC key (or an empty one) authenticates anyone.
    static let minimumSecretBytes = 16

    package init(path: String, text: String, environment: [String: String]) {
        self.path = path
        self.text = text
        self.environment = environment
    }

    static let sourceKeys = ["source", "description", "verify", "id", "type", "time", "keep_headers", "routes"]
    static let verifyKeys = Array(Set(Schemes.all.values.flatMap(\.options))).sorted()
    static let routeKeys = ["name", "description", "when", "person", "track", "identify", "account", "billing", "remember", "destinations"]
    static let whenKeys = ["type", "where"]
    static let personKeys = ["email", "profile_id", "user_id"]
    static let trackKeys = ["event", "properties", "destinations"]
    static let identifyKeys = ["traits", "destinations"]
    static let memoryKeys = ["key", "values"]
    static let accountKeys = ["domain", "account_id", "group_id", "traits", "destinations"]
    /// Where each key belongs, for the hint on a key at the wrong indentation.
    static let sections: [(name: String, keys: [String])] = [
        ("'person:'", personKeys), ("'when:'", whenKeys), ("'track:'", trackKeys), ("'account:'", accountKeys),
        ("'identify:'", identifyKeys), ("a route (an entry of 'routes:')", routeKeys), ("the top level of a rule file", sourceKeys),
    ]

    mutating func parse() -> SourceDefinition? {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                errors.append(RuleError(file: path, line: 1, column: 1, message: "the file is empty",
                                        hint: "start with 'source: <name>'"))
                return nil
            }
            root = node
        } catch let error as YamlError {
            errors.append(yamlError(error))
            return nil
        } catch {
            errors.append(RuleError(file: path, line: 1, column: 1, message: "cannot parse YAML: \(error)", hint: "fix the YAML syntax"))
            return nil
        }
        guard let top = mapping(root, what: "the top level of a rule file", allowed: Self.sourceKeys) else { return nil }

        guard let nameNode = require(top, "source", in: root, hint: "name the source, e.g. 'source: stripe'; webhooks arrive at POST /webhooks/<source>"),
              let name = plainString(nameNode, what: "source") else { return nil }
        if !Self.isName(name) {
            errors.append(location(nameNode).error("source name '\(name)' is not allowed",
                hint: "use lower-case letters, digits, '-' and '_' (it becomes the URL path /webhooks/\(name))"))
        }

        // verify
        var scheme = "stripe"
        var state = SourceState.disabled(reason: "source '\(name)' has no valid verify block")
        var shape = VerifierShape()
        var schemeDefinition: Schemes.Definition?
        if let verifyNode = require(top, "verify", in: root, hint: "every source verifies its webhooks, e.g. 'verify: { scheme: stripe, secrets: [STRIPE_WEBHOOK_SECRET] }'"),
           let verify = mapping(verifyNode, what: "verify", allowed: Self.verifyKeys) {
            if let schemeNode = require(verify, "scheme", in: verifyNode, hint: "name a scheme: \(Schemes.all.keys.sorted().joined(separator: ", "))"),
               let schemeName = plainString(schemeNode, what: "verify.scheme") {
                scheme = schemeName
                if let definition = Schemes.all[schemeName] {
                    schemeDefinition = definition
                } else {
                    let suggestion = Suggest.closest(to: schemeName, in: Array(Schemes.all.keys)).map { "did you mean '\($0)'? " } ?? ""
                    errors.append(location(schemeNode).error("unknown signature scheme '\(schemeName)'",
                        hint: "\(suggestion)supported schemes: \(Schemes.all.keys.sorted().joined(separator: ", "))"))
                }
            }
            if let definition = schemeDefinition {
                if let built = buildVerifier(definition, verify: verify, verifyNode: verifyNode, source: name) {
                    (state, shape) = built
                }
            }
        }
        let webhookID = expression(top["id"], default: schemeDefinition?.defaultID, what: "id")
        let eventType = expression(top["type"], default: schemeDefinition?.defaultType, what: "type")
        let eventTime = expression(top["time"], default: schemeDefinition?.defaultTime, what: "time")
        if top["id"] == nil, schemeDefinition == nil {
            errors.append(location(root).error("missing 'id'", hint: "say where the webhook id lives, e.g. 'id: body.id'"))
        }
        if let webhookID, shape.signsBody {
            checkSigned(webhookID, at: top["id"].map { location($0) } ?? location(root), scheme: scheme, shape: shape)
        }

        var routes: [Route] = []
        if let routesNode = require(top, "routes", in: root, hint: "add a list of routes, each with a name, 'when' and outputs") {
            if case .sequence(let items) = routesNode {
                var seen: [String: SourceLocation] = [:]
                for item in items {
                    if let route = parseRoute(item) {
                        if let first = seen[route.name] {
                            errors.append(route.location.error("route name '\(route.name)' is used twice (first at line \(first.line))",
                                hint: "route names are part of every message id: make each unique within the source"))
                        } else {
                            seen[route.name] = route.location
                            routes.append(route)
                        }
                    }
                }
            } else {
                errors.append(location(routesNode).error("'routes' must be a list", hint: "start each route with '- name: …'"))
            }
        }

        guard let webhookID, let eventType else { return nil }
        let kept = keptHeaders(top["keep_headers"], shape: shape, delivery: schemeDefinition?.deliveryHeaders ?? [],
                               identification: [webhookID, eventType] + (eventTime.map { [$0] } ?? []))
        return SourceDefinition(
            name: name, file: path, scheme: scheme, state: state, credentialHeaders: shape.credentialHeaders,
            keptHeaders: kept, webhookID: webhookID, eventType: eventType, eventTime: eventTime, routes: routes
        )
    }

    /// The headers stored with a webhook (and the only ones rules see), lower-cased: an allow-list, since no list
    /// of credential-looking names is ever complete. `content-type` and `user-agent`; what the scheme signs beside
    /// the body and its delivery metadata; every header an expression of this file reads; and the file's
    /// `keep_headers`. A credential is never kept, even when listed.
    mutating func keptHeaders(_ node: Node?, shape: VerifierShape, delivery: [String], identification: [Expression]) -> Set<String> {
        let credentials = Set(shape.credentialHeaders.map { $0.lowercased() })
        func keepable(_ name: String) -> Bool { !credentials.contains(name) && !StoredHeaders.isSensitive(name) }
        var kept: Set<String> = ["content-type", "user-agent"]
        for name in shape.signedHeaders + delivery { kept.insert(name.lowercased()) }
        for expression in identification + sites.map(\.expression) {
            for path in expression.paths where path.root == .headers {
                if case .key(let name)? = path.components.first { kept.insert(name.lowercased()) }
            }
        }
        if let node {
            for (name, at) in stringList(node, what: "keep_headers") {
                let lower = name.lowercased()
                guard !lower.isEmpty, lower.utf8.allSatisfy({ StoredHeaders.isTokenByte($0) }) else {
                    errors.append(at.error("'\(name)' is not a header name", hint: "write the name only, e.g. 'X-Request-Id'"))
                    continue
                }
                guard keepable(lower) else {
                    errors.append(at.error("header '\(name)' may carry a credential, and credentials are never stored",
                        hint: "remove it from keep_headers; a signature or credential header is checked, then dropped"))
                    continue
                }
                kept.insert(lower)
            }
        }
        return kept.filter(keepable)
    }

    /// The webhook id is the dedupe key and part of every message id, so it must come from what the signature
    /// covers: the body, its digest, or a signed header. An id read from any other header lets whoever replays a
    /// captured request change it, and the replay pass as a new webhook.
    mutating func checkSigned(_ webhookID: Expression, at: SourceLocation, scheme: String, shape: VerifierShape) {
        let signed = Set(shape.signedHeaders.map { $0.lowercased() })
        for path in webhookID.paths where path.root == .headers {
            guard case .key(let header)? = path.components.first, !signed.contains(header.lowercased()) else { continue }
            let alternatives = shape.signedHeaders.isEmpty ? "" : ", or a header it signs (\(shape.signedHeaders.joined(separator: ", ")))"
            errors.append(at.error(
                "the webhook id reads header '\(header)', which the \(scheme) signature does not cover: a captured webhook resent with another \(header) would pass dedupe as a new one and count twice in Koala",
                hint: "take the id from what is signed: the body (e.g. 'id: body.id') or its digest ('id: webhook.body_sha256')\(alternatives)"))
        }
    }
}

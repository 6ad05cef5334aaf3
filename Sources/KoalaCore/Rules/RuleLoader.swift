import Foundation
import Yams

/// Reads rule files and validates them completely, collecting every error with its file, line and column.
package struct RuleLoader: Sendable {
    let environment: [String: String]

    package init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.environment = environment
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
            if let source = file.parse() {
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

    // MARK: Routes

    mutating func parseRoute(_ node: Node) -> Route? {
        guard let map = mapping(node, what: "a route", allowed: Self.routeKeys) else { return nil }
        let firstSite = sites.count
        guard let nameNode = require(map, "name", in: node, hint: "give the route a unique name, e.g. 'name: invoice-paid'"),
              let name = plainString(nameNode, what: "route name") else { return nil }
        if !Self.isName(name) {
            errors.append(location(nameNode).error("route name '\(name)' is not allowed",
                hint: "use lower-case letters, digits, '-' and '_'; the name is part of every message id"))
        }
        var types: [TypePattern] = []
        var condition: Condition?
        if let whenNode = require(map, "when", in: node, hint: "say which events this route takes, e.g. 'when: { type: invoice.paid }'"),
           let when = mapping(whenNode, what: "when", allowed: Self.whenKeys) {
            if let typeNode = require(when, "type", in: whenNode, hint: "name an event type, a list of them, or a glob such as customer.subscription.*") {
                for (text, _) in stringList(typeNode, what: "when.type") {
                    types.append(TypePattern(text))
                }
            }
            if let whereNode = when["where"] {
                condition = parseCondition(whereNode)
            }
        }

        var person: PersonSpec?
        if let personNode = map["person"], let p = mapping(personNode, what: "person", allowed: Self.personKeys) {
            let email = expression(p["email"], default: nil, what: "person.email")
            let profileID = expression(p["profile_id"], default: nil, what: "person.profile_id")
            if p["email"] == nil && p["profile_id"] == nil {
                errors.append(location(personNode).error("person needs 'email' or 'profile_id'",
                    hint: "Koala ties every visitor message to an email or a profile_id, e.g. 'email: body.data.object.customer_email'"))
            }
            person = PersonSpec(email: email, profileID: profileID,
                                userID: expression(p["user_id"], default: nil, what: "person.user_id"))
        }

        var outputDestinations: [KoalaMessage.Output: [Destination]] = [:]
        var track: TrackOutput?
        if let trackNode = map["track"], let t = mapping(trackNode, what: "track", allowed: Self.trackKeys) {
            if let node = t["destinations"] { outputDestinations[.track] = destinationList(node) }
            if let eventNode = require(t, "event", in: trackNode, hint: "name the Koala event, e.g. 'event: Invoice Paid'"),
               let event = expression(eventNode, default: nil, what: "track.event") {
                track = TrackOutput(event: event, properties: fields(t["properties"], what: "track.properties"))
            }
        }
        var identify: IdentifyOutput?
        if let identifyNode = map["identify"], let i = mapping(identifyNode, what: "identify", allowed: Self.identifyKeys) {
            if let node = i["destinations"] { outputDestinations[.identify] = destinationList(node) }
            if let traitsNode = require(i, "traits", in: identifyNode, hint: "list the visitor traits to set") {
                identify = IdentifyOutput(traits: fields(traitsNode, what: "identify.traits"))
            }
        }
        var account: AccountOutput?
        if let accountNode = map["account"], let a = mapping(accountNode, what: "account", allowed: Self.accountKeys) {
            if let node = a["destinations"] { outputDestinations[.account] = destinationList(node) }
            let domain = expression(a["domain"], default: nil, what: "account.domain")
            let accountID = expression(a["account_id"], default: nil, what: "account.account_id")
            if a["domain"] == nil && a["account_id"] == nil {
                errors.append(location(accountNode).error("account needs 'domain' or 'account_id'",
                    hint: "Koala keys account traits by domain, e.g. 'domain: person.email | email_domain'"))
            }
            account = AccountOutput(domain: domain, accountID: accountID,
                                    groupID: expression(a["group_id"], default: nil, what: "account.group_id"),
                                    traits: fields(a["traits"], what: "account.traits"))
        }
        var billing: BillingSpec?
        if let billingNode = map["billing"], let b = mapping(billingNode, what: "billing", allowed: BillingSpec.keys) {
            let newWhen = b["new_when"].flatMap { parseCondition($0) }
            var parsed: FieldList = []
            if case .mapping(var expressions) = billingNode {
                expressions["new_when"] = nil
                parsed = fields(.mapping(expressions), what: "billing")
            }
            for key in (b["discount_id"] != nil ? BillingSpec.requiredForDiscount : BillingSpec.required) where b[key] == nil {
                errors.append(location(billingNode).error("billing needs '\(key)'",
                    hint: "the revenue model keeps one ledger per billing customer and one state per subscription: give customer, subscription and status"))
            }
            if account == nil {
                errors.append(location(billingNode).error("route '\(name)' feeds the revenue model but has no 'account'",
                    hint: "add 'account: { domain: person.email | email_domain }': the model sends the billing customer's state as account traits"))
            }
            // Without an amount there is no MRR movement to send, so a provider that names no person (Recurly) may
            // still keep the account's state.
            if person == nil, billing?.expression("mrr") != nil || b["discount_id"] != nil {
                errors.append(location(billingNode).error("route '\(name)' feeds the revenue model an mrr but has no 'person'",
                    hint: "add 'person: { email: … }': MRR movements are sent as the customer's 'MRR Changed' events (or leave out billing.mrr)"))
            }
            if track != nil {
                errors.append(location(map["track"] ?? billingNode).error("route '\(name)' has both 'billing' and 'track'",
                    hint: "a billing route sends the account's state and its MRR movements; put lifecycle events in routes of their own"))
            }
            for spec in memorySpecs(map["remember"]) where spec.name == BillingSpec.ledgerNamespace {
                errors.append(location(billingNode).error("'\(BillingSpec.ledgerNamespace)' is the revenue model's own memory", hint: "remember under another name"))
            }
            billing = BillingSpec(fields: parsed, newWhen: newWhen)
        }
        if (track != nil || identify != nil) && person == nil {
            errors.append(location(node).error("route '\(name)' sends visitor data but has no 'person'",
                hint: "add 'person: { email: … }' so Koala knows whose event or traits these are"))
        }
        let remember = memorySpecs(map["remember"])
        // A route may only remember a state (a discount, say) that later routes read.
        if track == nil && identify == nil && account == nil && billing == nil && map["track"] == nil && map["identify"] == nil && map["account"] == nil
            && !remember.contains(where: { !$0.values.isEmpty }) {
            errors.append(location(node).error("route '\(name)' has no output",
                hint: "add at least one of 'track', 'identify', 'account' or 'billing' (or remember values for later routes)"))
        }
        if remember.contains(where: { $0.values.isEmpty }) && person == nil && account == nil {
            errors.append(location(map["remember"] ?? node).error("route '\(name)' remembers an identity but resolves none",
                hint: "add 'person: { email: … }' (or an account) whose identity is remembered, or remember 'values:'"))
        }
        let destinations = map["destinations"].map { destinationList($0) }
        return Route(name: name, location: location(node), types: types, condition: condition, person: person,
                     track: track, identify: identify, account: account, remember: remember, billing: billing,
                     destinations: destinations, outputDestinations: outputDestinations,
                     sites: Array(sites[firstSite...]))
    }

    // MARK: Verification

    /// What a scheme, with its options, reads and signs, known whether or not its secrets are set.
    struct VerifierShape {
        var credentialHeaders: [String] = []
        var signedHeaders: [String] = []
        var signsBody = true

        init() {}

        init(_ verifier: any SignatureVerifier) {
            credentialHeaders = verifier.credentialHeaders
            signedHeaders = verifier.signedHeaders
            signsBody = verifier.signsBody
        }
    }

    /// Builds the source's verifier, or says why the source is disabled (a secret is not set), with the
    /// headers the scheme reads credentials from; nil when the verify block has errors (recorded).
    mutating func buildVerifier(_ definition: Schemes.Definition, verify: [String: Node], verifyNode: Node, source: String)
        -> (state: SourceState, shape: VerifierShape)?
    {
        var options: Schemes.Options = [:]
        var optionLocations: [String: SourceLocation] = [:]
        for (key, node) in verify where !["scheme", "secrets", "tolerance"].contains(key) {
            guard definition.options.contains(key) else {
                errors.append(location(node).error("'\(key)' is not an option of the \(definition.name) scheme",
                    hint: "options of \(definition.name): \(definition.options.joined(separator: ", "))"))
                continue
            }
            guard case .scalar(let scalar) = node else {
                errors.append(location(node).error("verify.\(key) must be text", hint: "write a single value"))
                continue
            }
            options[key] = scalar.string
            optionLocations[key] = location(node)
        }
        var tolerance = definition.defaultTolerance ?? 0
        if let toleranceNode = verify["tolerance"] {
            if definition.defaultTolerance == nil {
                errors.append(location(toleranceNode).error("the \(definition.name) scheme signs no timestamp, so 'tolerance' has no effect",
                    hint: "remove it; replays of such webhooks are stopped by the webhook-id dedupe"))
            } else if let seconds = duration(toleranceNode, what: "verify.tolerance") {
                tolerance = seconds
            }
        }
        var encoding = definition.defaultSecretEncoding
        if let text = options.removeValue(forKey: "secret_encoding") {
            if let e = Schemes.SecretEncoding(rawValue: text) {
                encoding = e
            } else {
                errors.append((optionLocations["secret_encoding"] ?? location(verifyNode)).error("unknown secret_encoding '\(text)'",
                    hint: "use raw (the secret's bytes), base64 (whsec_… decoded) or hex"))
            }
        }
        let secretNames = secretReferences(verify["secrets"], parent: verifyNode, source: source)
        var missing: [String] = []
        for key in definition.referenceOptions {
            guard let reference = options[key] else { continue }
            guard Self.isEnvironmentName(reference) else {
                errors.append((optionLocations[key] ?? location(verifyNode)).error("verify.\(key) names an environment variable, it is not the value itself",
                    hint: "put the value in an environment variable and write its name here"))
                continue
            }
            if let value = resolveSecret(reference), !value.isEmpty { options[key] = value } else { missing.append(reference) }
        }
        // Built without secrets first: it checks the options and names the credential headers even when
        // the source ends up disabled.
        let shape: VerifierShape
        do {
            shape = VerifierShape(try definition.make(options, [], tolerance))
        } catch {
            errors.append((optionLocations[error.option] ?? location(verifyNode)).error(error.message, hint: error.hint))
            return nil
        }
        guard !secretNames.isEmpty else {
            if verify["secrets"] == nil { return nil }  // the missing key is an error already
            let reason = "source '\(source)' is disabled: verify.secrets names no environment variable"
            warnings.append("\(path): \(reason)")
            return (.disabled(reason: reason), shape)
        }
        var secrets: [WebhookSecret] = []
        // Set, but no usable key: not valid in the encoding, or too short to resist guessing. Each is an error
        // `check` reports (the setting is wrong, not merely absent); the source is disabled when none is usable.
        var unusable: [String] = []
        for reference in secretNames {
            // An empty value is no value (`NAME=` in an env file); `whsec_` alone is a secret with an empty key.
            guard let value = resolveSecret(reference), !value.isEmpty else { continue }
            let problem: String
            if let key = encoding.decode(value) {
                if key.count >= Self.minimumSecretBytes {
                    secrets.append(WebhookSecret(label: reference, key: key))
                    continue
                }
                problem = "\(reference) is set but its key is \(key.count) byte\(key.count == 1 ? "" : "s") long (\(encoding.keyDescription)); a signing secret needs at least \(Self.minimumSecretBytes): copy the whole secret from the provider's dashboard, or choose a longer one there"
            } else {
                problem = "\(reference) is not a valid \(encoding.rawValue) secret (\(encoding.keyDescription)): copy the whole secret from the provider's dashboard"
            }
            unusable.append(reference)
            secretErrors.append("\(path): source '\(source)': \(problem)")
        }
        if secrets.isEmpty || !missing.isEmpty {
            let reason: String
            if let bad = unusable.first, secrets.isEmpty {
                reason = "source '\(source)' is disabled: \(bad) is not a usable \(encoding.rawValue) secret (at least \(Self.minimumSecretBytes) bytes of key)"
            } else if let unreadable = (missing + secretNames).compactMap({ unreadableSecrets[$0] }).first {
                reason = "source '\(source)' is disabled: \(unreadable)"
            } else {
                let needed = missing.first ?? secretNames[0]
                reason = "source '\(source)' is disabled: set \(needed) (or \(needed)_FILE)"
            }
            warnings.append("\(path): \(reason)")
            return (.disabled(reason: reason), shape)
        }
        do {
            return (.enabled(try definition.make(options, secrets, tolerance)), shape)
        } catch {
            errors.append((optionLocations[error.option] ?? location(verifyNode)).error(error.message, hint: error.hint))
            return nil
        }
    }

    // MARK: Conditions

    /// `where:` as text (`a == b and c in [x, y]`), a list (all must hold), or `{all: […]}`, `{any: […]}`, `{not: …}`.
    mutating func parseCondition(_ node: Node) -> Condition? {
        switch node {
        case .scalar(let scalar):
            let at = location(node)
            let offset = (scalar.style == .singleQuoted || scalar.style == .doubleQuoted) ? 1 : 0
            do {
                var parser = try ExpressionParser(scalar.string)
                let condition = try parser.parseCompleteCondition()
                for expression in condition.expressions {
                    sites.append(ExpressionSite(what: "when.where", location: at.offset(by: offset), expression: expression))
                }
                return condition
            } catch {
                errors.append(at.offset(by: offset + error.offset).error("in when.where: \(error.message)", hint: error.hint))
                return nil
            }
        case .sequence(let items):
            let parsed = items.compactMap { parseCondition($0) }
            return parsed.count == items.count ? .all(parsed) : nil
        case .mapping(let map):
            guard map.count == 1, let (keyNode, value) = map.first, let key = keyNode.string, ["all", "any", "not"].contains(key) else {
                errors.append(location(node).error("a condition mapping takes exactly one of 'all', 'any' or 'not'",
                    hint: "e.g. 'any: [body.a == 1, body.b exists]'"))
                return nil
            }
            switch key {
            case "not":
                return parseCondition(value).map { .not($0) }
            default:
                guard case .sequence(let items) = value else {
                    errors.append(location(value).error("'\(key)' takes a list of conditions", hint: "write '\(key): [condition, condition]'"))
                    return nil
                }
                let parsed = items.compactMap { parseCondition($0) }
                guard parsed.count == items.count else { return nil }
                return key == "all" ? .all(parsed) : .any(parsed)
            }
        case .alias:
            errors.append(location(node).error("YAML aliases are not supported in conditions", hint: "write the condition out"))
            return nil
        }
    }

    // MARK: Secrets

    mutating func secretReferences(_ node: Node?, parent: Node, source: String) -> [String] {
        guard let node else {
            errors.append(location(parent).error("missing 'secrets'",
                hint: "name the environment variable holding the signing secret, e.g. 'secrets: [\(source.uppercased().replacingOccurrences(of: "-", with: "_"))_WEBHOOK_SECRET]'"))
            return []
        }
        var names: [String] = []
        for (text, at) in stringList(node, what: "verify.secrets") {
            var reference = text
            if reference.hasPrefix("${") && reference.hasSuffix("}") {
                reference = String(reference.dropFirst(2).dropLast())
            }
            guard Self.isEnvironmentName(reference) else {
                errors.append(at.error("secrets are referenced by environment variable name, never written inline",
                    hint: "put the secret in an environment variable (e.g. \(source.uppercased().replacingOccurrences(of: "-", with: "_"))_WEBHOOK_SECRET) and write its name here"))
                continue
            }
            names.append(reference)
        }
        return names
    }

    /// `NAME` from the environment, or the contents of the file named by `NAME_FILE`; an unreadable file is
    /// remembered in `unreadableSecrets` and disables the source with that reason.
    mutating func resolveSecret(_ name: String) -> String? {
        do {
            return try EnvironmentValue.resolve(name, in: environment)
        } catch {
            unreadableSecrets[name] = error.description
            return nil
        }
    }

    // MARK: Values

    /// `destinations: [koala, segment]`: the names of `Destination`.
    mutating func destinationList(_ node: Node) -> [Destination] {
        let names = Destination.allCases.map(\.rawValue)
        let items: [Node]
        switch node {
        case .sequence(let sequence): items = Array(sequence)
        case .scalar: items = [node]
        default:
            errors.append(location(node).error("'destinations' must be a list of destination names", hint: "e.g. 'destinations: [koala]'; names: \(names.joined(separator: ", "))"))
            return []
        }
        var out: [Destination] = []
        for item in items {
            guard let text = item.string, let destination = Destination(rawValue: text) else {
                let given = item.string ?? ""
                let suggestion = Suggest.closest(to: given, in: names).map { "did you mean '\($0)'? " } ?? ""
                errors.append(location(item).error("unknown destination '\(given)'", hint: "\(suggestion)destinations are \(names.joined(separator: ", "))"))
                continue
            }
            if !out.contains(destination) { out.append(destination) }
        }
        if out.isEmpty && items.isEmpty {
            errors.append(location(node).error("'destinations' is empty", hint: "name at least one, e.g. 'destinations: [koala]', or leave the key out to send everywhere"))
        }
        return out
    }

    /// `remember:` — `name: <provider id>` remembers the route's identity; `name: {key: <provider id>,
    /// values: {…}}` remembers values too (state memory), as of the webhook's event time.
    mutating func memorySpecs(_ node: Node?) -> [MemorySpec] {
        guard let node else { return [] }
        guard case .mapping(let map) = node else {
            errors.append(location(node).error("'remember' must be a mapping of memory name: provider id",
                hint: "write e.g. 'stripe_customer: body.data.object.id'"))
            return []
        }
        var out: [MemorySpec] = []
        for (nameNode, valueNode) in map {
            guard let name = nameNode.string, Self.isName(name) else {
                errors.append(location(nameNode).error("memory name '\(nameNode.string ?? "")' is not allowed",
                    hint: "use lower-case letters, digits, '-' and '_', e.g. 'stripe_customer: body.data.object.id'"))
                continue
            }
            if case .mapping = valueNode {
                guard let entry = mapping(valueNode, what: "remember.\(name)", allowed: Self.memoryKeys) else { continue }
                guard let keyNode = require(entry, "key", in: valueNode, hint: "the provider id to remember under, e.g. 'key: body.data.id'"),
                      let key = expression(keyNode, default: nil, what: "remember.\(name).key") else { continue }
                let values = fields(entry["values"], what: "remember.\(name).values")
                if entry["values"] == nil || values.isEmpty {
                    errors.append(location(valueNode).error("remember.\(name) has a key but no 'values'",
                        hint: "list the values to remember, e.g. 'values: { mrr: paddle_mrr(body.data), status: body.data.status }', or write 'remember: { \(name): <provider id> }' for the identity alone"))
                }
                for field in values where Remembered.reservedNames.contains(field.name) {
                    errors.append(location(valueNode).error("remember.\(name).values.\(field.name): '\(field.name)' is reserved",
                        hint: "recall(...) returns \(Remembered.reservedNames.sorted().joined(separator: ", ")) itself; pick another name"))
                }
                out.append(MemorySpec(name: name, key: key, values: values))
            } else if let key = expression(valueNode, default: nil, what: "remember.\(name)") {
                out.append(MemorySpec(name: name, key: key, values: []))
            }
        }
        return out
    }

    mutating func fields(_ node: Node?, what: String) -> FieldList {
        guard let node else { return [] }
        guard case .mapping(let map) = node else {
            errors.append(location(node).error("'\(what)' must be a mapping of name: value", hint: "write e.g. 'amount: body.data.object.amount_paid | cents'"))
            return []
        }
        var out: FieldList = []
        for (keyNode, valueNode) in map {
            guard let key = keyNode.string, !key.isEmpty else {
                errors.append(location(keyNode).error("field names in '\(what)' must be text", hint: "quote the name"))
                continue
            }
            if let value = expression(valueNode, default: nil, what: "\(what).\(key)") {
                out.append((key, value))
            }
        }
        return out
    }

    /// A value position: YAML numbers, booleans and null are literals; text is an expression when it starts
    /// with a path root or function, a template when it contains `{{ }}`, and literal text otherwise.
    mutating func expression(_ node: Node?, default defaultText: String?, what: String) -> Expression? {
        guard let node else {
            guard let defaultText else { return nil }
            if defaultText.contains("{{") {
                return template(defaultText, at: SourceLocation(file: path, line: 1, column: 1), what: what)
            }
            var parser = try! ExpressionParser(defaultText)
            return try! parser.parseComplete()
        }
        switch node {
        case .scalar(let scalar):
            let at = location(node)
            if scalar.style == .plain && node.null != nil { return .literal(.null) }
            if scalar.style == .plain {
                if let b = node.bool { return .literal(.bool(b)) }
                if let i = node.int { return .literal(.int(Int64(i))) }
                if let d = node.float { return .literal(.double(d)) }
            }
            let text = scalar.string
            if scalar.tag.rawValue == "!literal" { return .literal(.string(text)) }
            let contentOffset = (scalar.style == .singleQuoted || scalar.style == .doubleQuoted) ? 1 : 0
            if text.contains("{{") {
                let parsed = template(text, at: at.offset(by: contentOffset), what: what)
                if let parsed { sites.append(ExpressionSite(what: what, location: at.offset(by: contentOffset), expression: parsed)) }
                return parsed
            }
            if ExpressionParser.looksLikeExpression(text) {
                do {
                    var parser = try ExpressionParser(text)
                    let expression = try parser.parseComplete()
                    sites.append(ExpressionSite(what: what, location: at.offset(by: contentOffset), expression: expression))
                    if expression.filterNames.contains("cents") {
                        warnings.append("\(at): in \(what): 'cents' divides by 100 whatever the currency, so JPY 4900 would be sent as 49; use money(<the currency's path>), e.g. body.data.object.amount_paid | money(body.data.object.currency)")
                    }
                    return expression
                } catch {
                    errors.append(at.offset(by: contentOffset + error.offset).error("in \(what): \(error.message)", hint: error.hint))
                    return nil
                }
            }
            if scalar.tag.rawValue != "!literal", let root = ExpressionParser.pathShapedRoot(text) {
                let roots = Path.Root.allCases.map(\.rawValue)
                let guess = Suggest.closest(to: root, in: roots).map { "did you mean '\($0)'? " } ?? ""
                errors.append(at.offset(by: contentOffset).error(
                    "in \(what): '\(text)' looks like a path, but '\(root)' is not a path root",
                    hint: "\(guess)a path starts with \(roots.joined(separator: ", ")); to send this text as-is, write !literal \"\(text)\""))
                return nil
            }
            if scalar.tag.rawValue != "!literal", let (word, function) = ExpressionParser.misspeltFunction(text) {
                errors.append(at.offset(by: contentOffset).error(
                    "in \(what): '\(word)(' looks like a call, but '\(word)' is not a function",
                    hint: "did you mean '\(function)'? to send this text as-is, write !literal \"\(text)\""))
                return nil
            }
            return .literal(.string(text))
        case .sequence(let items):
            var values: [Expression] = []
            for item in items {
                if let e = expression(item, default: nil, what: what) { values.append(e) }
            }
            if values.allSatisfy({ if case .literal = $0 { return true } else { return false } }) {
                return .literal(.array(values.map { if case .literal(let v) = $0 { return v } else { return .null } }))
            }
            errors.append(location(node).error("in \(what): lists may only hold literal values", hint: "build text with a template instead"))
            return nil
        case .mapping:
            errors.append(location(node).error("in \(what): expected a single value, found a mapping",
                hint: "write a path such as body.data.object.email, literal text, or a template"))
            return nil
        case .alias:
            errors.append(location(node).error("in \(what): YAML aliases are not supported", hint: "write the value out"))
            return nil
        }
    }

    mutating func template(_ text: String, at: SourceLocation, what: String) -> Expression? {
        var parts: [Expression.TemplatePart] = []
        var rest = Substring(text)
        var offset = 0
        while let open = rest.range(of: "{{") {
            let prefix = rest[rest.startIndex..<open.lowerBound]
            if !prefix.isEmpty { parts.append(.text(String(prefix))) }
            offset += prefix.unicodeScalars.count + 2
            guard let close = rest[open.upperBound...].range(of: "}}") else {
                errors.append(at.offset(by: offset - 2).error("in \(what): '{{' is not closed", hint: "close it with '}}'"))
                return nil
            }
            let inner = String(rest[open.upperBound..<close.lowerBound])
            do {
                var parser = try ExpressionParser(inner)
                parts.append(.expression(try parser.parseComplete()))
            } catch {
                errors.append(at.offset(by: offset + error.offset).error("in \(what): \(error.message)", hint: error.hint))
                return nil
            }
            offset += inner.unicodeScalars.count + 2
            rest = rest[close.upperBound...]
        }
        if !rest.isEmpty { parts.append(.text(String(rest))) }
        return .template(parts)
    }

    mutating func duration(_ node: Node, what: String) -> Double? {
        if let d = node.float, case .scalar(let s) = node, s.style == .plain { return d }
        let text = node.string ?? ""
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            if let value = Double(text.dropLast(suffix.count).trimmingSpaces), value >= 0 {
                return value * factor
            }
        }
        errors.append(location(node).error("\(what) '\(text)' is not a duration", hint: "write seconds (300) or a number with a unit: 500ms, 300s, 5m, 1h"))
        return nil
    }

    // MARK: YAML helpers

    mutating func mapping(_ node: Node, what: String, allowed: [String]) -> [String: Node]? {
        guard case .mapping(let map) = node else {
            errors.append(location(node).error("\(what) must be a mapping", hint: "write key: value pairs"))
            return nil
        }
        var out: [String: Node] = [:]
        for (keyNode, value) in map {
            guard let key = keyNode.string else { continue }
            if !allowed.contains(key) {
                var suggestion = Suggest.closest(to: key, in: allowed).map { "did you mean '\($0)'? " } ?? ""
                // A key of another section here was most likely indented one level too little (or too much).
                if suggestion.isEmpty, let home = Self.sections.first(where: { $0.keys.contains(key) && $0.keys != allowed }) {
                    suggestion = "'\(key)' is a key of \(home.name): if it belongs there, indent it under that key (YAML nests by indentation); "
                }
                errors.append(location(keyNode).error("unknown key '\(key)' in \(what)",
                    hint: "\(suggestion)allowed keys: \(allowed.joined(separator: ", "))"))
                continue
            }
            if out[key] != nil {
                errors.append(location(keyNode).error("key '\(key)' appears twice in \(what)", hint: "keep one"))
            }
            out[key] = value
        }
        return out
    }

    mutating func require(_ map: [String: Node], _ key: String, in parent: Node, hint: String) -> Node? {
        if let node = map[key] { return node }
        errors.append(location(parent).error("missing '\(key)'", hint: hint))
        return nil
    }

    mutating func plainString(_ node: Node, what: String) -> String? {
        guard case .scalar(let scalar) = node, !scalar.string.isEmpty else {
            errors.append(location(node).error("\(what) must be text", hint: "write a single word"))
            return nil
        }
        return scalar.string
    }

    mutating func stringList(_ node: Node, what: String) -> [(String, SourceLocation)] {
        switch node {
        case .scalar(let scalar):
            return [(scalar.string, location(node))]
        case .sequence(let items):
            var out: [(String, SourceLocation)] = []
            for item in items {
                guard case .scalar(let s) = item else {
                    errors.append(location(item).error("\(what) must be a list of text", hint: "one entry per line, e.g. '- invoice.paid'"))
                    continue
                }
                out.append((s.string, location(item)))
            }
            if out.isEmpty { errors.append(location(node).error("\(what) is empty", hint: "add at least one entry")) }
            return out
        default:
            errors.append(location(node).error("\(what) must be text or a list of text", hint: "e.g. [invoice.paid, invoice.payment_failed]"))
            return []
        }
    }

    func location(_ node: Node) -> SourceLocation {
        let mark = node.mark
        return SourceLocation(file: path, line: mark?.line ?? 1, column: mark?.column ?? 1)
    }

    /// A YAML error of this file, said in the rule author's terms at its line and column.
    package func yamlError(_ error: YamlError) -> RuleError {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _), .composer(let context, let problem, let mark, _):
            let (what, cause) = Self.explainYAML(problem)
            var hint = cause
            if let context, context.mark.line != mark.line {
                hint += " (the \(context.text.replacingOccurrences(of: "while parsing a ", with: "")) it is in starts at line \(context.mark.line))"
            }
            return RuleError(file: path, line: mark.line, column: mark.column, message: "invalid YAML: \(what)", hint: hint)
        default:
            return RuleError(file: path, line: 1, column: 1, message: "invalid YAML: \(error)", hint: "fix the YAML syntax")
        }
    }

    /// libyaml's wording said for people: what is wrong here, and its likely cause.
    static func explainYAML(_ problem: String) -> (String, String) {
        switch problem {
        case "did not find expected key":
            return ("this line is not a 'key: value' where one was expected",
                    "likely cause: it is indented differently from the keys above it, or a value holds ': ' or starts with [ { * & ! without quotes")
        case "mapping values are not allowed in this context":
            return ("a second ': ' on one line", "likely cause: a value holding ': ' (quote it: \"a: b\"), or a key written on the line of another")
        case "found character that cannot start any token":
            return ("a character YAML cannot start a value with", "likely cause: a tab (indent with spaces), or a value starting with @ or ` (quote it)")
        case "did not find expected '-' indicator":
            return ("this line is not a list item ('- …') where one was expected", "likely cause: it is indented differently from the items above it")
        case "could not find expected ':'":
            return ("a key without ':'", "likely cause: a line that continues a value but is not indented under its key, or a missing ':'")
        case "found unexpected end of stream":
            return ("the file ends inside a value", "likely cause: a quote, [ or { opened and never closed")
        case "did not find expected node content":
            return ("a value is missing here", "likely cause: nothing (or only a comment) after '-' or ':' where a value must be, or a stray ',' in a [ ] list")
        case "found a tab character that violates indentation":
            return ("a tab in the indentation", "indent with spaces only")
        default:
            return (problem, "check indentation and quoting around this position")
        }
    }

    static func isName(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 64 && s.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "_" }
    }

    static func isEnvironmentName(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, ("A"..."Z").contains(first) || first == "_" else { return false }
        return s.unicodeScalars.allSatisfy { ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
    }
}

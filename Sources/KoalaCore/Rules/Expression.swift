import Foundation

/// A value computed from a webhook: a literal, a path into the body, headers or resolved person,
/// a string template, optionally followed by a pipeline of filters.
package indirect enum Expression: Sendable, CustomStringConvertible {
    case literal(JSONValue)
    case path(Path)
    case template([TemplatePart])
    case call(String, [Expression])
    /// Fields of a computed value, e.g. `recall(stripe_customer, body.data.object.customer).email`.
    case access(Expression, [Path.Component])
    case piped(Expression, [Filter])

    /// A piece of a template: literal text or an expression whose value is spliced in.
    package enum TemplatePart: Sendable {
        case text(String)
        case expression(Expression)
    }

    package var description: String {
        switch self {
        case .literal(let value): value.encoded()
        case .path(let path): path.description
        case .template(let parts):
            parts.map { part -> String in
                switch part {
                case .text(let t): t
                case .expression(let e): "{{ \(e) }}"
                }
            }.joined()
        case .call(let name, let args): "\(name)(\(args.map(\.description).joined(separator: ", ")))"
        case .access(let base, let components): base.description + Path(root: .body, components: components).description.dropFirst(4)
        case .piped(let base, let filters): ([base.description] + filters.map(\.description)).joined(separator: " | ")
        }
    }

    /// The names of the filters used anywhere in this expression.
    var filterNames: [String] {
        switch self {
        case .literal, .path: []
        case .template(let parts):
            parts.flatMap { part -> [String] in
                if case .expression(let e) = part { return e.filterNames }
                return []
            }
        case .call(_, let args): args.flatMap(\.filterNames)
        case .access(let base, _): base.filterNames
        case .piped(let base, let filters): base.filterNames + filters.flatMap { [$0.name] + $0.arguments.flatMap(\.filterNames) }
        }
    }

    /// Every path this expression reads, in filters' arguments and templates too.
    package var paths: [Path] {
        switch self {
        case .literal: []
        case .path(let path): [path]
        case .template(let parts):
            parts.flatMap { part -> [Path] in
                if case .expression(let e) = part { return e.paths }
                return []
            }
        case .call(_, let args): args.flatMap(\.paths)
        case .access(let base, _): base.paths
        case .piped(let base, let filters): base.paths + filters.flatMap { $0.arguments.flatMap(\.paths) }
        }
    }

    /// Whether this expression reads a path under `root` (e.g. `person.email`).
    package func reads(root: Path.Root) -> Bool {
        paths.contains { $0.root == root }
    }

    /// The `recall(namespace, key)` and `latest(namespace, key)` calls inside this expression: the memory it reads.
    package var recalls: [(namespace: String, key: Expression)] { memoryCalls(["recall", "latest"]) }

    /// The `recall` calls alone: the states a route compares against, which make it out of order when they are
    /// newer than the webhook (`latest` copies the newest value known and never does).
    package var orderedRecalls: [(namespace: String, key: Expression)] { memoryCalls(["recall"]) }

    /// The names of the functions that read memory.
    package static let memoryFunctions: Set<String> = ["recall", "latest"]

    func memoryCalls(_ names: Set<String>) -> [(namespace: String, key: Expression)] {
        switch self {
        case .literal, .path: []
        case .template(let parts):
            parts.flatMap { part -> [(namespace: String, key: Expression)] in
                if case .expression(let e) = part { return e.memoryCalls(names) }
                return []
            }
        case .call(let name, let args) where Self.memoryFunctions.contains(name):
            if names.contains(name), args.count == 2, case .literal(.string(let namespace)) = args[0] { [(namespace, args[1])] } else { [] }
        case .call(_, let args): args.flatMap { $0.memoryCalls(names) }
        case .access(let base, _): base.memoryCalls(names)
        case .piped(let base, let filters): base.memoryCalls(names) + filters.flatMap { $0.arguments.flatMap { $0.memoryCalls(names) } }
        }
    }
}

/// A path such as `body.data.object.items.data[0].price.nickname` or `headers.x-event-name`.
package struct Path: Sendable, CustomStringConvertible {
    /// What a path starts from: the payload (`body`), its `headers`, the resolved `person`, or facts about the `webhook`.
    package enum Root: String, Sendable, CaseIterable {
        case body, headers, person, webhook
    }

    /// One step of a path: a key of an object or an index of an array.
    package enum Component: Sendable {
        case key(String)
        case index(Int)
        /// The first array element whose `field` equals (or, negated, differs from) `value`,
        /// e.g. `email_addresses[id == body.data.primary_email_address_id]`.
        case select(field: [String], negated: Bool, value: Expression)
    }

    /// Where the path starts: the body, the headers, the webhook, or a value of the route.
    package let root: Root
    /// The steps from the root, in order.
    package let components: [Component]

    package init(root: Root, components: [Component]) {
        self.root = root
        self.components = components
    }

    package var description: String {
        var out = root.rawValue
        for component in components {
            switch component {
            case .key(let k):
                if k.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) && !k.isEmpty {
                    out += ".\(k)"
                } else {
                    out += "[\"\(k)\"]"
                }
            case .index(let i): out += "[\(i)]"
            case .select(let field, let negated, let value): out += "[\(field.joined(separator: ".")) \(negated ? "!=" : "==") \(value)]"
            }
        }
        return out
    }
}

/// One step of a pipeline, e.g. `cents`, `default('unknown')`, `join(', ')`.
package struct Filter: Sendable, CustomStringConvertible {
    /// The filter's name as written (`cents`, `default`).
    package let name: String
    /// Its arguments, each an expression of its own.
    package let arguments: [Expression]
    /// The filter itself: the piped value and the arguments' values in, the result out (nil: missing).
    package let apply: @Sendable (JSONValue?, [JSONValue?]) -> JSONValue?

    package var description: String {
        arguments.isEmpty ? name : "\(name)(\(arguments.map(\.description).joined(separator: ", ")))"
    }
}

/// Everything an expression can read while a webhook is routed.
package struct EvaluationContext: Sendable {
    /// What `body.…` reads: a webhook's tape (ingest, routing), or a tree (rule tests' inline values, fuzzing).
    enum Body: Sendable {
        case tape(JSONTape)
        case tree(JSONValue)
    }

    let body: Body
    /// Header names lower-cased.
    let headers: [String: String]
    var person: JSONValue
    let webhook: JSONValue
    /// Identities remembered by earlier webhooks, as `recall` sees them: `{email, profile_id, domain}`.
    var memory: [MemoryKey: JSONValue]

    package init(body: JSONValue, headers: [String: String], webhook: JSONValue, person: JSONValue = .object([:]),
                memory: [MemoryKey: JSONValue] = [:]) {
        self.init(body: .tree(body), headers: headers, webhook: webhook, person: person, memory: memory)
    }

    package init(body: JSONTape, headers: [String: String], webhook: JSONValue, person: JSONValue = .object([:]),
                memory: [MemoryKey: JSONValue] = [:]) {
        self.init(body: .tape(body), headers: headers, webhook: webhook, person: person, memory: memory)
    }

    init(body: Body, headers: [String: String], webhook: JSONValue, person: JSONValue, memory: [MemoryKey: JSONValue]) {
        self.body = body
        self.headers = headers
        self.webhook = webhook
        self.person = person
        self.memory = memory
    }
}

/// One entry of identity memory within a source: `namespace` (e.g. `stripe_customer`) and the provider's id.
package struct MemoryKey: Sendable, Hashable {
    /// Which kind of key, e.g. `stripe_customer`.
    package let namespace: String
    /// The key itself, e.g. a customer id.
    package let key: String

    package init(namespace: String, key: String) {
        self.namespace = namespace
        self.key = key
    }

    /// A key read from a webhook: nil unless it is usable (`Identity.isUsableKey`), so a provider id with a
    /// control character or of unbounded length never reaches identity memory.
    init?(namespace: String, payloadKey: String) {
        guard Identity.isUsableKey(payloadKey) else { return nil }
        self.init(namespace: namespace, key: payloadKey)
    }
}

extension Expression {
    /// Evaluates to a value, or nil when a path is missing (JSON `null` stays `.null`).
    package func evaluate(in context: EvaluationContext) -> JSONValue? {
        switch self {
        case .literal(let value):
            return value
        case .path(let path):
            return path.resolve(in: context)
        case .template(let parts):
            var out = ""
            var incomplete = false
            for part in parts {
                switch part {
                case .text(let t): out += t
                case .expression(let e):
                    // Missing, null, blank and numbers out of range add nothing.
                    let value = e.evaluate(in: context)
                    if let text = value?.textValue, !text.allSatisfy(\.isWhitespace) {
                        out += text
                    } else if let value, value.isContainer {
                        out += value.encoded()
                    } else {
                        incomplete = true
                    }
                }
            }
            // "{{ first }} {{ last }}" without a last name is "Mary", not "Mary "; with neither, no value at all.
            if incomplete {
                out = out.split(whereSeparator: \.isWhitespace).joined(separator: " ")
            }
            return out.isEmpty ? .none : .some(.string(out))
        case .call(let name, let args) where Self.memoryFunctions.contains(name):
            guard args.count == 2, case .literal(.string(let namespace)) = args[0],
                  let key = args[1].evaluate(in: context)?.textValue, let memoryKey = MemoryKey(namespace: namespace, payloadKey: key)
            else { return nil }
            return context.memory[memoryKey]
        case .call(let name, let args):
            return Functions.call(name, args.map { $0.evaluate(in: context) })
        case .access(let base, let components):
            guard let value = base.evaluate(in: context) else { return nil }
            return Path.walk(value, components[...], in: context)
        case .piped(let base, let filters):
            var value = base.evaluate(in: context)
            for filter in filters {
                value = filter.apply(value, filter.arguments.map { $0.evaluate(in: context) })
            }
            return value
        }
    }
}

extension Path {
    /// Equality used by selections and conditions: numbers compare by value, text and numbers by their text.
    package static func looselyEqual(_ a: JSONValue?, _ b: JSONValue?) -> Bool {
        guard let a, let b else { return a == nil && b == nil }
        if a == b { return true }
        if let x = a.doubleValue, let y = b.doubleValue, a.stringValue == nil || b.stringValue == nil { return x == y }
        if let x = a.textValue, let y = b.textValue { return x == y }
        return false
    }

    /// The value the path reads in `context`; nil when any step finds nothing (a missing value, never a trap).
    package func resolve(in context: EvaluationContext) -> JSONValue? {
        var current: JSONValue
        var rest = components[...]
        switch root {
        case .body:
            switch context.body {
            case .tree(let body): current = body
            case .tape(let tape): return Path.walk(tape, from: JSONTape.root, rest, in: context)
            }
        case .person: current = context.person
        case .webhook: current = context.webhook
        case .headers:
            guard let first = rest.first else {
                return .object(context.headers.mapValues { .string($0) })
            }
            guard case .key(let name) = first, let value = context.headers[name.lowercased()] else { return nil }
            current = .string(value)
            rest = rest.dropFirst()
        }
        return Path.walk(current, rest, in: context)
    }

    /// Follows `components` through `tape` from the entry `start`, as `walk` does through a tree: no value is built
    /// until the path ends (a selection builds the fields it compares).
    static func walk(_ tape: JSONTape, from start: Int, _ components: ArraySlice<Component>, in context: EvaluationContext) -> JSONValue? {
        var current = start
        for component in components {
            switch component {
            case .key(let key):
                guard let next = tape.member(key, of: current) else { return nil }
                current = next
            case .index(let index):
                guard let next = tape.element(index, of: current) else { return nil }
                current = next
            case .select(let field, let negated, let valueExpression):
                guard tape.isArray(current) else { return nil }
                let wanted = valueExpression.evaluate(in: context)
                guard let found = tape.elements(of: current).first(where: { item in
                    var entry: Int? = item
                    for key in field { entry = entry.flatMap { tape.member(key, of: $0) } }
                    return Path.looselyEqual(entry.map { tape.value(at: $0) }, wanted) != negated
                }) else { return nil }
                current = found
            }
        }
        return tape.value(at: current)
    }

    /// Follows `components` from `value`; nil as soon as one is missing or does not fit.
    static func walk(_ value: JSONValue, _ components: ArraySlice<Component>, in context: EvaluationContext) -> JSONValue? {
        var current = value
        for component in components {
            if case .select(let field, let negated, let valueExpression) = component {
                guard case .array(let items) = current else { return nil }
                let wanted = valueExpression.evaluate(in: context)
                guard let found = items.first(where: { item in
                    var value: JSONValue? = item
                    for key in field { value = value?[key] }
                    return Path.looselyEqual(value, wanted) != negated
                }) else { return nil }
                current = found
                continue
            }
            switch (component, current) {
            case (.key(let key), .object(let object)):
                guard let next = object[key] else { return nil }
                current = next
            case (.index(let index), .array(let items)):
                let position = index < 0 ? items.count + index : index
                guard position >= 0, position < items.count else { return nil }
                current = items[position]
            default:
                return nil
            }
        }
        return current
    }
}

/// Functions callable in expressions.
package enum Functions {
    /// `changes` laid over `base`: objects merge key by key (Stripe lists only the changed keys of a hash),
    /// anything else (arrays, values) is replaced whole (Stripe sends a changed array entire).
    static func overlay(_ changes: JSONValue, on base: JSONValue) -> JSONValue {
        guard case .object(let new) = changes, case .object(var old) = base else { return changes }
        for (key, value) in new {
            old[key] = old[key].map { overlay(value, on: $0) } ?? value
        }
        return .object(old)
    }

    /// The functions that compute a subscription's MRR from its payload (and remembered discounts).
    package static let mrrFunctions: Set<String> = ["stripe_mrr", "stripe_mrr_basis", "stripe_list_mrr", "stripe_mrr_pending",
                                            "paddle_mrr", "paddle_mrr_basis", "paddle_list_mrr", "clerk_mrr", "clerk_mrr_basis"]

    static let names: [String: ClosedRange<Int>] = [
        "coalesce": 1...16,
        "recall": 2...2,
        "latest": 2...2,
        "stripe_mrr": 1...4,
        "stripe_mrr_basis": 1...4,
        "stripe_list_mrr": 1...1,
        "stripe_mrr_pending": 1...4,
        "paddle_mrr": 1...4,
        "paddle_mrr_basis": 1...4,
        "paddle_list_mrr": 1...1,
        "clerk_mrr": 1...1,
        "clerk_mrr_basis": 1...1,
        "billing_interval": 1...2,
        "stripe_previous": 1...1,
        "stripe_billing_status": 1...1,
        "stripe_is_paying": 1...1,
        "paddle_billing_status": 1...1,
        "paddle_is_paying": 1...1,
        "paying": 2...2,
        "minus": 2...2,
        "concat": 2...16,
    ]

    /// Every function as README's reference lists it: how it is called and what it gives. A test renders the
    /// table from this and compares it with README (the names must be those of `names`).
    static let reference: [(call: String, gives: String)] = [
        ("coalesce(a, b, …)", "the first argument that is not missing, null or blank (up to 16)"),
        ("recall(namespace, key)", "what an earlier webhook remembered under the key: `email`, `profile_id`, `domain`, its values and `remembered_at`; a route that reads a state remembered from a later event is skipped (out of order)"),
        ("latest(namespace, key)", "the same, newest state whatever this webhook's time: reading it never makes a route out of order"),
        ("concat(a, b, …)", "the texts joined; missing if a part is"),
        ("minus(a, b)", "a − b; missing if a side is"),
        ("paying(billing_status, mrr)", "true for `active` or `cancelling` with an MRR above zero; never a trial"),
        ("billing_interval(interval, count)", "`day`, `week`, `month`, `quarter`, `half_year`, `year` (or `<count> <interval>s`)"),
        ("stripe_mrr(subscription, discount…)", "a Stripe subscription's MRR: every item × quantity per month, less the discounts that keep applying (README, Values)"),
        ("stripe_mrr_basis(subscription, discount…)", "how that MRR was told: `net`, `list_price` (a discount that cannot be known) or `unknown`"),
        ("stripe_list_mrr(subscription)", "the MRR before discounts"),
        ("stripe_mrr_pending(subscription, discount…)", "what the revenue model keeps to finish the MRR when discounts named by id only are described later"),
        ("stripe_previous(data)", "the object of a Stripe `*.updated` event as it was: `previous_attributes` laid over it"),
        ("stripe_billing_status(subscription)", "the billing vocabulary's status of a Stripe subscription (`trialing`, `active`, `past_due`, `paused`, `cancelling`, `churned` …)"),
        ("stripe_is_paying(subscription)", "whether a Stripe subscription is paying now"),
        ("paddle_mrr(subscription, discount…)", "a Paddle Billing subscription's MRR, less its discount when a `discount.*` event described it"),
        ("paddle_mrr_basis(subscription, discount…)", "`net`, `list_price` or `unknown`, as for Stripe"),
        ("paddle_list_mrr(subscription)", "the MRR before discounts"),
        ("paddle_billing_status(subscription)", "the billing vocabulary's status of a Paddle subscription"),
        ("paddle_is_paying(subscription)", "whether a Paddle subscription is paying now"),
        ("clerk_mrr(item)", "a Clerk Billing subscription item's MRR"),
        ("clerk_mrr_basis(item)", "`net` or `unknown`, as for Stripe"),
    ]

    /// README's function table, rendered from `reference`.
    static var referenceTable: String {
        (["| function | gives |", "|---|---|"] + reference.map { "| `\($0.call)` | \($0.gives) |" }).joined(separator: "\n")
    }

    static func call(_ name: String, _ args: [JSONValue?]) -> JSONValue? {
        switch name {
        case "coalesce":
            return args.first { value in
                guard let value else { return false }
                switch value {
                case .null: return false
                case .string(let s): return !s.trimmingSpaces.isEmpty
                default: return true
                }
            } ?? nil
        case "clerk_mrr", "clerk_mrr_basis":
            guard let item = args.first ?? nil else { return nil }
            do {
                let detail = try MRR.clerkDetail(item)
                return name.hasSuffix("_basis") ? .string(detail.basis.rawValue) : try detail.json(detail.mrr)
            } catch {
                return name.hasSuffix("_basis") ? .string(MRRBasis.unknown.rawValue) : nil
            }
        case "stripe_mrr_pending":
            // What the revenue model keeps to finish the MRR once customer.discount events describe the discounts
            // the subscription names by id only (nil when none is pending).
            guard let subscription = args.first ?? nil else { return nil }
            let known = args.dropFirst().compactMap { $0 }.filter { if case .object = $0 { true } else { false } }
            return (try? MRR.stripeDetail(subscription, known: known))?.pending
        case "stripe_mrr", "stripe_mrr_basis", "stripe_list_mrr", "paddle_mrr", "paddle_mrr_basis", "paddle_list_mrr":
            // (subscription, remembered discounts…): what the provider's discount events said about discounts
            // the subscription names by id only.
            guard let subscription = args.first ?? nil else { return nil }
            let known = args.dropFirst().compactMap { $0 }.filter { if case .object = $0 { true } else { false } }
            do {
                let detail = name.hasPrefix("stripe") ? try MRR.stripeDetail(subscription, known: known) : try MRR.paddleDetail(subscription, known: known)
                if name.hasSuffix("_basis") { return .string(detail.basis.rawValue) }
                return try detail.json(name.hasSuffix("_list_mrr") ? detail.list : detail.mrr)
            } catch {
                return name.hasSuffix("_basis") ? .string(MRRBasis.unknown.rawValue) : nil
            }
        case "billing_interval":
            // billing_interval(interval, count): quarterly is `quarter`, not `month`.
            return MRR.intervalLabel(args.first??.stringValue, count: args.count > 1 ? args[1].flatMap(MRR.decimal) : nil).map { .string($0) }
        case "stripe_previous":
            // `data` of a Stripe `*.updated` event: the object as it was, its `previous_attributes` laid over it.
            guard let data = args.first ?? nil, let object = data["object"] else { return nil }
            guard let previous = data["previous_attributes"], case .object = previous else { return object }
            return Self.overlay(previous, on: object)
        case "stripe_billing_status":
            return (args.first ?? nil).flatMap(BillingStatus.stripe).map { .string($0.rawValue) }
        case "stripe_is_paying":
            return (args.first ?? nil).map { .bool(BillingStatus.stripeIsPaying($0)) }
        case "paddle_billing_status":
            return (args.first ?? nil).flatMap(BillingStatus.paddle).map { .string($0.rawValue) }
        case "paddle_is_paying":
            return (args.first ?? nil).map { .bool(BillingStatus.paddleIsPaying($0)) }
        case "paying":
            // paying(billing_status, mrr): an active subscription (or one whose cancellation is only scheduled)
            // with MRR above zero; never a trial. Missing MRR is no evidence: false.
            guard args.count == 2, let status = args[0]?.stringValue else { return nil }
            let mrr = args[1].flatMap(MRR.decimal) ?? 0
            return .bool((status == BillingStatus.active.rawValue || status == BillingStatus.cancelling.rawValue) && mrr > 0)
        case "minus":
            guard args.count == 2, let a = args[0].flatMap(MRR.decimal), let b = args[1].flatMap(MRR.decimal) else { return nil }
            let text = NSDecimalNumber(decimal: a - b).stringValue
            if let whole = Int64(text) { return .int(whole) }
            return Double(text).flatMap { $0.isFinite ? .double($0) : nil }
        case "concat":
            // concat(a, b, …): the texts joined; missing when any part is (an id built from parts is whole or none).
            var out = ""
            for arg in args {
                guard let text = arg?.textValue, !text.isEmpty else { return nil }
                out += text
            }
            return .string(out)
        default:
            return nil
        }
    }
}

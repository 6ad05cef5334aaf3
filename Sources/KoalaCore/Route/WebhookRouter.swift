import Foundation

/// Turns a verified webhook into Koala messages using one source's rules. Pure: same input, same output.
package struct WebhookRouter: Sendable {
    let source: SourceDefinition

    package init(source: SourceDefinition) {
        self.source = source
    }

    /// Why a route did or did not take a webhook.
    package struct RouteResult: Sendable {
        /// The route's name.
        package let route: String
        /// Whether it matched.
        package let matched: Bool
        /// Why it matched or did not, for `simulate`.
        package let reason: String
        /// What it produced.
        package let messages: [KoalaMessage]
    }

    /// Everything one webhook produces: messages, identities to remember, and why each route did or did not match.
    package struct Routing: Sendable {
        /// Every message the webhook produces.
        package let messages: [KoalaMessage]
        /// Identities the webhook's routes remember.
        package let remembers: [Remembered]
        /// One result per route, in file order.
        package let results: [RouteResult]
    }

    /// The messages the webhook produces, with what earlier webhooks remembered (`memory`).
    package func route(_ webhook: VerifiedWebhook, memory: [MemoryKey: Remembered] = [:]) -> [KoalaMessage] {
        routing(webhook, memory: memory).messages
    }

    /// The same, with remembered identities alone (no state).
    package func route(_ webhook: VerifiedWebhook, memory: [MemoryKey: KoalaIdentity]) -> [KoalaMessage] {
        routing(webhook, memory: Self.entries(memory)).messages
    }

    /// Each route's verdict on the webhook (matched, or why not) with what it produced: for `simulate` and `check`.
    package func explain(_ webhook: VerifiedWebhook, memory: [MemoryKey: Remembered] = [:]) -> [RouteResult] {
        routing(webhook, memory: memory).results
    }

    /// Remembered identities as memory entries (for callers that know identities only).
    package static func entries(_ identities: [MemoryKey: KoalaIdentity]) -> [MemoryKey: Remembered] {
        identities.reduce(into: [:]) { $0[$1.key] = Remembered(key: $1.key, identity: $1.value) }
    }

    /// For the routes that match: each property or trait left out because the MRR of a subscription cannot be
    /// told from the payload, and why (`simulate` prints these).
    package func mrrNotes(_ webhook: VerifiedWebhook, memory: [MemoryKey: Remembered] = [:]) -> [String] {
        let routing = routing(webhook, memory: memory)
        let context = EvaluationContext(body: webhook.json, headers: webhook.headers, webhook: webhook.fields)
        var notes: [String] = []
        for route in source.routes where routing.results.contains(where: { $0.route == route.name && $0.matched }) {
            let outputs: [(String, FieldList)] = [("track.properties", route.track?.properties ?? []),
                                                  ("identify.traits", route.identify?.traits ?? []),
                                                  ("account.traits", route.account?.traits ?? []),
                                                  ("billing", route.billing?.fields.filter { $0.name == "mrr" } ?? [])]
            for (place, fields) in outputs {
                for field in fields {
                    for reason in MRR.unknownReasons(in: field.value, context) {
                        notes.append("\(route.name): \(place).\(field.name) left out: \(reason)")
                    }
                }
            }
        }
        return notes
    }

    /// The memory entries the routes matching this webhook's type would recall, and the state they would
    /// remember (its time decides whether this webhook is out of order).
    package func recallKeys(_ webhook: VerifiedWebhook) -> [MemoryKey] {
        let context = EvaluationContext(body: webhook.json, headers: webhook.headers, webhook: webhook.fields)
        var keys: [MemoryKey] = []
        for route in source.routes where route.takes(type: webhook.eventType) {
            for recall in route.memoryLookups {
                if let key = recall.key.evaluate(in: context)?.textValue, let memoryKey = MemoryKey(namespace: recall.namespace, payloadKey: key),
                   !keys.contains(memoryKey) {
                    keys.append(memoryKey)
                }
            }
            if let ledger = ledgerKey(route, context), !keys.contains(ledger) { keys.append(ledger) }
        }
        return keys
    }

    /// The revenue model's ledger a billing route reads and writes: its billing customer's.
    func ledgerKey(_ route: Route, _ context: EvaluationContext) -> MemoryKey? {
        guard let customer = route.billing?.expression("customer")?.evaluate(in: context)?.textValue else { return nil }
        return MemoryKey(namespace: BillingSpec.ledgerNamespace, payloadKey: customer)
    }

    /// The state memory keys this webhook's routes would remember: ingest serialises webhooks that share one,
    /// so each compares against the state the one before it left.
    package func stateKeys(_ webhook: VerifiedWebhook) -> [MemoryKey] {
        let context = EvaluationContext(body: webhook.json, headers: webhook.headers, webhook: webhook.fields)
        var keys: [MemoryKey] = []
        for route in source.routes where route.takes(type: webhook.eventType) {
            for spec in route.stateRemembers {
                if let key = spec.key.evaluate(in: context)?.textValue, let memoryKey = MemoryKey(namespace: spec.name, payloadKey: key),
                   !keys.contains(memoryKey) {
                    keys.append(memoryKey)
                }
            }
            if let ledger = ledgerKey(route, context), !keys.contains(ledger) { keys.append(ledger) }
        }
        return keys
    }

    /// How the reason of a route skipped as out of order begins.
    package static let outOfOrderPrefix = "out of order:"

    /// Why this route must not act on this webhook: a state it reads or remembers was remembered from a
    /// later event (webhooks arrive out of order), so its comparison and its traits would be stale.
    private func outOfOrder(_ route: Route, _ webhook: VerifiedWebhook, _ context: EvaluationContext, _ memory: [MemoryKey: Remembered]) -> String? {
        for entry in route.memoryReads {
            guard let key = entry.key.evaluate(in: context)?.textValue, let memoryKey = MemoryKey(namespace: entry.namespace, payloadKey: key),
                  let at = memory[memoryKey]?.stateAt, at > webhook.eventTime else { continue }
            return "\(Self.outOfOrderPrefix) \(memoryKey.namespace) '\(LogText.escaped(memoryKey.key))' was remembered as of \(Timestamps.iso(at)), "
                + "after this webhook's time \(Timestamps.iso(webhook.eventTime)); nothing is sent and the state is kept"
        }
        return nil
    }

    /// The same, with remembered identities alone (no state).
    package func routing(_ webhook: VerifiedWebhook, memory: [MemoryKey: KoalaIdentity]) -> Routing {
        routing(webhook, memory: Self.entries(memory))
    }

    /// Routes in file order; what one route remembers is visible to the routes after it. A route that reads
    /// or remembers a state remembered from a later event is skipped (out of order).
    /// `explaining`: say why each route did not match (simulate, tests, replay). Ingest passes false: a
    /// route of another type is then left out of `results`, and a condition is only evaluated, which spares
    /// building a sentence for every route that does not match every webhook.
    package func routing(_ webhook: VerifiedWebhook, memory recalled: [MemoryKey: Remembered] = [:],
                        destinations: [Destination] = [.koala], explaining: Bool = true) -> Routing {
        // Company domains are judged with this source's free-mail list (bound only when it is not the shipped one,
        // which is what `current` is otherwise: no binding on the common path).
        guard source.freeMail != FreeMailDomains.current else {
            return routingWithList(webhook, memory: recalled, destinations: destinations, explaining: explaining)
        }
        return FreeMailDomains.$current.withValue(source.freeMail) {
            routingWithList(webhook, memory: recalled, destinations: destinations, explaining: explaining)
        }
    }

    private func routingWithList(_ webhook: VerifiedWebhook, memory recalled: [MemoryKey: Remembered],
                                 destinations: [Destination], explaining: Bool) -> Routing {
        var memory = recalled
        var base = EvaluationContext(
            body: webhook.json,
            headers: webhook.headers,
            webhook: webhook.fields,
            memory: memory.mapValues(\.value)
        )
        var results: [RouteResult] = []
        var remembers: [Remembered] = []
        for route in source.routes {
            guard route.takes(type: webhook.eventType) else {
                if explaining {
                    results.append(RouteResult(route: route.name, matched: false,
                                               reason: "type '\(webhook.eventType)' is not \(route.types.map(\.pattern).joined(separator: " or "))",
                                               messages: []))
                }
                continue
            }
            if let stale = outOfOrder(route, webhook, base, memory) {
                results.append(RouteResult(route: route.name, matched: false, reason: stale, messages: []))
                continue
            }
            if let condition = route.condition {
                if !explaining {
                    guard condition.evaluate(in: base) else {
                        results.append(RouteResult(route: route.name, matched: false, reason: "the condition is false", messages: []))
                        continue
                    }
                } else if let failure = condition.explain(in: base) {
                    results.append(RouteResult(route: route.name, matched: false, reason: failure, messages: []))
                    continue
                }
            }
            let routed = self.messages(for: route, webhook: webhook, context: base, memory: memory)
            if let skipped = routed.skipped {
                results.append(RouteResult(route: route.name, matched: false, reason: skipped, messages: []))
                continue
            }
            var messages = routed.messages
            let remembered = routed.remembers
            // Every configured destination, or those of them the route (and the output) names.
            let targets = route.destinations.map { only in destinations.filter(only.contains) } ?? destinations
            var unconfigured: [String] = []
            for index in messages.indices {
                let output = messages[index].output
                messages[index].destinations = route.outputDestinations[output].map { only in targets.filter(only.contains) } ?? targets
                if messages[index].destinations.isEmpty {
                    let named = (route.outputDestinations[output] ?? route.destinations ?? []).map(\.rawValue).joined(separator: ", ")
                    unconfigured.append("\(output.rawValue) sends only to \(named)")
                }
            }
            // A Segment-compatible group call needs the user who belongs to the group: account traits that name no
            // person go to Koala alone (never as an invented anonymous user).
            for index in messages.indices where messages[index].output == .account && !messages[index].identity.namesPerson {
                if messages[index].destinations.contains(where: { $0 != .koala }) {
                    messages[index].destinations.removeAll { $0 != .koala }
                    if messages[index].destinations.isEmpty { unconfigured.append("account names no person, and a group call needs one") }
                }
            }
            let wasEmpty = messages.isEmpty
            messages.removeAll { $0.destinations.isEmpty }
            if messages.isEmpty && !wasEmpty {
                results.append(RouteResult(route: route.name, matched: true,
                                           reason: "matched, but \(unconfigured.joined(separator: "; ")), not configured here; nothing is sent",
                                           messages: []))
                for entry in remembered {
                    let merged = memory[entry.key].map { $0.updated(by: entry) } ?? entry
                    memory[entry.key] = merged
                    base.memory[entry.key] = merged.value
                    remembers.append(entry)
                }
                continue
            }
            for entry in remembered {
                let merged = memory[entry.key].map { $0.updated(by: entry) } ?? entry
                memory[entry.key] = merged
                base.memory[entry.key] = merged.value
                remembers.append(entry)
            }
            results.append(RouteResult(route: route.name, matched: true,
                                       reason: route.condition == nil ? "type '\(webhook.eventType)' matched" : "type '\(webhook.eventType)' and the condition matched",
                                       messages: messages))
        }
        return Routing(messages: results.flatMap(\.messages), remembers: remembers, results: results)
    }

    /// The first `recall` among `expressions` whose key is present but not (yet) in memory.
    private func missedRecall(_ expressions: [Expression?], _ context: EvaluationContext) -> MemoryKey? {
        for expression in expressions.compactMap({ $0 }) {
            for recall in expression.recalls {
                guard let key = recall.key.evaluate(in: context)?.textValue,
                      let memoryKey = MemoryKey(namespace: recall.namespace, payloadKey: key) else { continue }
                if context.memory[memoryKey] == nil { return memoryKey }
            }
        }
        return nil
    }

    /// What one matching route produces; `skipped` says why it produced nothing after all (out of order).
    struct RouteOutput {
        var messages: [KoalaMessage] = []
        var remembers: [Remembered] = []
        var skipped: String?
    }

    private func messages(for route: Route, webhook: VerifiedWebhook, context base: EvaluationContext,
                          memory: [MemoryKey: Remembered]) -> RouteOutput {
        var context = base
        let sentAt = JSONValue.string(Timestamps.iso(webhook.eventTime))
        var out: [KoalaMessage] = []

        var personIdentity = KoalaIdentity()
        var personProblem: String?
        var personWaits: MemoryKey?
        var personDropped: [KoalaMessage.DroppedField] = []
        if let person = route.person {
            var problems: [KoalaMessage.DroppedField] = []
            var empty: [String] = []
            /// Reads one identity field: its normal form, or a reason naming the expression and what it read.
            func read(_ field: String, _ expression: Expression?, normalize: (JSONValue) -> String?, why: (JSONValue) -> String) -> String? {
                guard let expression else { return nil }
                let raw = expression.evaluate(in: context)
                guard let raw, !Filters.isEmpty(raw) else {
                    empty.append(IdentityDiagnosis.empty(field, expression, raw))
                    return nil
                }
                if let value = normalize(raw) { return value }
                problems.append(.init(field: field, reason: IdentityDiagnosis.reason(expression, raw, why(raw))))
                return nil
            }
            // A number or boolean is never an identity, even though it has a text form.
            func text(_ raw: JSONValue) -> String? { if case .string(let s) = raw { s } else { nil } }
            personIdentity.email = read("person.email", person.email, normalize: { text($0).flatMap(Identity.normalizeEmail) },
                                        why: IdentityDiagnosis.emailProblem)
            personIdentity.profileID = read("person.profile_id", person.profileID, normalize: { text($0).flatMap(Identity.normalizeProfileID) },
                                            why: { _ in "not a UUID (Koala profile ids are the ko_id cookie's UUID)" })
            personIdentity.userID = read("person.user_id", person.userID,
                                         normalize: { raw in raw.textValue.flatMap { Identity.isUsableKey($0) ? $0 : nil } },
                                         why: { _ in "not usable: it holds a control character or is over \(SourceDefinition.maxIdentifierBytes) bytes" })
            if personIdentity.email == nil && personIdentity.profileID == nil {
                if problems.isEmpty, let missed = missedRecall([person.email, person.profileID], context) {
                    personWaits = missed
                } else {
                    personProblem = problems.first.map { "\($0.field) \($0.reason)" }
                        ?? IdentityDiagnosis.missingPrefix + empty.joined(separator: " and ") + " in this webhook"
                }
            } else {
                // The person is known by the usable field: sent by it, the unusable one is left out and said.
                personDropped = problems
            }
            var personValue: [String: JSONValue] = [:]
            if let email = personIdentity.email { personValue["email"] = .string(email) }
            if let id = personIdentity.profileID { personValue["profile_id"] = .string(id) }
            if let id = personIdentity.userID { personValue["user_id"] = .string(id) }
            context.person = .object(personValue)
        }

        /// `wait` wins over `problem`: a message whose identity may still arrive is not dead yet.
        func message(_ output: KoalaMessage.Output, endpoint: KoalaEndpoint, kind: KoalaMessage.Kind, identity: KoalaIdentity,
                     fields: [String: JSONValue], problem: String?, waits: MemoryKey? = nil, at: Date? = nil) -> KoalaMessage {
            let id = MessageID.derive(source: source.name, webhookID: webhook.webhookID, route: route.name, output: output)
            var item = fields
            item["message_id"] = .string(id)
            item["type"] = .string(kind.rawValue)
            item["sent_at"] = at.map { .string(Timestamps.iso($0)) } ?? sentAt
            let disposition: KoalaMessage.Disposition = waits.map { .wait(for: $0) } ?? problem.map { .dead(reason: $0) } ?? .send
            return KoalaMessage(messageID: id, source: source.name, webhookID: webhook.webhookID, route: route.name,
                                output: output, endpoint: endpoint, kind: kind, identity: identity,
                                item: .object(item), eventTime: at ?? webhook.eventTime, disposition: disposition)
        }

        // The revenue model: the subscription's state joins its billing customer's ledger (README, Revenue semantics).
        var billed: (key: MemoryKey, customer: String, ledger: RevenueLedger, stateAt: Date, subscription: String?,
                     movement: (previous: Decimal, mrr: Decimal, movement: MRRMovement)?)?
        var billingProblem: String?
        if let billing = route.billing, billing.describesDiscount {
            // A discount described: subscriptions of this customer waiting for it get their MRR after it.
            guard let (customer, id, discount) = billing.discount(in: context, eventTime: webhook.eventTime),
                  let key = MemoryKey(namespace: BillingSpec.ledgerNamespace, payloadKey: customer) else {
                return RouteOutput(skipped: "billing: the discount has no usable customer, id, or amount in this webhook; nothing is sent")
            }
            let stored = memory[key]
            var ledger = RevenueLedger(state: stored?.state)
            ledger.learn(id, discount)
            let affected = ledger.subscriptions.values.filter { $0.pending?.ids.contains(id) == true }.map(\.id).sorted().first
            if affected == nil {
                // No subscription waits for it: the ledger remembers it, and nothing is sent.
                return RouteOutput(messages: [], remembers: [Remembered(key: key, identity: KoalaIdentity(), state: ledger.state,
                                                                        stateAt: max(stored?.stateAt ?? webhook.eventTime, webhook.eventTime))])
            }
            let movement = ledger.move()
            billed = (key, customer, ledger, max(stored?.stateAt ?? webhook.eventTime, webhook.eventTime), affected, movement)
        } else if let billing = route.billing {
            switch billing.snapshot(in: context, eventTime: webhook.eventTime) {
            case .failure(let problem):
                billingProblem = problem.text
            case .success(let (customer, snapshot)):
                guard let key = MemoryKey(namespace: BillingSpec.ledgerNamespace, payloadKey: customer) else {
                    billingProblem = "billing.customer is not a usable id"
                    break
                }
                let stored = memory[key]
                var ledger = RevenueLedger(state: stored?.state)
                let firstSeen = ledger.subscriptions[snapshot.id] == nil
                // Only a snapshot compares the account's state before and after (no work for every webhook).
                let before = webhook.isSnapshot ? ledger.account.traits : nil
                if case .stale(let applied) = ledger.apply(snapshot) {
                    return RouteOutput(skipped: "\(Self.outOfOrderPrefix) subscription '\(LogText.escaped(snapshot.id))' is known as of version "
                        + "\(RevenueLedger.versionText(applied)), after this webhook's \(RevenueLedger.versionText(snapshot.version)); its state is kept and nothing is sent")
                }
                let created = billing.newWhen?.evaluate(in: context) ?? false
                let movement = ledger.move(baseline: firstSeen && !created)
                let stateAt = max(stored?.stateAt ?? webhook.eventTime, webhook.eventTime)
                // A snapshot (backfill, reconcile) sets state and tells no moment: when the customer's state it
                // leads to is the one known, there is nothing to correct and nothing is sent.
                if let before, movement == nil, ledger.account.traits == before {
                    return RouteOutput(messages: [], remembers: [Remembered(key: key, identity: KoalaIdentity(), state: ledger.state, stateAt: stateAt)])
                }
                billed = (key, customer, ledger, stateAt, snapshot.id, movement)
            }
        }

        if let track = route.track {
            let name = track.event.evaluate(in: context)?.textValue ?? ""
            let problem = personProblem ?? (name.isEmpty && personWaits == nil ? "track.event evaluated to nothing" : nil)
            var tracked = message(.track, endpoint: .person, kind: .track, identity: personIdentity,
                                  fields: ["event": .string(name), "properties": .object(evaluate(track.properties, context))],
                                  problem: problem, waits: personWaits)
            tracked.droppedFields = personDropped
            out.append(tracked)
        }
        if let identify = route.identify {
            var identified = message(.identify, endpoint: .person, kind: .identify, identity: personIdentity,
                                     fields: ["traits": .object(evaluate(identify.traits, context))], problem: personProblem, waits: personWaits)
            identified.droppedFields = personDropped
            out.append(identified)
        }
        if let account = route.account {
            // The person the traits came with (when the route names one): Segment-compatible destinations send
            // account traits as a group call of that user; Koala's request names the account alone.
            var identity = personProblem == nil && personWaits == nil
                ? KoalaIdentity(email: personIdentity.email, profileID: personIdentity.profileID, userID: personIdentity.userID)
                : KoalaIdentity()
            if let raw = account.domain?.evaluate(in: context), case .string(let text) = raw {
                identity.domain = Identity.companyDomain(from: text)
            }
            var accountDropped: KoalaMessage.DroppedField?
            if let raw = account.accountID?.evaluate(in: context)?.textValue, !raw.isEmpty {
                if Identity.isUsableKey(raw) {
                    identity.accountID = raw
                } else {
                    accountDropped = .init(field: "account.account_id",
                                           reason: "is not usable: it holds a control character or is over \(SourceDefinition.maxIdentifierBytes) bytes")
                }
            }
            var traits = evaluate(account.traits, context)
            if let group = account.groupID?.evaluate(in: context), !Filters.isEmpty(group) {
                traits["group_id"] = Self.idText(group)
            }
            if let billed {
                // The billing customer's state, from all of its subscriptions; the customer is the group.
                traits.merge(billed.ledger.account.traits) { _, model in model }
                if traits["group_id"] == nil { traits["group_id"] = .string(billed.customer) }
            }
            var problem: String? = billingProblem
            var waits: MemoryKey?
            if problem == nil, identity.domain == nil && identity.accountID == nil {
                waits = personWaits ?? missedRecall([account.domain, account.accountID], context)
                if waits == nil {
                    problem = accountDropped.map { "\($0.field) \($0.reason)" } ?? Self.missingAccount(account, context: context, personProblem: personProblem)
                }
            }
            // A billing route's account state is as of the ledger's latest event: a late webhook's message, which
            // carries the whole state, is sent after (never before) the messages of the events it came after.
            var accountMessage = message(.account, endpoint: .account, kind: .identify, identity: identity,
                                         fields: ["traits": .object(traits)], problem: problem, waits: waits, at: billed?.stateAt)
            if problem == nil, waits == nil, let accountDropped { accountMessage.droppedFields = [accountDropped] }
            out.append(accountMessage)
        }
        if let billed, let movement = billed.movement {
            var properties: [String: JSONValue] = [
                "previous_mrr": RevenueLedger.json(movement.previous), "mrr": RevenueLedger.json(movement.mrr),
                "mrr_delta": RevenueLedger.json(movement.mrr - movement.previous), "mrr_movement": .string(movement.movement.rawValue),
                "mrr_basis": .string(billed.ledger.account.basis.rawValue), "billing_customer_id": .string(billed.customer),
            ]
            if let subscription = billed.subscription { properties["subscription_id"] = .string(subscription) }
            if let currency = billed.ledger.currency ?? billed.ledger.account.currency { properties["currency"] = .string(currency) }
            if let provider = route.billing?.expression("provider")?.evaluate(in: context)?.textValue { properties["billing_provider"] = .string(provider) }
            var moved = message(.track, endpoint: .person, kind: .track, identity: personIdentity,
                                fields: ["event": .string(RevenueLedger.movementEvent), "properties": .object(properties)],
                                problem: personProblem, waits: personWaits)
            moved.droppedFields = personDropped
            out.append(moved)
        }

        var remembered: [Remembered] = []
        if !route.remember.isEmpty {
            var identity = personIdentity
            identity.userID = nil           // memory keeps what Koala matches: email, profile id, domain
            identity.domain = out.first(where: { $0.endpoint == .account && $0.problem == nil && $0.waitingFor == nil })?.identity.domain
                ?? personIdentity.email.flatMap { Identity.companyDomain(ofEmail: $0) }
            let hasIdentity = identity.email != nil || identity.profileID != nil || identity.domain != nil
            for spec in route.remember {
                guard let key = spec.key.evaluate(in: context)?.textValue,
                      let memoryKey = MemoryKey(namespace: spec.name, payloadKey: key) else { continue }
                if spec.values.isEmpty {
                    if hasIdentity { remembered.append(Remembered(key: memoryKey, identity: identity)) }
                } else {
                    remembered.append(Remembered(key: memoryKey, identity: hasIdentity ? identity : KoalaIdentity(),
                                                 state: evaluate(spec.values, context).filter { $0.value != .null }, stateAt: webhook.eventTime))
                }
            }
        }
        if let billed {
            remembered.append(Remembered(key: billed.key, identity: KoalaIdentity(), state: billed.ledger.state, stateAt: billed.stateAt))
        }
        return RouteOutput(messages: out, remembers: remembered)
    }

    /// Why an account message has no identity: what its domain read (and, when that is the person's email,
    /// why the person has none), and that no `account_id` was read.
    static func missingAccount(_ account: AccountOutput, context: EvaluationContext, personProblem: String?) -> String {
        var parts: [String] = []
        if let domain = account.domain {
            parts.append(IdentityDiagnosis.accountDomain(domain, in: context, personProblem: personProblem))
        }
        if let accountID = account.accountID {
            parts.append(IdentityDiagnosis.empty("account.account_id", accountID, accountID.evaluate(in: context)))
        }
        return IdentityDiagnosis.missingPrefix + (parts.isEmpty ? "the account has no domain or account_id" : parts.joined(separator: "; "))
    }

    /// Properties or traits: a value that is missing, `null`, blank or out of range is left out (so it never
    /// overwrites a good trait in Koala), also inside objects and arrays. Only a `null` written in the rule
    /// itself is sent, to clear a trait on purpose.
    private func evaluate(_ fields: FieldList, _ context: EvaluationContext) -> [String: JSONValue] {
        var out: [String: JSONValue] = [:]
        for field in fields {
            if case .literal(.null) = field.value {
                out[field.name] = .null
                continue
            }
            guard let value = field.value.evaluate(in: context).flatMap(Self.present) else { continue }
            out[field.name] = Self.isIdentifier(field.name) ? Self.idText(value) : value
        }
        return out
    }

    /// Whether a property or trait names an id (`id`, `group_id`, `subscription_id`, …): sent as text whatever
    /// the payload said, so one id has one type in Koala whichever event carried it (README, Outputs).
    static func isIdentifier(_ name: String) -> Bool { name == "id" || name.hasSuffix("_id") }

    /// A number as the id text it is (`7001` → `"7001"`); other values unchanged.
    static func idText(_ value: JSONValue) -> JSONValue {
        switch value {
        case .int, .double: value.textValue.map { .string($0) } ?? value
        default: value
        }
    }

    /// The value with every missing part removed; nil when nothing is left.
    /// (`.none`, not `nil`: JSONValue is `ExpressibleByNilLiteral`, so a bare `nil` here would be `.null`.)
    static func present(_ value: JSONValue) -> JSONValue? {
        switch value {
        case .null: return .none
        case .string(let text): return text.allSatisfy(\.isWhitespace) ? .none : .some(value)
        // A number out of a Double's range (`1e999`) is no value.
        case .double(let number): return number.isFinite ? .some(value) : .none
        case .object(let members):
            let kept = members.compactMapValues(present)
            return kept.isEmpty ? .none : .some(.object(kept))
        case .array(let elements):
            let kept = elements.compactMap(present)
            return kept.isEmpty ? .none : .some(.array(kept))
        case .bool, .int: return .some(value)
        }
    }
}

import Foundation

/// Turns a verified webhook into Koala messages using one source's rules. Pure: same input, same output.
public struct WebhookRouter: Sendable {
    public let source: SourceDefinition

    public init(source: SourceDefinition) {
        self.source = source
    }

    /// Why a route did or did not take a webhook.
    public struct RouteResult: Sendable {
        public let route: String
        public let matched: Bool
        public let reason: String
        public let messages: [KoalaMessage]
    }

    public func route(_ webhook: VerifiedWebhook) -> [KoalaMessage] {
        explain(webhook).flatMap(\.messages)
    }

    public func explain(_ webhook: VerifiedWebhook) -> [RouteResult] {
        let base = EvaluationContext(
            body: webhook.json,
            headers: webhook.headers,
            webhook: Self.webhookValue(webhook)
        )
        return source.routes.map { route in
            guard route.types.isEmpty || route.types.contains(where: { $0.matches(webhook.eventType) }) else {
                return RouteResult(route: route.name, matched: false,
                                   reason: "type '\(webhook.eventType)' is not \(route.types.map(\.pattern).joined(separator: " or "))",
                                   messages: [])
            }
            if let condition = route.condition, let failure = condition.explain(in: base) {
                return RouteResult(route: route.name, matched: false, reason: failure, messages: [])
            }
            return RouteResult(route: route.name, matched: true,
                               reason: route.condition == nil ? "type '\(webhook.eventType)' matched" : "type '\(webhook.eventType)' and the condition matched",
                               messages: messages(for: route, webhook: webhook, context: base))
        }
    }

    static func webhookValue(_ webhook: VerifiedWebhook) -> JSONValue {
        .object([
            "id": .string(webhook.webhookID),
            "type": .string(webhook.eventType),
            "time": .string(Timestamps.iso(webhook.eventTime)),
            "source": .string(webhook.source),
            "received_at": .string(Timestamps.iso(webhook.receivedAt)),
            "body_sha256": .string(Hex.encode(Crypto.digest(.sha256, webhook.body))),
        ])
    }

    private func messages(for route: Route, webhook: VerifiedWebhook, context base: EvaluationContext) -> [KoalaMessage] {
        var context = base
        let sentAt = JSONValue.string(Timestamps.iso(webhook.eventTime))
        var out: [KoalaMessage] = []

        var personIdentity = KoalaIdentity()
        var personProblem: String?
        if let person = route.person {
            var problems: [String] = []
            if let expression = person.email, let raw = expression.evaluate(in: context), !Filters.isEmpty(raw) {
                if let text = raw.textValue, let email = Identity.normalizeEmail(text) {
                    personIdentity.email = email
                } else {
                    problems.append("person.email is not a valid email address")
                }
            }
            if let expression = person.profileID, let raw = expression.evaluate(in: context), !Filters.isEmpty(raw) {
                if let text = raw.textValue, let id = Identity.normalizeProfileID(text) {
                    personIdentity.profileID = id
                } else {
                    problems.append("person.profile_id is not a UUID")
                }
            }
            if personIdentity.email == nil && personIdentity.profileID == nil {
                personProblem = problems.first ?? "identity missing: person has no email or profile_id in this webhook"
            }
            var personValue: [String: JSONValue] = [:]
            if let email = personIdentity.email { personValue["email"] = .string(email) }
            if let id = personIdentity.profileID { personValue["profile_id"] = .string(id) }
            context.person = .object(personValue)
        }

        func message(_ output: String, endpoint: KoalaEndpoint, kind: KoalaMessage.Kind, identity: KoalaIdentity,
                     fields: [String: JSONValue], problem: String?) -> KoalaMessage {
            let id = MessageID.derive(source: source.name, webhookID: webhook.webhookID, route: route.name, output: output)
            var item = fields
            item["message_id"] = .string(id)
            item["type"] = .string(kind.rawValue)
            item["sent_at"] = sentAt
            return KoalaMessage(messageID: id, source: source.name, webhookID: webhook.webhookID, route: route.name,
                                output: output, endpoint: endpoint, kind: kind, identity: identity,
                                item: .object(item), eventTime: webhook.eventTime, problem: problem)
        }

        if let track = route.track {
            let name = track.event.evaluate(in: context)?.textValue ?? ""
            let problem = personProblem ?? (name.isEmpty ? "track.event evaluated to nothing" : nil)
            out.append(message("track", endpoint: .person, kind: .track, identity: personIdentity,
                               fields: ["event": .string(name), "properties": .object(evaluate(track.properties, context))],
                               problem: problem))
        }
        if let identify = route.identify {
            out.append(message("identify", endpoint: .person, kind: .identify, identity: personIdentity,
                               fields: ["traits": .object(evaluate(identify.traits, context))], problem: personProblem))
        }
        if let account = route.account {
            var identity = KoalaIdentity()
            if let raw = account.domain?.evaluate(in: context)?.textValue {
                identity.domain = Identity.companyDomain(from: raw)
            }
            if let raw = account.accountID?.evaluate(in: context)?.textValue, !raw.isEmpty {
                identity.accountID = raw
            }
            var traits = evaluate(account.traits, context)
            if let group = account.groupID?.evaluate(in: context), !Filters.isEmpty(group) {
                traits["group_id"] = group
            }
            let problem = identity.domain == nil && identity.accountID == nil
                ? "identity missing: account has no company domain or account_id in this webhook (free-mail domains are skipped)"
                : nil
            out.append(message("account", endpoint: .account, kind: .identify, identity: identity,
                               fields: ["traits": .object(traits)], problem: problem))
        }
        return out
    }

    private func evaluate(_ fields: FieldList, _ context: EvaluationContext) -> [String: JSONValue] {
        var out: [String: JSONValue] = [:]
        for field in fields {
            if let value = field.value.evaluate(in: context) {
                out[field.name] = value
            }
        }
        return out
    }
}

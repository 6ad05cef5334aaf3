/// Words for why a route could not tell who a message is about, pointing at the cause: the rule's field,
/// the expression it read, and what that read in this webhook (its type and a short escaped excerpt), e.g.
/// `person.email ← body.data.object.amount_total: 129900 (a number), not an email address`.
/// These reasons are shown by `simulate`, stored with dead letters and compared by rule tests.
package enum IdentityDiagnosis {
    /// How every reason for a message with no identity at all begins, so dead letters can be filtered by it.
    static let missingPrefix = "identity missing: "

    /// What a value read from a webhook is, for a reason: `129900 (a number)`, `"ada(at)acme.io" (text)`,
    /// `missing`, `null`, `blank text`, `an object with keys id, email`, `a list of 2 items`.
    package static func excerpt(_ value: JSONValue?) -> String {
        guard let value else { return "missing" }
        switch value {
        case .null: return "null"
        case .string(let text):
            if text.allSatisfy(\.isWhitespace) { return "blank text" }
            return "\"" + LogText.bounded(LogText.escaped(text), limit: 48) + "\" (text)"
        case .int, .double: return (value.textValue ?? "a number") + " (a number)"
        case .bool(let b): return "\(b) (a boolean)"
        case .array(let items): return "a list of \(items.count) item\(items.count == 1 ? "" : "s")"
        case .object(let members):
            let keys = members.keys.sorted().prefix(4).map { LogText.bounded(LogText.escaped($0), limit: 24) }
            return members.isEmpty ? "an empty object" : "an object with keys \(keys.joined(separator: ", "))\(members.count > 4 ? ", …" : "")"
        }
    }

    /// `person.email ← body.x: 129900 (a number), not an email address`.
    static func unusable(_ field: String, _ expression: Expression, _ value: JSONValue?, _ why: String) -> String {
        "\(field) \(reason(expression, value, why))"
    }

    /// `← body.x: 129900 (a number), not an email address`: the part of `unusable` after the field.
    static func reason(_ expression: Expression, _ value: JSONValue?, _ why: String) -> String {
        "← \(expression): \(excerpt(value)), \(why)"
    }

    /// `person.email ← body.x is missing`, or `… is null`, for a field that read nothing.
    static func empty(_ field: String, _ expression: Expression, _ value: JSONValue?) -> String {
        "\(field) ← \(expression) is \(excerpt(value))"
    }

    /// Why text is not an email address, after `Identity.normalizeEmail` refused it.
    static func emailProblem(_ value: JSONValue) -> String {
        guard case .string(let raw) = value else { return "not an email address" }
        let text = raw.trimmingWhitespace
        guard let at = text.lastIndex(of: "@") else { return "not an email address (no '@')" }
        if text.unicodeScalars.contains(where: { LogText.needsEscape($0) }) {
            return "not an email address (it holds a control or invisible formatting character)"
        }
        if text.utf8.count > Identity.maxEmailBytes { return "not an email address (over \(Identity.maxEmailBytes) bytes)" }
        let local = text[..<at], domain = String(text[text.index(after: at)...])
        if Identity.normalizeLocalPart(local) == nil { return "not an email address (the part before '@' is not a plain address)" }
        if Identity.normalizeDomain(domain) == nil { return "not an email address ('\(LogText.bounded(LogText.escaped(domain), limit: 48))' is not a domain)" }
        return "not an email address (over \(Identity.maxEmailBytes) bytes once normalised)"
    }

    /// Why an account's domain is missing: the domain expression read nothing, read a free-mail address,
    /// or read something that is not a domain. `personProblem` is the person's own problem, when the domain
    /// is read from `person.email` and the person has none.
    static func accountDomain(_ expression: Expression, in context: EvaluationContext, personProblem: String?) -> String {
        let base: Expression
        if case .piped(let inner, _) = expression { base = inner } else { base = expression }
        let raw = base.evaluate(in: context)
        guard let raw, !Filters.isEmpty(raw) else {
            if base.reads(root: .person), let personProblem {
                let cause = personProblem.hasPrefix(missingPrefix) ? String(personProblem.dropFirst(missingPrefix.count)) : personProblem
                return "account.domain ← \(expression) is empty, because \(cause)"
            }
            return "account.domain ← \(expression) is empty: \(base) is \(excerpt(raw)) in this webhook"
        }
        guard let text = raw.textValue else { return unusable("account.domain", expression, raw, "not a domain or email address") }
        if text.utf8.contains(UInt8(ascii: "@")) {
            guard let email = Identity.normalizeEmail(text), let at = email.lastIndex(of: "@") else {
                return unusable("account.domain", base, raw, emailProblem(raw))
            }
            let domain = email[email.index(after: at)...]
            return "account.domain ← \(expression) is empty: \(base) is \(excerpt(raw)), at a free-mail domain (\(domain)); Koala accounts are companies"
        }
        guard let domain = Identity.normalizeDomain(text.trimmingWhitespace) else {
            return unusable("account.domain", expression, raw, "not a domain")
        }
        return "account.domain ← \(expression): \(excerpt(raw)) is a free-mail domain (\(domain)); Koala accounts are companies"
    }
}

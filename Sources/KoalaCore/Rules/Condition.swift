import Foundation

/// A test on a webhook, from a route's `when.where`: comparisons, `in` lists, `exists` / `missing`,
/// regular expressions, combined with `and`, `or`, `not` (in text) or `all` / `any` / `not` (in YAML).
package indirect enum Condition: Sendable, CustomStringConvertible {
    /// How a `where` comparison compares its two sides.
    package enum Comparison: String, Sendable {
        case equal = "==", notEqual = "!=", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
    }

    case compare(Expression, Comparison, Expression)
    case member(Expression, [JSONValue], negated: Bool)
    case exists(Expression)
    case missing(Expression)
    case matches(Expression, Pattern)
    case truthy(Expression)
    case all([Condition])
    case any([Condition])
    case not(Condition)

    /// A compiled regular expression with its source text.
    package struct Pattern: @unchecked Sendable {
        let source: String
        let regex: NSRegularExpression

        init?(_ source: String) {
            guard let regex = try? NSRegularExpression(pattern: source) else { return nil }
            self.source = source
            self.regex = regex
        }

        func matches(_ text: String) -> Bool {
            regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) != nil
        }
    }

    package var description: String {
        switch self {
        case .compare(let a, let op, let b): "\(a) \(op.rawValue) \(b)"
        case .member(let a, let list, let negated): "\(a) \(negated ? "not in" : "in") [\(list.map { $0.textValue ?? $0.encoded() }.joined(separator: ", "))]"
        case .exists(let a): "\(a) exists"
        case .missing(let a): "\(a) missing"
        case .matches(let a, let p): "\(a) matches '\(p.source)'"
        case .truthy(let a): a.description
        case .all(let cs): cs.map { "(\($0))" }.joined(separator: " and ")
        case .any(let cs): cs.map { "(\($0))" }.joined(separator: " or ")
        case .not(let c): "not (\(c))"
        }
    }

    /// Every expression the condition reads (so ingest can look up the memory its `recall`s name).
    var expressions: [Expression] {
        switch self {
        case .compare(let a, _, let b): [a, b]
        case .member(let a, _, _), .exists(let a), .missing(let a), .matches(let a, _), .truthy(let a): [a]
        case .all(let cs), .any(let cs): cs.flatMap(\.expressions)
        case .not(let c): c.expressions
        }
    }

    /// Whether the condition holds for this webhook (`explain` says why not). Builds no text: ingest asks
    /// this of every route whose type matches.
    package func evaluate(in context: EvaluationContext) -> Bool {
        switch self {
        case .compare(let a, let op, let b):
            return Self.compare(a.evaluate(in: context), op, b.evaluate(in: context))
        case .member(let a, let list, let negated):
            let x = a.evaluate(in: context)
            return list.contains { Path.looselyEqual(x, $0) } != negated
        case .exists(let a):
            return a.evaluate(in: context).map { $0 != .null } ?? false
        case .missing(let a):
            return a.evaluate(in: context).map { $0 == .null } ?? true
        case .matches(let a, let pattern):
            return a.evaluate(in: context)?.textValue.map(pattern.matches) ?? false
        case .truthy(let a):
            return Self.isTruthy(a.evaluate(in: context))
        case .all(let conditions):
            return conditions.allSatisfy { $0.evaluate(in: context) }
        case .any(let conditions):
            return conditions.contains { $0.evaluate(in: context) }
        case .not(let c):
            return !c.evaluate(in: context)
        }
    }

    /// nil when the condition holds; otherwise the part that failed, with the value it saw.
    package func explain(in context: EvaluationContext) -> String? {
        guard !evaluate(in: context) else { return nil }
        func shown(_ a: Expression) -> String { a.evaluate(in: context).map { $0.encoded() } ?? "missing" }
        switch self {
        case .compare(let a, _, _), .member(let a, _, _), .matches(let a, _):
            return "\(self) is false (\(a) is \(shown(a)))"
        case .exists(let a):
            return "\(a) is missing"
        case .missing(let a):
            return "\(a) is present (\(shown(a)))"
        case .truthy(let a):
            return "\(a) is not true (it is \(shown(a)))"
        case .all(let conditions):
            return conditions.lazy.compactMap { $0.explain(in: context) }.first
        case .any(let conditions):
            return "none of: " + conditions.compactMap { $0.explain(in: context) }.joined(separator: "; ")
        case .not(let c):
            return "not (\(c)) is false"
        }
    }

    static func isTruthy(_ value: JSONValue?) -> Bool {
        switch value {
        case nil, .null?, .bool(false)?: false
        case .string(let s)?: !s.isEmpty
        case .int(let i)?: i != 0
        case .double(let d)?: d != 0
        default: true
        }
    }

    static func compare(_ a: JSONValue?, _ op: Comparison, _ b: JSONValue?) -> Bool {
        switch op {
        case .equal: return Path.looselyEqual(a, b)
        case .notEqual: return !Path.looselyEqual(a, b)
        default: break
        }
        let ordering: Int?
        if case .int(let x)? = a, case .int(let y)? = b {
            ordering = x < y ? -1 : (x == y ? 0 : 1)
        } else if let x = a?.doubleValue, let y = b?.doubleValue {
            ordering = x < y ? -1 : (x == y ? 0 : 1)
        } else if case .string(let x)? = a, case .string(let y)? = b {
            // ISO-8601 timestamps and other text compare lexically.
            ordering = x < y ? -1 : (x == y ? 0 : 1)
        } else {
            ordering = nil
        }
        guard let ordering else { return false }
        switch op {
        case .less: return ordering < 0
        case .lessOrEqual: return ordering <= 0
        case .greater: return ordering > 0
        case .greaterOrEqual: return ordering >= 0
        default: return false
        }
    }
}

extension Condition {
    /// Why the condition holds for every webhook, or for none, whatever the payload says: the part and the values
    /// (`status != verified or status != unverified` is always true). Nil when it depends on the payload.
    package var constantOutcome: String? {
        func text(_ value: JSONValue) -> String { value.textValue ?? value.encoded() }
        switch self {
        case .compare(.literal(let a), let op, .literal(let b)):
            return "'\(self)' compares two fixed values: it is always \(Self.compare(a, op, b)); compare a path of the payload with a value"
        case .any(let conditions):
            var differs: [String: JSONValue] = [:]
            var present = Set<String>(), absent = Set<String>()
            for condition in conditions {
                switch condition {
                case .compare(let a, .notEqual, .literal(let value)), .compare(.literal(let value), .notEqual, let a):
                    let key = a.description
                    if let other = differs[key], other != value {
                        return "'\(key) != \(text(other)) or \(key) != \(text(value))' is always true: whatever \(key) is, it differs from one of them; "
                            + "did you mean 'and' (or '\(key) not in [\(text(other)), \(text(value))]')?"
                    }
                    differs[key] = value
                case .exists(let a): present.insert(a.description)
                case .missing(let a): absent.insert(a.description)
                default: break
                }
            }
            if let both = present.intersection(absent).sorted().first {
                return "'\(both) exists or \(both) missing' is always true"
            }
            return conditions.lazy.compactMap(\.constantOutcome).first
        case .all(let conditions):
            var equals: [String: JSONValue] = [:]
            var differs: [String: JSONValue] = [:]
            var present = Set<String>(), absent = Set<String>()
            for condition in conditions {
                switch condition {
                case .compare(let a, .equal, .literal(let value)), .compare(.literal(let value), .equal, let a):
                    let key = a.description
                    if let other = equals[key], other != value {
                        return "'\(key) == \(text(other)) and \(key) == \(text(value))' is never true: \(key) cannot be both; did you mean 'or' (or '\(key) in [\(text(other)), \(text(value))]')?"
                    }
                    if let other = differs[key], other == value {
                        return "'\(key) == \(text(value)) and \(key) != \(text(value))' is never true"
                    }
                    equals[key] = value
                case .compare(let a, .notEqual, .literal(let value)), .compare(.literal(let value), .notEqual, let a):
                    let key = a.description
                    if let other = equals[key], other == value {
                        return "'\(key) == \(text(value)) and \(key) != \(text(value))' is never true"
                    }
                    differs[key] = value
                case .exists(let a): present.insert(a.description)
                case .missing(let a): absent.insert(a.description)
                default: break
                }
            }
            if let both = present.intersection(absent).sorted().first {
                return "'\(both) exists and \(both) missing' is never true"
            }
            return conditions.lazy.compactMap(\.constantOutcome).first
        case .not(let condition):
            return condition.constantOutcome
        default:
            return nil
        }
    }
}

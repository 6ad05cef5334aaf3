import Foundation
import Yams

/// Reading `when:` conditions.
extension FileParser {
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
}

import Foundation
import Yams

/// Reading value expressions, fields and property lists.
extension FileParser {
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
}

import Foundation
package import Yams

/// YAML helpers: typed reads of nodes with their positions, and YAML errors in the rule author's terms.
extension FileParser {
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

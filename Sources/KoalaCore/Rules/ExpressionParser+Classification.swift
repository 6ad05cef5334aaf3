import Foundation

/// How the loader tells an expression from literal text, and which mistakes it names (a path-shaped root, a
/// misspelt function).
extension ExpressionParser {
    /// Whether a plain YAML string is meant as an expression rather than literal text: it starts with a
    /// path root (`body`, `headers`, `person`, `webhook`) or a function call such as `coalesce(`.
    package static func looksLikeExpression(_ text: String) -> Bool {
        guard let tokens = try? tokenize(text), let first = tokens.first, case .word(let word) = first.kind else {
            return false
        }
        let next = tokens.count > 1 ? tokens[1].kind : .end
        if Path.Root(rawValue: word) != nil {
            return next == .end || next == .punct(".") || next == .punct("[") || next == .punct("|")
        }
        if Functions.names[word] != nil { return next == .punct("(") }
        return false
    }

    /// The first word of text shaped like a path (`bdy.data.object.mode`, `data[0].email`): words joined by
    /// dots or followed by brackets, with no spaces. Such text in a value position is almost always a path
    /// with a mistyped root, so the loader refuses it unless it is marked `!literal`. Text whose dots are
    /// followed by digits (`v1.2`, `1.2.3`) or which contains spaces is not path-shaped.
    package static func pathShapedRoot(_ text: String) -> String? {
        guard !text.contains(" "), !text.contains("\t"), let tokens = try? tokenize(text),
              tokens.count >= 3, case .word(let root) = tokens[0].kind else { return nil }
        var i = 1
        var depth = 0
        var sawAccess = false
        while i < tokens.count {
            switch tokens[i].kind {
            case .end:
                return sawAccess && depth == 0 ? root : nil
            case .punct("."):
                if depth == 0 {
                    // Outside brackets a dot is followed by a word, which the loop steps over here.
                    guard case .word = tokens[i + 1].kind else { return nil }
                    i += 1
                }
                sawAccess = true
            case .punct("["):
                depth += 1
                sawAccess = true
            case .punct("]"):
                guard depth > 0 else { return nil }
                depth -= 1
            case .word, .number, .string:
                guard depth > 0 else { return nil }
            case .punct:
                guard depth > 0 else { return nil }
            }
            i += 1
        }
        return nil
    }

    /// The first word of text shaped like a call of a mistyped function (`coalese(body.a, 'x')`): a word
    /// within a typo of a function name, directly followed by '('.
    package static func misspeltFunction(_ text: String) -> (word: String, function: String)? {
        guard let tokens = try? tokenize(text), tokens.count >= 3, case .word(let word) = tokens[0].kind,
              tokens[1].kind == .punct("("), tokens[1].offset == word.unicodeScalars.count,
              Functions.names[word] == nil, word.count >= 3,
              let function = Suggest.closest(to: word, in: Array(Functions.names.keys)) else { return nil }
        return (word, function)
    }
}

import Foundation

/// Parses the expression text found in rule files. Positions in errors are columns within the text,
/// added to the scalar's own location by the caller. Public for the fuzz harness.
package struct ExpressionParser {
    enum TokenKind: Equatable {
        case word(String)
        case number(String)
        case string(String)
        case punct(String)
        case end
    }

    struct Token {
        let kind: TokenKind
        let offset: Int
    }

    /// Why an expression cannot be parsed, and where in its text.
    package struct Failure: Error {
        let offset: Int
        let message: String
        let hint: String
    }

    let text: String
    private var tokens: [Token] = []
    private var position = 0

    package init(_ text: String) throws(Failure) {
        self.text = text
        self.tokens = try Self.tokenize(text)
    }

    // MARK: Classification

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

    // MARK: Grammar

    /// expression := term ( '|' filter )*
    mutating func parseExpression() throws(Failure) -> Expression {
        let base = try parseTerm()
        var filters: [Filter] = []
        while peek.kind == .punct("|") {
            advance()
            filters.append(try parseFilter())
        }
        return filters.isEmpty ? base : .piped(base, filters)
    }

    /// Parses the whole text as one value expression; anything left over is an error.
    package mutating func parseComplete() throws(Failure) -> Expression {
        let expression = try parseExpression()
        guard peek.kind == .end else {
            throw Failure(offset: peek.offset, message: "unexpected \(describe(peek.kind)) in expression",
                          hint: "write one value, optionally followed by '| filter'")
        }
        return expression
    }

    private mutating func parseTerm() throws(Failure) -> Expression {
        let token = peek
        switch token.kind {
        case .string(let s):
            advance()
            return .literal(.string(s))
        case .number(let n):
            advance()
            if let i = Int64(n) { return .literal(.int(i)) }
            if let d = Double(n) { return .literal(.double(d)) }
            throw Failure(offset: token.offset, message: "invalid number '\(n)'", hint: "write a decimal number")
        case .word(let word):
            advance()
            switch word {
            case "true": return .literal(.bool(true))
            case "false": return .literal(.bool(false))
            case "null": return .literal(.null)
            default: break
            }
            if let root = Path.Root(rawValue: word) {
                return .path(try parsePathComponents(root: root))
            }
            if let arity = Functions.names[word] {
                guard peek.kind == .punct("(") else {
                    throw Failure(offset: peek.offset, message: "function '\(word)' needs arguments",
                                  hint: "write \(word)(value, …)")
                }
                let args = try parseArguments(bareFirst: Expression.memoryFunctions.contains(word))
                guard arity.contains(args.count) else {
                    throw Failure(offset: token.offset, message: "function '\(word)' takes \(describe(arity)) arguments, got \(args.count)",
                                  hint: "check the call")
                }
                if Expression.memoryFunctions.contains(word) {
                    guard case .literal(.string(let namespace)) = args[0], FileParser.isName(namespace) else {
                        throw Failure(offset: token.offset, message: "\(word)'s first argument names a memory",
                                      hint: "write recall(stripe_customer, body.data.object.customer): a name made of lower-case letters, digits, '-' and '_'")
                    }
                }
                let call = Expression.call(word, args)
                let components = try parsePathComponents(root: .body).components
                return components.isEmpty ? call : .access(call, components)
            }
            throw Failure(
                offset: token.offset,
                message: "unknown name '\(word)'",
                hint: "a value starts with one of \(Path.Root.allCases.map(\.rawValue).joined(separator: ", ")), a function (\(Functions.names.keys.sorted().joined(separator: ", "))) or a quoted 'text'"
            )
        default:
            throw Failure(offset: token.offset, message: "expected a value, found \(describe(token.kind))",
                          hint: "write a path such as body.data.object.id, a quoted 'text' or a number")
        }
    }

    private mutating func parsePathComponents(root: Path.Root) throws(Failure) -> Path {
        var components: [Path.Component] = []
        while true {
            if peek.kind == .punct(".") {
                advance()
                switch peek.kind {
                case .word(let key), .number(let key):
                    advance()
                    components.append(.key(key))
                default:
                    throw Failure(offset: peek.offset, message: "expected a field name after '.'",
                                  hint: "write e.g. body.data.object.email")
                }
            } else if peek.kind == .punct("[") {
                advance()
                let inner = peek
                switch inner.kind {
                case .number(let n):
                    guard let index = Int(n) else {
                        throw Failure(offset: inner.offset, message: "array index must be a whole number",
                                      hint: "write e.g. [0] or [-1] for the last item")
                    }
                    advance()
                    components.append(.index(index))
                case .string(let key):
                    advance()
                    components.append(.key(key))
                case .word(let first):
                    // A selection: [field == value] or [field.sub != value]
                    advance()
                    var field = [first]
                    while peek.kind == .punct(".") {
                        advance()
                        guard case .word(let next) = peek.kind else {
                            throw Failure(offset: peek.offset, message: "expected a field name after '.'", hint: "write e.g. [price.id == 'pro']")
                        }
                        field.append(next)
                        advance()
                    }
                    guard peek.kind == .punct("==") || peek.kind == .punct("!=") else {
                        throw Failure(offset: peek.offset, message: "expected '==' or '!=' in the selection",
                                      hint: "select an element with [field == value], e.g. email_addresses[id == body.data.primary_email_address_id]")
                    }
                    let negated = peek.kind == .punct("!=")
                    advance()
                    let value = try parseExpression()
                    components.append(.select(field: field, negated: negated, value: value))
                default:
                    throw Failure(offset: inner.offset, message: "expected an array index, a quoted key or a selection inside [ ]",
                                  hint: "write e.g. items[0], metadata[\"plan name\"] or items[id == body.item_id]")
                }
                guard peek.kind == .punct("]") else {
                    throw Failure(offset: peek.offset, message: "missing ']'", hint: "close the brackets")
                }
                advance()
            } else {
                break
            }
        }
        if root == .headers, let first = components.first, case .index = first {
            throw Failure(offset: 0, message: "headers are looked up by name", hint: "write headers.x-event-name")
        }
        return Path(root: root, components: components)
    }

    private mutating func parseArguments(bareFirst: Bool = false) throws(Failure) -> [Expression] {
        advance()  // (
        var args: [Expression] = []
        if peek.kind == .punct(")") {
            advance()
            return args
        }
        while true {
            if bareFirst, args.isEmpty, case .word(let name) = peek.kind, Path.Root(rawValue: name) == nil {
                advance()
                args.append(.literal(.string(name)))
            } else {
                args.append(try parseExpression())
            }
            if peek.kind == .punct(",") {
                advance()
                continue
            }
            guard peek.kind == .punct(")") else {
                throw Failure(offset: peek.offset, message: "expected ',' or ')'", hint: "close the argument list")
            }
            advance()
            return args
        }
    }

    private mutating func parseFilter() throws(Failure) -> Filter {
        let token = peek
        guard case .word(let name) = token.kind else {
            throw Failure(offset: token.offset, message: "expected a filter name after '|'",
                          hint: "filters: \(Filters.all.keys.sorted().joined(separator: ", "))")
        }
        advance()
        guard let definition = Filters.all[name] else {
            let suggestion = Suggest.closest(to: name, in: Array(Filters.all.keys)).map { "did you mean '\($0)'? " } ?? ""
            throw Failure(offset: token.offset, message: "unknown filter '\(name)'",
                          hint: "\(suggestion)filters: \(Filters.all.keys.sorted().joined(separator: ", "))")
        }
        let args = peek.kind == .punct("(") ? try parseArguments() : []
        guard definition.arity.contains(args.count) else {
            throw Failure(offset: token.offset,
                          message: "filter '\(name)' takes \(describe(definition.arity)) arguments, got \(args.count)",
                          hint: "\(name): \(definition.summary)")
        }
        if name == "map" {
            for argument in args {
                guard case .literal(.string(let pair)) = argument, pair.contains("=") else {
                    throw Failure(offset: token.offset, message: "map's arguments are 'from=to' pairs of literal text",
                                  hint: "write e.g. map('on_trial=trialing', 'cancelled=cancelling')")
                }
            }
        }
        if name == "money", args.count == 2 {
            guard case .literal(.string(let rules)) = args[1], Money.Rules(rawValue: rules) != nil else {
                throw Failure(offset: token.offset, message: "money's second argument names whose currency decimals to use",
                              hint: "write money(body.currency) for ISO 4217, or money(body.currency, 'stripe') for Stripe's amounts")
            }
        }
        return Filter(name: name, arguments: args, apply: definition.apply)
    }

    // MARK: Conditions

    /// condition := and ('or' and)* ; and := unary ('and' unary)* ; unary := 'not' unary | '(' condition ')' | test
    mutating func parseCondition() throws(Failure) -> Condition {
        var items = [try parseAnd()]
        while peek.kind == .word("or") {
            advance()
            items.append(try parseAnd())
        }
        return items.count == 1 ? items[0] : .any(items)
    }

    /// Parses the whole text as one `where` condition; anything left over is an error.
    package mutating func parseCompleteCondition() throws(Failure) -> Condition {
        let condition = try parseCondition()
        guard peek.kind == .end else {
            throw Failure(offset: peek.offset, message: "unexpected \(describe(peek.kind)) in condition",
                          hint: "combine tests with 'and', 'or', 'not' and parentheses")
        }
        return condition
    }

    private mutating func parseAnd() throws(Failure) -> Condition {
        var items = [try parseUnary()]
        while peek.kind == .word("and") {
            advance()
            items.append(try parseUnary())
        }
        return items.count == 1 ? items[0] : .all(items)
    }

    private mutating func parseUnary() throws(Failure) -> Condition {
        if peek.kind == .word("not") {
            advance()
            return .not(try parseUnary())
        }
        if peek.kind == .punct("(") {
            advance()
            let inner = try parseCondition()
            guard peek.kind == .punct(")") else {
                throw Failure(offset: peek.offset, message: "missing ')'", hint: "close the parenthesis")
            }
            advance()
            return inner
        }
        return try parseTest()
    }

    private mutating func parseTest() throws(Failure) -> Condition {
        let lhs = try parseExpression()
        switch peek.kind {
        case .punct(let p) where Condition.Comparison(rawValue: p) != nil:
            advance()
            return .compare(lhs, Condition.Comparison(rawValue: p)!, try parseOperand())
        case .word("in"):
            advance()
            return .member(lhs, try parseList(), negated: false)
        case .word("not") where position + 1 < tokens.count && tokens[position + 1].kind == .word("in"):
            advance()
            advance()
            return .member(lhs, try parseList(), negated: true)
        case .word("exists"):
            advance()
            return .exists(lhs)
        case .word("missing"):
            advance()
            return .missing(lhs)
        case .word("matches"):
            advance()
            guard case .string(let source) = peek.kind else {
                throw Failure(offset: peek.offset, message: "'matches' needs a quoted regular expression", hint: "write e.g. matches '^pro_'")
            }
            guard let pattern = Condition.Pattern(source) else {
                throw Failure(offset: peek.offset, message: "invalid regular expression '\(source)'", hint: "check the pattern's syntax (ICU regular expressions)")
            }
            advance()
            return .matches(lhs, pattern)
        default:
            return .truthy(lhs)
        }
    }

    /// A value on the right of a comparison: an expression, or a bare word taken as text (`status == active`).
    private mutating func parseOperand() throws(Failure) -> Expression {
        if case .word(let word) = peek.kind, Path.Root(rawValue: word) == nil, Functions.names[word] == nil,
           !["true", "false", "null"].contains(word) {
            advance()
            return .literal(.string(word))
        }
        return try parseExpression()
    }

    private mutating func parseList() throws(Failure) -> [JSONValue] {
        guard peek.kind == .punct("[") else {
            throw Failure(offset: peek.offset, message: "'in' needs a list", hint: "write e.g. in [active, trialing]")
        }
        advance()
        var items: [JSONValue] = []
        while peek.kind != .punct("]") {
            switch peek.kind {
            case .string(let s): items.append(.string(s))
            case .number(let n): items.append(Int64(n).map { .int($0) } ?? Double(n).map { .double($0) } ?? .string(n))
            case .word("true"): items.append(.bool(true))
            case .word("false"): items.append(.bool(false))
            case .word("null"): items.append(.null)
            case .word(let w): items.append(.string(w))
            default:
                throw Failure(offset: peek.offset, message: "expected a list item, found \(describe(peek.kind))", hint: "list literal values: [active, 'past due', 3]")
            }
            advance()
            if peek.kind == .punct(",") { advance() } else if peek.kind != .punct("]") {
                throw Failure(offset: peek.offset, message: "expected ',' or ']'", hint: "separate items with commas and close the list")
            }
        }
        advance()
        return items
    }

    // MARK: Tokens

    private var peek: Token { tokens[position] }
    private mutating func advance() { if position < tokens.count - 1 { position += 1 } }

    private func describe(_ kind: TokenKind) -> String {
        switch kind {
        case .word(let w): "'\(w)'"
        case .number(let n): "number \(n)"
        case .string: "quoted text"
        case .punct(let p): "'\(p)'"
        case .end: "end of text"
        }
    }

    private func describe(_ range: ClosedRange<Int>) -> String {
        range.lowerBound == range.upperBound ? "\(range.lowerBound)" : "\(range.lowerBound) to \(range.upperBound)"
    }

    static func tokenize(_ text: String) throws(Failure) -> [Token] {
        let chars = Array(text.unicodeScalars)
        var tokens: [Token] = []
        var i = 0
        func isWordStart(_ c: Unicode.Scalar) -> Bool { c.properties.isAlphabetic || c == "_" || c == "$" }
        func isWordChar(_ c: Unicode.Scalar) -> Bool {
            c.properties.isAlphabetic || c == "_" || c == "$" || c == "-" || ("0"..."9").contains(c)
        }
        while i < chars.count {
            let c = chars[i]
            if c == " " || c == "\t" {
                i += 1
                continue
            }
            let start = i
            if isWordStart(c) {
                while i < chars.count, isWordChar(chars[i]) { i += 1 }
                tokens.append(Token(kind: .word(String(String.UnicodeScalarView(chars[start..<i]))), offset: start))
            } else if ("0"..."9").contains(c) || (c == "-" && i + 1 < chars.count && ("0"..."9").contains(chars[i + 1])) {
                i += 1
                let previousIsDot = tokens.last?.kind == .punct(".")
                while i < chars.count {
                    let d = chars[i]
                    if ("0"..."9").contains(d) { i += 1; continue }
                    if !previousIsDot, d == "." || d == "e" || d == "E" { i += 1; continue }
                    if !previousIsDot, (d == "+" || d == "-"), chars[i - 1] == "e" || chars[i - 1] == "E" { i += 1; continue }
                    if isWordChar(d), previousIsDot { i += 1; continue }
                    break
                }
                let word = String(String.UnicodeScalarView(chars[start..<i]))
                tokens.append(Token(kind: word.allSatisfy({ $0.isNumber || $0 == "-" || $0 == "." || $0 == "e" || $0 == "E" || $0 == "+" }) ? .number(word) : .word(word), offset: start))
            } else if c == "'" || c == "\"" {
                i += 1
                var value = String.UnicodeScalarView()
                var closed = false
                while i < chars.count {
                    let d = chars[i]
                    if d == "\\", i + 1 < chars.count {
                        let e = chars[i + 1]
                        switch e {
                        case "n": value.append("\n")
                        case "t": value.append("\t")
                        default: value.append(e)
                        }
                        i += 2
                        continue
                    }
                    if d == c {
                        closed = true
                        i += 1
                        break
                    }
                    value.append(d)
                    i += 1
                }
                guard closed else {
                    throw Failure(offset: start, message: "unterminated quoted text", hint: "close it with \(c)")
                }
                tokens.append(Token(kind: .string(String(value)), offset: start))
            } else if (c == "=" || c == "!" || c == "<" || c == ">"), i + 1 < chars.count, chars[i + 1] == "=" {
                tokens.append(Token(kind: .punct(String(c) + "="), offset: start))
                i += 2
            } else if c == "<" || c == ">" {
                tokens.append(Token(kind: .punct(String(c)), offset: start))
                i += 1
            } else if ".[](),|".unicodeScalars.contains(c) {
                tokens.append(Token(kind: .punct(String(c)), offset: start))
                i += 1
            } else if c == "=" {
                // A lone '=' is almost always a comparison written as in a spreadsheet or SQL.
                throw Failure(offset: start, message: "'=' is not a comparison",
                              hint: "did you mean '=='? e.g. 'body.data.object.status == active'")
            } else if c == "&" {
                throw Failure(offset: start, message: "unexpected character '\(c)'",
                              hint: "combine conditions with 'and' / 'or'; to use the character as text, quote it, e.g. 'A & B'")
            } else {
                throw Failure(offset: start, message: "unexpected character '\(c)'",
                              hint: "quote literal text, e.g. 'A & B'")
            }
        }
        tokens.append(Token(kind: .end, offset: chars.count))
        return tokens
    }
}

/// "Did you mean …?" for names in rule files and configuration files.
package enum Suggest {
    /// The candidate with the smallest edit distance, if it is close enough to be a likely typo; else one the
    /// word begins with or that begins with the word (`uppercase` → `upper`, `trimspace` → `trim`), the nearest
    /// in length, when both have at least 3 characters.
    package static func closest(to word: String, in candidates: [String]) -> String? {
        let lower = word.lowercased()
        let scored = candidates.map { ($0, distance(lower, $0.lowercased())) }
        if let best = scored.min(by: { ($0.1, $0.0) < ($1.1, $1.0) }), best.1 <= max(2, word.count / 3) { return best.0 }
        let related = candidates.filter { candidate in
            let other = candidate.lowercased()
            return min(other.count, lower.count) >= 3 && (lower.hasPrefix(other) || other.hasPrefix(lower))
        }
        return related.min { (abs($0.count - word.count), $0) < (abs($1.count - word.count), $1) }
    }

    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}

import Foundation

/// Parses the expression text found in rule files. Positions in errors are columns within the text,
/// added to the scalar's own location by the caller. Package access for the fuzz harness.
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
    private(set) var tokens: [Token] = []
    private(set) var position = 0

    package init(_ text: String) throws(Failure) {
        self.text = text
        self.tokens = try Self.tokenize(text)
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

    // MARK: Tokens

    var peek: Token { tokens[position] }
    mutating func advance() { if position < tokens.count - 1 { position += 1 } }

    func describe(_ kind: TokenKind) -> String {
        switch kind {
        case .word(let w): "'\(w)'"
        case .number(let n): "number \(n)"
        case .string: "quoted text"
        case .punct(let p): "'\(p)'"
        case .end: "end of text"
        }
    }

    func describe(_ range: ClosedRange<Int>) -> String {
        range.lowerBound == range.upperBound ? "\(range.lowerBound)" : "\(range.lowerBound) to \(range.upperBound)"
    }
}

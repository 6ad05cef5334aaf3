import Foundation

/// The grammar of `when:` conditions: comparisons, `matches`, `in`, `and`/`or`/`not`.
extension ExpressionParser {
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
}

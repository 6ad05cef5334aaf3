import Foundation

/// The tokenizer both grammars read: words, numbers, quoted text and punctuation, each with its offset.
extension ExpressionParser {
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

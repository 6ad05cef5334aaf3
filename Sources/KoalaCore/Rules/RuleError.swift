/// A mistake in a rule file, located precisely enough for an editor to jump to it.
package struct RuleError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The rule file, as the loader was given its path.
    package let file: String
    /// 1-based line of the mistake.
    package let line: Int
    /// 1-based column of the mistake.
    package let column: Int
    /// What is wrong.
    package let message: String
    /// What to do about it.
    let hint: String

    package init(file: String, line: Int, column: Int, message: String, hint: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
        self.hint = hint
    }

    /// `file:line:column: what is wrong; what to do`
    package var description: String {
        // A problem with a whole file or folder has no line to point at: `file: message`.
        let place = line == 0 ? file : "\(file):\(line):\(column)"
        return hint.isEmpty ? "\(place): \(message)" : "\(place): \(message); \(hint)"
    }
}

/// Every error found while loading a rule table; loading never stops at the first.
package struct RuleTableErrors: Error, CustomStringConvertible, Sendable {
    /// Every error found, in file order.
    package let errors: [RuleError]

    package init(errors: [RuleError]) {
        self.errors = errors
    }

    package var description: String { errors.map(\.description).joined(separator: "\n") }
}

/// A position inside a rule file.
package struct SourceLocation: Sendable, Equatable, CustomStringConvertible {
    let file: String
    /// The line, from 1.
    package let line: Int
    let column: Int

    package init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    func offset(by columns: Int) -> SourceLocation {
        SourceLocation(file: file, line: line, column: column + columns)
    }

    /// An error at this place, with what to do about it in `hint`.
    package func error(_ message: String, hint: String = "") -> RuleError {
        RuleError(file: file, line: line, column: column, message: message, hint: hint)
    }

    package var description: String { "\(file):\(line):\(column)" }
}

extension Unicode.Scalar {
    /// What Foundation's `.whitespaces` holds: space separators (Unicode Zs), the tab, and the zero-width space.
    /// ASCII is decided without a table lookup.
    var isSpace: Bool {
        isASCII ? value == 0x20 || value == 0x09 : value == 0x200B || properties.generalCategory == .spaceSeparator
    }

    /// What Foundation's `.whitespacesAndNewlines` holds: Unicode White_Space (spaces, tabs, line and
    /// paragraph breaks) and the zero-width space.
    var isWhitespace: Bool {
        isASCII ? value == 0x20 || (0x09...0x0D).contains(value) : value == 0x200B || properties.isWhitespace
    }
}

extension String {
    /// Without leading and trailing white space and line breaks, as `trimmingCharacters(in:
    /// .whitespacesAndNewlines)`, but without Foundation's bridging through UTF-16 (emails, ids, amounts and
    /// headers are trimmed on every webhook); text that needs no trimming comes back as it is.
    var trimmingWhitespace: String { trimming(while: \.isWhitespace) }

    /// Without leading and trailing spaces and tabs, as `trimmingCharacters(in: .whitespaces)`.
    package var trimmingSpaces: String { trimming(while: \.isSpace) }

    private func trimming(while drop: (Unicode.Scalar) -> Bool) -> String {
        let scalars = unicodeScalars
        var start = scalars.startIndex, end = scalars.endIndex
        while start < end, drop(scalars[start]) { start = scalars.index(after: start) }
        while end > start, drop(scalars[scalars.index(before: end)]) { end = scalars.index(before: end) }
        if start == scalars.startIndex, end == scalars.endIndex { return self }
        return String(scalars[start..<end])
    }
}

extension Substring {
    /// As `String.trimmingWhitespace`.
    var trimmingWhitespace: String { String(self).trimmingWhitespace }

    /// As `String.trimmingSpaces`.
    package var trimmingSpaces: String { String(self).trimmingSpaces }
}

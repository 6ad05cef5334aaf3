package import Logging

/// Text from a payload (or anything else outside our control) made safe to print on one line: every
/// control character (C0, DEL, C1), line or paragraph separator and invisible format character (bidi
/// overrides and isolates, zero-width characters, the BOM) is written as `\u{…}`, so a value can neither
/// start a forged log line nor reorder the text around it.
package enum LogText {
    /// Writes every character that could forge or reorder a log line as `\u{…}`; printable ASCII is returned as it is.
    package static func escaped(_ text: String) -> String {
        // Printable ASCII, by far the common case, is returned as it is.
        if text.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) { return text }
        var out = ""
        out.reserveCapacity(text.utf8.count + 8)
        for scalar in text.unicodeScalars {
            if needsEscape(scalar) {
                out += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// Whether a character could forge or reorder a line: control, separator, invisible format, unassigned.
    package static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        if scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) { return true }
        if scalar.isASCII { return false }
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate, .privateUse, .unassigned: return true
        default: return false
        }
    }

    /// A short escaped preview of a payload value for error messages: its JSON form, cut to `limit` bytes.
    package static func preview(_ value: JSONValue, limit: Int = 64) -> String {
        bounded(escaped(value.encoded()), limit: limit)
    }

    /// `text` cut to at most `limit` UTF-8 bytes at a character boundary, with `…` when cut.
    package static func bounded(_ text: String, limit: Int) -> String {
        guard text.utf8.count > limit else { return text }
        var out = ""
        var bytes = 0
        for character in text {
            bytes += character.utf8.count
            if bytes > limit { break }
            out.append(character)
        }
        return out + "…"
    }
}

/// Wraps a log handler (swift-log's text `StreamLogHandler`) so that the message and every metadata value
/// it prints are escaped with `LogText`: nothing from a payload can forge a log line.
package struct EscapingLogHandler<Inner: LogHandler>: LogHandler {
    var inner: Inner
    /// The logger's own metadata, escaped, kept here rather than in `inner`: swift-log's `StreamLogHandler`
    /// renders all of its metadata again each time one key is set, and Hummingbird and ingest set keys on every
    /// request's logger, at any log level. Handed to `inner` with each event instead (the line reads the same).
    var ownMetadata: Logger.Metadata = [:]

    package init(_ inner: Inner) {
        self.inner = inner
    }

    package var logLevel: Logger.Level {
        get { inner.logLevel }
        set { inner.logLevel = newValue }
    }

    package var metadata: Logger.Metadata {
        get { ownMetadata }
        set { ownMetadata = newValue.mapValues(LogText.escaped) }
    }

    package var metadataProvider: Logger.MetadataProvider? {
        get { inner.metadataProvider }
        set { inner.metadataProvider = newValue }
    }

    /// Metadata of this logger, escaped when set.
    package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { ownMetadata[key] }
        set { ownMetadata[key] = newValue.map(LogText.escaped) }
    }

    package func log(event: LogEvent) {
        var event = event
        event.message = Logger.Message(stringLiteral: LogText.escaped(event.message.description))
        let added = event.metadata?.mapValues(LogText.escaped)
        if let added {
            event.metadata = ownMetadata.isEmpty ? added : ownMetadata.merging(added, uniquingKeysWith: { _, new in new })
        } else if !ownMetadata.isEmpty {
            event.metadata = ownMetadata
        }
        inner.log(event: event)
    }
}

extension LogText {
    /// A metadata value with every string in it escaped.
    package static func escaped(_ value: Logger.Metadata.Value) -> Logger.Metadata.Value {
        switch value {
        case .string(let s): .string(escaped(s))
        case .stringConvertible(let c): .string(escaped(c.description))
        case .array(let items): .array(items.map(escaped))
        case .dictionary(let d): .dictionary(d.mapValues(escaped))
        }
    }
}

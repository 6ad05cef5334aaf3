import Foundation

/// A parsed JSON document. Webhook bodies are parsed once into this and every rule reads from it.
package enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// Why a body is not JSON (or nests deeper than the parser allows), and where.
    package struct ParseError: Error, CustomStringConvertible {
        package let description: String
    }

    /// Parses JSON bytes (RFC 8259, strict); the top level may be any JSON value. With `numbersAsWritten`,
    /// a number that is not an integer within Int64 is the text it was written as (a `.string`), so that
    /// `99999999999999999990` and `…991`, or `2e2` and `200.0`, stay different identifiers.
    package static func parse(_ bytes: some ContiguousBytesLike, numbersAsWritten: Bool = false) throws -> JSONValue {
        let array = bytes as? [UInt8] ?? bytes.withBytes { Array($0) }
        let tape = try JSONTape.parse(array)
        return numbersAsWritten ? tape.readingNumbersAsWritten().value : tape.value
    }

    /// The member named `key` of an object; nil for other values.
    package subscript(key: String) -> JSONValue? {
        if case .object(let object) = self { return object[key] }
        return nil
    }

    /// The text of a string value; nil for other values.
    package var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// An array or an object.
    var isContainer: Bool {
        switch self {
        case .array, .object: true
        default: false
        }
    }

    var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// The value as a number, if it is one (or a string holding one). A number too large for a Double
    /// (`1e999` parses as infinity) or text such as `nan` is no number: nil.
    package var doubleValue: Double? {
        let d: Double? = switch self {
        case .int(let i): Double(i)
        case .double(let d): d
        case .string(let s): Double(s.trimmingSpaces)
        default: nil
        }
        return d.flatMap { $0.isFinite ? $0 : nil }
    }

    /// Text form used when a value is interpolated or used as a key: strings as-is, numbers and bools as JSON.
    package var textValue: String? {
        switch self {
        case .string(let s): s
        case .int(let i): String(i)
        case .double(let d): d.isFinite ? JSONValue.format(d) : nil
        case .bool(let b): b ? "true" : "false"
        case .null, .array, .object: nil
        }
    }

    static func format(_ d: Double) -> String {
        if d.rounded() == d, abs(d) < 1e15 { return String(Int64(d)) }
        return String(d)
    }

    // MARK: Encoding

    /// Compact JSON with object keys sorted by their UTF-8 bytes, so equal values always encode to equal bytes.
    package func encoded() -> String {
        var out = ""
        out.reserveCapacity(256)
        write(to: &out)
        return out
    }

    func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d):
            out += d.isFinite ? JSONValue.format(d) : "null"
        case .string(let s): JSONValue.writeString(s, to: &out)
        case .array(let items):
            out += "["
            for (index, item) in items.enumerated() {
                if index > 0 { out += "," }
                item.write(to: &out)
            }
            out += "]"
        case .object(let object):
            out += "{"
            // By UTF-8 bytes, not String's `<`: that one calls `"cafe\u{301}"` and `"caf\u{e9}6"` neither less nor
            // greater, so their order followed the dictionary's and the same value could encode two ways (fuzzing found it).
            for (index, (key, value)) in object.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }).enumerated() {
                if index > 0 { out += "," }
                JSONValue.writeString(key, to: &out)
                out += ":"
                value.write(to: &out)
            }
            out += "}"
        }
    }

    /// Appends `s` as a JSON string literal (quoted, escaped) to `out`.
    package static func writeString(_ s: String, to out: inout String) {
        // Most text needs no escaping: copy it whole.
        if s.utf8.allSatisfy({ $0 >= 0x20 && $0 != 0x22 && $0 != 0x5C }) {
            out += "\""
            out += s
            out += "\""
            return
        }
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let c where c.value < 0x20:
                out += "\\u" + String(repeating: "0", count: 4 - String(c.value, radix: 16).count) + String(c.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}

extension JSONValue: Codable {
    package init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let b = try? container.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? container.decode(Int64.self) {
            self = .int(i)
        } else if let d = try? container.decode(Double.self) {
            self = .double(d)
        } else if let s = try? container.decode(String.self) {
            self = .string(s)
        } else if let a = try? container.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    package func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let b): try container.encode(b)
        case .int(let i): try container.encode(i)
        case .double(let d): try container.encode(d)
        case .string(let s): try container.encode(s)
        case .array(let a): try container.encode(a)
        case .object(let o): try container.encode(o)
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByDictionaryLiteral, ExpressibleByArrayLiteral, ExpressibleByNilLiteral
{
    package init(stringLiteral value: String) { self = .string(value) }
    package init(integerLiteral value: Int64) { self = .int(value) }
    package init(booleanLiteral value: Bool) { self = .bool(value) }
    package init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
    package init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    package init(nilLiteral: ()) { self = .null }
}

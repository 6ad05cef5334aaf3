import Foundation
import KoalaCore

/// The tree parser the router used before `JSONTape` (issue 30): strict RFC 8259, straight from bytes into a tree of
/// `JSONValue`s. Kept here, out of the product, as the reference the `json` fuzz target compares the tape with on
/// every input: the same values, the same errors at the same offsets.
struct ReferenceJSONParser {
    struct Failure: Error, CustomStringConvertible {
        let offset: Int
        let message: String
        var description: String { "\(message) at byte \(offset)" }
    }

    private let bytes: UnsafeBufferPointer<UInt8>
    private var i = 0
    private var depth = 0
    /// Numbers that are not an integer within Int64 become `.string` of their text as written (`2e2`,
    /// `200.0`, `99999999999999999990`), for reading identifiers without a floating-point round trip.
    private var numbersAsWritten = false
    /// The members of the objects being read, innermost last: one stack for the whole parse, so an object costs
    /// one dictionary allocated at its final size instead of a dictionary that grows member by member.
    private var members: [(key: String, value: JSONValue)] = []
    /// The items of the arrays being read, innermost last (as `members`).
    private var items: [JSONValue] = []
    static let maxDepth = 512

    static func parse(_ bytes: UnsafeBufferPointer<UInt8>, numbersAsWritten: Bool = false) throws(Failure) -> JSONValue {
        var parser = ReferenceJSONParser(bytes: bytes)
        parser.numbersAsWritten = numbersAsWritten
        parser.members.reserveCapacity(32)
        parser.items.reserveCapacity(16)
        parser.skipWhitespace()
        let value = try parser.parseValue()
        parser.skipWhitespace()
        guard parser.i == bytes.count else { throw Failure(offset: parser.i, message: "unexpected data after the JSON value") }
        return value
    }

    private init(bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    private mutating func skipWhitespace() {
        while i < bytes.count {
            switch bytes[i] {
            case 0x20, 0x0A, 0x0D, 0x09: i += 1
            default: return
            }
        }
    }

    private mutating func parseValue() throws(Failure) -> JSONValue {
        guard i < bytes.count else { throw Failure(offset: i, message: "unexpected end of input") }
        switch bytes[i] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try expect("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw Failure(offset: i, message: "unexpected character '\(Character(Unicode.Scalar(bytes[i])))'")
        }
    }

    private mutating func expect(_ word: StaticString) throws(Failure) {
        let count = word.utf8CodeUnitCount
        guard i + count <= bytes.count else { throw Failure(offset: i, message: "unexpected end of input") }
        let matches = word.withUTF8Buffer { w in
            (0..<count).allSatisfy { bytes[i + $0] == w[$0] }
        }
        guard matches else { throw Failure(offset: i, message: "invalid literal") }
        i += count
    }

    private mutating func enter() throws(Failure) {
        depth += 1
        guard depth <= Self.maxDepth else { throw Failure(offset: i, message: "nesting deeper than \(Self.maxDepth)") }
    }

    private mutating func parseObject() throws(Failure) -> JSONValue {
        try enter()
        defer { depth -= 1 }
        i += 1
        skipWhitespace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "}") {
            i += 1
            return .object([:])
        }
        let base = members.count
        while true {
            skipWhitespace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw Failure(offset: i, message: "expected a quoted key") }
            let key = try parseString()
            skipWhitespace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw Failure(offset: i, message: "expected ':'") }
            i += 1
            skipWhitespace()
            let value = try parseValue()
            members.append((key, value))
            skipWhitespace()
            guard i < bytes.count else { throw Failure(offset: i, message: "unexpected end of input") }
            if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
            if bytes[i] == UInt8(ascii: "}") {
                i += 1
                // A repeated key keeps its last value, as before.
                var object = [String: JSONValue](minimumCapacity: members.count - base)
                for member in members[base...] { object[member.key] = member.value }
                members.removeSubrange(base...)
                return .object(object)
            }
            throw Failure(offset: i, message: "expected ',' or '}'")
        }
    }

    private mutating func parseArray() throws(Failure) -> JSONValue {
        try enter()
        defer { depth -= 1 }
        i += 1
        skipWhitespace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "]") {
            i += 1
            return .array([])
        }
        let base = items.count
        while true {
            skipWhitespace()
            let item = try parseValue()
            items.append(item)
            skipWhitespace()
            guard i < bytes.count else { throw Failure(offset: i, message: "unexpected end of input") }
            if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
            if bytes[i] == UInt8(ascii: "]") {
                i += 1
                let array = Array(items[base...])
                items.removeSubrange(base...)
                return .array(array)
            }
            throw Failure(offset: i, message: "expected ',' or ']'")
        }
    }

    private mutating func parseString() throws(Failure) -> String {
        i += 1  // opening quote
        let start = i
        var ascii = true
        // Fast path: no escapes.
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                let slice = UnsafeBufferPointer(rebasing: bytes[start..<i])
                i += 1
                // ASCII is valid UTF-8 as it is; only other text needs the (slower, generic) validation.
                if ascii { return String(decoding: slice, as: UTF8.self) }
                guard let s = String(validating: slice, as: UTF8.self) else { throw Failure(offset: start, message: "invalid UTF-8 in a string") }
                return s
            }
            if c >= 0x80 { ascii = false }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw Failure(offset: i, message: "control character in a string") }
            i += 1
        }
        var out = [UInt8](UnsafeBufferPointer(rebasing: bytes[start..<i]))
        while i < bytes.count {
            let c = bytes[i]
            switch c {
            case UInt8(ascii: "\""):
                i += 1
                guard let s = String(validating: out, as: UTF8.self) else { throw Failure(offset: start, message: "invalid UTF-8 in a string") }
                return s
            case UInt8(ascii: "\\"):
                guard i + 1 < bytes.count else { throw Failure(offset: i, message: "unexpected end of input") }
                let e = bytes[i + 1]
                i += 2
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                            throw Failure(offset: i, message: "unpaired surrogate")
                        }
                        i += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw Failure(offset: i, message: "unpaired surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw Failure(offset: i, message: "unpaired surrogate")
                    }
                    out.append(contentsOf: Array(String(Character(Unicode.Scalar(scalar)!)).utf8))
                default:
                    throw Failure(offset: i - 1, message: "invalid escape")
                }
            default:
                if c < 0x20 { throw Failure(offset: i, message: "control character in a string") }
                out.append(c)
                i += 1
            }
        }
        throw Failure(offset: start, message: "unterminated string")
    }

    private mutating func hex4() throws(Failure) -> UInt32 {
        guard i + 4 <= bytes.count else { throw Failure(offset: i, message: "unexpected end of input") }
        var v: UInt32 = 0
        for k in 0..<4 {
            let c = bytes[i + k]
            let d: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw Failure(offset: i + k, message: "invalid \\u escape")
            }
            v = v << 4 | d
        }
        i += 4
        return v
    }

    private mutating func parseNumber() throws(Failure) -> JSONValue {
        let start = i
        if bytes[i] == UInt8(ascii: "-") { i += 1 }
        func digits(_ p: inout ReferenceJSONParser) -> Int {
            let s = p.i
            while p.i < p.bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(p.bytes[p.i]) { p.i += 1 }
            return p.i - s
        }
        let intStart = i
        let intDigits = digits(&self)
        guard intDigits > 0 else { throw Failure(offset: i, message: "invalid number") }
        if intDigits > 1 && bytes[intStart] == UInt8(ascii: "0") { throw Failure(offset: intStart, message: "leading zero in a number") }
        var isInteger = true
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            isInteger = false
            guard digits(&self) > 0 else { throw Failure(offset: i, message: "invalid number") }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
            i += 1
            isInteger = false
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard digits(&self) > 0 else { throw Failure(offset: i, message: "invalid number") }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        if isInteger, let v = Int64(text) { return .int(v) }
        if numbersAsWritten { return .string(text) }
        guard let d = Double(text) else { throw Failure(offset: start, message: "invalid number") }
        return .double(d)
    }
}

import Foundation

/// A parsed JSON document that builds no tree: one flat array of entries (a tape) over the document's own bytes,
/// each scalar an offset and a length, each container the count of its members and where it ends. Rule evaluation
/// walks it (`member`, `element`) without allocating; only the value a path ends at becomes a `JSONValue`.
///
/// The parse is strict RFC 8259 and checks everything the tree parser checked, with the same messages at the same
/// offsets: depth, literals, numbers, escapes, surrogates, control characters and UTF-8. `value` gives the tree the
/// tree parser gave (a repeated key keeps its last value, keys compare as Swift strings do).
package struct JSONTape: Sendable {
    enum Kind: UInt8 { case null, `true`, `false`, number, string, array, object }

    struct Entry {
        var kind: Kind
        /// Strings: ASCII without an escape (its bytes are its text). Numbers: written as an integer (no fraction or exponent).
        var plain: Bool
        /// Strings and numbers: the first byte (after the opening quote). Containers: the number of items or members.
        var start: UInt32
        /// Strings and numbers: the length in bytes (before the closing quote). Containers: the index of the entry after the last.
        var end: UInt32
    }

    let bytes: [UInt8]
    let entries: [Entry]
    /// Whether a number that is not an integer within Int64 reads as the text it was written as (a `.string`).
    private(set) var numbersAsWritten = false

    static let maxDepth = 512

    /// The document `null`: what a body that is no JSON reads as (stored rows are parsed again leniently).
    package static let null = JSONTape(bytes: Array("null".utf8), entries: [Entry(kind: .null, plain: false, start: 0, end: 4)])

    private init(bytes: [UInt8], entries: [Entry]) {
        self.bytes = bytes
        self.entries = entries
    }

    /// Parses `bytes` (the top level may be any JSON value); throws `JSONValue.ParseError` saying what is wrong and where.
    package static func parse(_ bytes: [UInt8]) throws(JSONValue.ParseError) -> JSONTape {
        let result = bytes.withUnsafeBufferPointer { buffer in
            Result { () throws(Failure) -> [Entry] in
                var builder = Builder(bytes: buffer)
                return try builder.document()
            }
        }
        switch result {
        case .success(let entries): return JSONTape(bytes: bytes, entries: entries)
        case .failure(let failure): throw JSONValue.ParseError(description: failure.description)
        }
    }

    /// The same document read with numbers as written (see `JSONValue.parse(_:numbersAsWritten:)`).
    package func readingNumbersAsWritten() -> JSONTape {
        var copy = self
        copy.numbersAsWritten = true
        return copy
    }

    // MARK: Reading

    /// The root value's entry.
    static let root = 0

    /// The entry after `index`'s value (after a container's last member).
    @inline(__always)
    func next(after index: Int) -> Int {
        let entry = entries[index]
        return entry.kind == .array || entry.kind == .object ? Int(entry.end) : index + 1
    }

    func isArray(_ index: Int) -> Bool { entries[index].kind == .array }

    /// The value of the member named `key` of the object at `index` (the last, if the key repeats); nil when
    /// `index` is no object or has no such member.
    func member(_ key: String, of index: Int) -> Int? {
        let object = entries[index]
        guard object.kind == .object else { return nil }
        let end = Int(object.end)
        var found: Int?
        var k = index + 1
        var key = key
        key.withUTF8 { wanted in
            let asciiKey = !wanted.contains { $0 >= 0x80 }
            bytes.withUnsafeBufferPointer { bytes in
                while k < end {
                    let name = entries[k]
                    let same: Bool
                    if name.plain && asciiKey {
                        // ASCII on both sides: equal bytes are equal strings.
                        same = Int(name.end) == wanted.count
                            && (wanted.isEmpty || memcmp(bytes.baseAddress! + Int(name.start), wanted.baseAddress!, wanted.count) == 0)
                    } else {
                        // Anything else compares as Swift strings do (canonical equivalence), as the dictionary did.
                        same = string(at: k) == String(decoding: wanted, as: UTF8.self)
                    }
                    if same { found = k + 1 }
                    k = next(after: k + 1)
                }
            }
        }
        return found
    }

    /// The item at `position` of the array at `index` (negative counts from the end); nil when out of range or no array.
    func element(_ position: Int, of index: Int) -> Int? {
        let array = entries[index]
        guard array.kind == .array else { return nil }
        let count = Int(array.start)
        let position = position < 0 ? count + position : position
        guard position >= 0, position < count else { return nil }
        var k = index + 1
        for _ in 0..<position { k = next(after: k) }
        return k
    }

    /// The items of the array at `index`.
    func elements(of index: Int) -> [Int] {
        let array = entries[index]
        guard array.kind == .array else { return [] }
        var items: [Int] = []
        items.reserveCapacity(Int(array.start))
        var k = index + 1
        while k < Int(array.end) {
            items.append(k)
            k = next(after: k)
        }
        return items
    }

    /// The whole document as a tree.
    package var value: JSONValue { value(at: Self.root) }

    /// The value at `index` as a tree (a container with everything in it).
    func value(at index: Int) -> JSONValue {
        let entry = entries[index]
        switch entry.kind {
        case .null: return .null
        case .true: return .bool(true)
        case .false: return .bool(false)
        case .string: return .string(string(at: index))
        case .number: return number(entry)
        case .array:
            var items: [JSONValue] = []
            items.reserveCapacity(Int(entry.start))
            var k = index + 1
            while k < Int(entry.end) {
                items.append(value(at: k))
                k = next(after: k)
            }
            return .array(items)
        case .object:
            // A repeated key keeps its last value.
            var object = [String: JSONValue](minimumCapacity: Int(entry.start))
            var k = index + 1
            while k < Int(entry.end) {
                object[string(at: k)] = value(at: k + 1)
                k = next(after: k + 1)
            }
            return .object(object)
        }
    }

    /// The text of the string at `index`.
    func string(at index: Int) -> String {
        let entry = entries[index]
        return bytes.withUnsafeBufferPointer { buffer in
            let start = Int(entry.start)
            let raw = UnsafeBufferPointer(rebasing: buffer[start..<start + Int(entry.end)])
            if entry.plain || !raw.contains(UInt8(ascii: "\\")) { return String(decoding: raw, as: UTF8.self) }
            // Checked when parsed: decoding again cannot fail.
            var out: [UInt8] = []
            var builder = Builder(bytes: buffer)
            _ = try? builder.unescape(from: start, into: &out)
            return String(decoding: out, as: UTF8.self)
        }
    }

    private func number(_ entry: Entry) -> JSONValue {
        let start = Int(entry.start)
        let text = bytes.withUnsafeBufferPointer { String(decoding: UnsafeBufferPointer(rebasing: $0[start..<start + Int(entry.end)]), as: UTF8.self) }
        if entry.plain, let v = Int64(text) { return .int(v) }
        if numbersAsWritten { return .string(text) }
        // Any text the grammar let through is a Double (beyond its range: infinity).
        return .double(Double(text) ?? .infinity)
    }

    // MARK: Parsing

    struct Failure: Error, CustomStringConvertible {
        let offset: Int
        let message: String
        var description: String { "\(message) at byte \(offset)" }
    }

    /// Reads each byte once, appending an entry per value (and per member name).
    private struct Builder {
        let bytes: UnsafeBufferPointer<UInt8>
        var i = 0
        var depth = 0
        var entries: [Entry] = []
        /// The decoded text of the string being checked, when it holds an escape (reused).
        var scratch: [UInt8] = []

        init(bytes: UnsafeBufferPointer<UInt8>) {
            self.bytes = bytes
        }

        mutating func document() throws(Failure) -> [Entry] {
            guard bytes.count < Int(UInt32.max) else { throw Failure(offset: 0, message: "document larger than 4 GiB") }
            // A value takes at least two bytes with its separator: most documents need no second allocation.
            entries.reserveCapacity(bytes.count / 6 + 4)
            skipWhitespace()
            try value()
            skipWhitespace()
            guard i == bytes.count else { throw Failure(offset: i, message: "unexpected data after the JSON value") }
            return entries
        }

        mutating func skipWhitespace() {
            while i < bytes.count {
                switch bytes[i] {
                case 0x20, 0x0A, 0x0D, 0x09: i += 1
                default: return
                }
            }
        }

        mutating func value() throws(Failure) {
            guard i < bytes.count else { throw Failure(offset: i, message: "unexpected end of input") }
            switch bytes[i] {
            case UInt8(ascii: "{"): try container(.object)
            case UInt8(ascii: "["): try container(.array)
            case UInt8(ascii: "\""): try string()
            case UInt8(ascii: "t"): try literal("true", .true)
            case UInt8(ascii: "f"): try literal("false", .false)
            case UInt8(ascii: "n"): try literal("null", .null)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try number()
            default: throw Failure(offset: i, message: "unexpected character '\(Character(Unicode.Scalar(bytes[i])))'")
            }
        }

        mutating func literal(_ word: StaticString, _ kind: Kind) throws(Failure) {
            let count = word.utf8CodeUnitCount
            guard i + count <= bytes.count else { throw Failure(offset: i, message: "unexpected end of input") }
            let matches = word.withUTF8Buffer { w in
                (0..<count).allSatisfy { bytes[i + $0] == w[$0] }
            }
            guard matches else { throw Failure(offset: i, message: "invalid literal") }
            entries.append(Entry(kind: kind, plain: false, start: UInt32(i), end: UInt32(count)))
            i += count
        }

        mutating func enter() throws(Failure) {
            depth += 1
            guard depth <= JSONTape.maxDepth else { throw Failure(offset: i, message: "nesting deeper than \(JSONTape.maxDepth)") }
        }

        /// Appends the container's entry; `close` fills in its count and end.
        mutating func open(_ kind: Kind) -> Int {
            entries.append(Entry(kind: kind, plain: false, start: 0, end: 0))
            return entries.count - 1
        }

        mutating func close(_ index: Int, count: Int) {
            entries[index].start = UInt32(count)
            entries[index].end = UInt32(entries.count)
        }

        /// An object or an array: its entry, then each member (a name and a value) or item.
        mutating func container(_ kind: Kind) throws(Failure) {
            try enter()
            defer { depth -= 1 }
            let isObject = kind == .object
            let closer = isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")
            let index = open(kind)
            i += 1
            skipWhitespace()
            if i < bytes.count, bytes[i] == closer {
                i += 1
                close(index, count: 0)
                return
            }
            var count = 0
            while true {
                skipWhitespace()
                if isObject {
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw Failure(offset: i, message: "expected a quoted key") }
                    try string()
                    skipWhitespace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw Failure(offset: i, message: "expected ':'") }
                    i += 1
                    skipWhitespace()
                }
                try value()
                count += 1
                skipWhitespace()
                guard i < bytes.count else { throw Failure(offset: i, message: "unexpected end of input") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == closer {
                    i += 1
                    close(index, count: count)
                    return
                }
                throw Failure(offset: i, message: isObject ? "expected ',' or '}'" : "expected ',' or ']'")
            }
        }

        mutating func string() throws(Failure) {
            i += 1  // opening quote
            let start = i
            var ascii = true
            // Fast path: no escapes.
            while i < bytes.count {
                let c = bytes[i]
                if c == UInt8(ascii: "\"") {
                    // ASCII is valid UTF-8 as it is; only other text needs the (slower, generic) validation.
                    if !ascii, String(validating: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self) == nil {
                        throw Failure(offset: start, message: "invalid UTF-8 in a string")
                    }
                    entries.append(Entry(kind: .string, plain: ascii, start: UInt32(start), end: UInt32(i - start)))
                    i += 1
                    return
                }
                if c >= 0x80 { ascii = false }
                if c == UInt8(ascii: "\\") { break }
                if c < 0x20 { throw Failure(offset: i, message: "control character in a string") }
                i += 1
            }
            // An escape: decode the whole string once to check it (and to find where it ends).
            var out = scratch
            scratch = []
            defer { scratch = out }
            out.removeAll(keepingCapacity: true)
            let close = try unescape(from: start, into: &out)
            guard String(validating: out, as: UTF8.self) != nil else { throw Failure(offset: start, message: "invalid UTF-8 in a string") }
            entries.append(Entry(kind: .string, plain: false, start: UInt32(start), end: UInt32(close - start)))
            i = close + 1
        }

        /// Decodes the string whose text begins at `start` into `out`; returns the index of its closing quote.
        mutating func unescape(from start: Int, into out: inout [UInt8]) throws(Failure) -> Int {
            i = start
            while i < bytes.count {
                let c = bytes[i]
                switch c {
                case UInt8(ascii: "\""):
                    return i
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
                        out.append(contentsOf: UTF8.encode(Unicode.Scalar(scalar)!)!)
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

        mutating func hex4() throws(Failure) -> UInt32 {
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

        mutating func digits() -> Int {
            let s = i
            while i < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[i]) { i += 1 }
            return i - s
        }

        mutating func number() throws(Failure) {
            let start = i
            if bytes[i] == UInt8(ascii: "-") { i += 1 }
            let intStart = i
            let intDigits = digits()
            guard intDigits > 0 else { throw Failure(offset: i, message: "invalid number") }
            if intDigits > 1 && bytes[intStart] == UInt8(ascii: "0") { throw Failure(offset: intStart, message: "leading zero in a number") }
            var isInteger = true
            if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
                i += 1
                isInteger = false
                guard digits() > 0 else { throw Failure(offset: i, message: "invalid number") }
            }
            if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
                i += 1
                isInteger = false
                if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
                guard digits() > 0 else { throw Failure(offset: i, message: "invalid number") }
            }
            entries.append(Entry(kind: .number, plain: isInteger, start: UInt32(start), end: UInt32(i - start)))
        }
    }
}

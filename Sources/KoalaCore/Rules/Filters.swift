package import Foundation

/// The filters an expression pipeline may use. Each takes the piped value (nil when missing) and its
/// evaluated arguments, and returns nil when the value is missing or of a type it cannot convert.
package enum Filters {
    /// One filter of the rule language: how many arguments it takes, what it reads and what it does.
    package struct Definition: Sendable {
        let arity: ClosedRange<Int>
        let summary: String
        /// What it reads from the piped value: a value of another kind gives a missing result, and `check`
        /// says so when a sample shows one.
        package let input: Input
        let apply: @Sendable (JSONValue?, [JSONValue?]) -> JSONValue?

        init(arity: ClosedRange<Int>, summary: String, input: Input = .anything,
             apply: @escaping @Sendable (JSONValue?, [JSONValue?]) -> JSONValue?) {
            self.arity = arity
            self.summary = summary
            self.input = input
            self.apply = apply
        }
    }

    /// The kinds of value a filter reads.
    package enum Input: Sendable {
        /// Any value, passed on or replaced (`default`, `map`, `join`, …).
        case anything
        /// Text, or a number or boolean written as text.
        case text
        /// A number, or text holding one.
        case numeric
        /// A number itself.
        case number
        /// ISO-8601 text.
        case isoText
        /// Unix seconds or milliseconds, or ISO-8601 text.
        case time

        /// What the filter takes, when `value` is not of it (nil when it can read `value`).
        package func refusal(of value: JSONValue) -> String? {
            switch self {
            case .anything: nil
            case .text: value.textValue == nil ? "text (or a number)" : nil
            case .numeric: Filters.number(value) == nil ? "a number (or numeric text)" : nil
            case .number: value.doubleValue == nil ? "a number" : nil
            case .isoText: value.stringValue == nil ? "ISO-8601 text" : nil
            case .time: value.stringValue == nil && value.doubleValue == nil ? "unix seconds, unix milliseconds or ISO-8601 text" : nil
            }
        }
    }

    /// Every filter, by name: the one table the parser, `check` and README's reference read.
    package static let all: [String: Definition] = [
        "lower": .init(arity: 0...0, summary: "lower-cases text", input: .text) { value, _ in
            text(value).map { .string($0.lowercased()) }
        },
        "upper": .init(arity: 0...0, summary: "upper-cases text", input: .text) { value, _ in
            text(value).map { .string($0.uppercased()) }
        },
        "trim": .init(arity: 0...0, summary: "removes leading and trailing whitespace", input: .text) { value, _ in
            text(value).map { .string($0.trimmingWhitespace) }
        },
        "default": .init(arity: 1...1, summary: "replaces a missing, null or empty value") { value, args in
            isEmpty(value) ? args[0] : value
        },
        "string": .init(arity: 0...0, summary: "converts numbers and booleans to text", input: .text) { value, _ in
            text(value).map { .string($0) }
        },
        "number": .init(arity: 0...0, summary: "converts numeric text to a number", input: .numeric) { value, _ in
            number(value)
        },
        "round": .init(arity: 0...1, summary: "rounds a number to N decimal places (default 0)", input: .number) { value, args in
            guard let d = value?.doubleValue else { return nil }
            var places = 0
            if let argument = args.first {
                // A count of places outside 0...12 (or not a whole number) is no rounding we can do: missing.
                guard let p = argument?.doubleValue, p.rounded() == p, (0...12).contains(p) else { return nil }
                places = Int(p)
            }
            let factor = pow(10.0, Double(places))
            let rounded = (d * factor).rounded() / factor
            guard rounded.isFinite else { return nil }
            return places == 0 && abs(rounded) < 9e15 ? .int(Int64(rounded)) : .double(rounded)
        },
        "money": .init(arity: 1...2, summary: "minor units of the currency named by the argument to its amount, with the currency's own decimals (JPY 4900 → 4900, USD 4999 → 49.99, KWD 1234 → 1.234); money(currency, 'stripe') follows Stripe's list; missing without a currency", input: .numeric) { value, args in
            let rules = args.count > 1 ? args[1]?.stringValue.flatMap(Money.Rules.init(rawValue:)) : .iso4217
            guard let rules else { return nil }
            return Money.major(value, currency: args[0]?.stringValue, rules: rules)
        },
        "map": .init(arity: 1...16, summary: "renames values: map('on_trial=trialing', 'cancelled=cancelling'); values not listed pass through") { value, args in
            guard let value, let text = value.textValue else { return value }
            for case .string(let pair)? in args {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                if parts.count == 2, parts[0] == Substring(text) { return .string(String(parts[1])) }
            }
            return value
        },
        "cents": .init(arity: 0...0, summary: "divides by 100 whatever the currency (1999 → 19.99); for amounts use money(currency)", input: .numeric) { value, _ in
            guard let n = number(value) else { return nil }
            switch n {
            case .int(let i) where i % 100 == 0: return .int(i / 100)
            case .int(let i): return .double(Double(i) / 100)
            case .double(let d): return .double((d / 100 * 100).rounded() / 100)
            default: return nil
            }
        },
        "unix_seconds": .init(arity: 0...0, summary: "unix seconds to ISO-8601 UTC (missing outside years 1-9999)", input: .number) { value, _ in
            value?.doubleValue.flatMap { Timestamps.date(unixSeconds: $0) }.map { .string(Timestamps.iso($0)) }
        },
        "unix_millis": .init(arity: 0...0, summary: "unix milliseconds to ISO-8601 UTC (missing outside years 1-9999)", input: .number) { value, _ in
            value?.doubleValue.flatMap { Timestamps.date(unixSeconds: $0 / 1000) }.map { .string(Timestamps.iso($0)) }
        },
        "iso8601": .init(arity: 0...0, summary: "ISO-8601 text (any offset) to ISO-8601 UTC", input: .isoText) { value, _ in
            value?.stringValue.flatMap(Timestamps.parseISO).map { .string(Timestamps.iso($0)) }
        },
        "timestamp": .init(arity: 0...0, summary: "unix seconds, unix milliseconds or ISO text to ISO-8601 UTC", input: .time) { value, _ in
            Timestamps.date(from: value).map { .string(Timestamps.iso($0)) }
        },
        "email": .init(arity: 0...0, summary: "normalises an email address (trim, lower-case); missing if invalid", input: .text) { value, _ in
            text(value).flatMap(Identity.normalizeEmail).map { .string($0) }
        },
        "email_domain": .init(arity: 0...0, summary: "the domain of an email address, missing for free-mail and disposable providers", input: .text) { value, _ in
            text(value).flatMap { Identity.companyDomain(from: $0) }.map { .string($0) }
        },
        "join": .init(arity: 0...1, summary: "joins an array's items with a separator (default \", \")") { value, args in
            guard case .array(let items)? = value else { return text(value).map { .string($0) } }
            let separator = args.first??.textValue ?? ", "
            return .string(items.compactMap(\.textValue).joined(separator: separator))
        },
        "first": .init(arity: 0...0, summary: "the first item of an array") { value, _ in
            if case .array(let items)? = value { return items.first }
            return value
        },
        "count": .init(arity: 0...0, summary: "the number of items of an array or characters of text") { value, _ in
            switch value {
            case .array(let items)?: .int(Int64(items.count))
            case .string(let s)?: .int(Int64(s.count))
            case .object(let o)?: .int(Int64(o.count))
            default: nil
            }
        },
    ]

    static func text(_ value: JSONValue?) -> String? { value?.textValue }

    static func number(_ value: JSONValue?) -> JSONValue? {
        switch value {
        case .int?: return value
        case .double(let d)?: return d.isFinite ? value : nil
        case .string(let s)?:
            let t = s.trimmingSpaces
            if let i = Int64(t) { return .int(i) }
            if let d = Double(t), d.isFinite { return .double(d) }
            return nil
        default: return nil
        }
    }

    static func isEmpty(_ value: JSONValue?) -> Bool {
        switch value {
        case nil, .null?: true
        case .string(let s)?: s.trimmingSpaces.isEmpty
        default: false
        }
    }
}

/// Total conversions between times and their text or number forms: out-of-range input gives nil, never a trap.
package enum Timestamps {
    /// The times a payload may name: years 0001 through 9999, what ISO-8601's four-digit years can write.
    /// Anything outside (or not a number at all) is a missing time, never a trap.
    package static let representableSeconds: ClosedRange<Double> = -62_135_596_800 ... 253_402_300_799.999

    /// The date `seconds` after the Unix epoch, or nil when it is not a number or outside `representableSeconds`.
    static func date(unixSeconds seconds: Double) -> Date? {
        representableSeconds.contains(seconds) ? Date(timeIntervalSince1970: seconds) : nil
    }

    /// ISO-8601 UTC with milliseconds, as Koala's examples show: `2023-11-30T02:51:36.840Z`.
    /// Total: every date from a payload was checked against `representableSeconds` on the way in; any other
    /// (a clock gone mad) is written clamped to that range rather than trapping.
    package static func iso(_ date: Date) -> String {
        let since1970 = date.timeIntervalSince1970
        let clamped = since1970.isNaN ? 0 : min(max(since1970, representableSeconds.lowerBound), representableSeconds.upperBound)
        let millis = Int64((clamped * 1000).rounded(.down))
        let seconds = millis >= 0 ? millis / 1000 : (millis - 999) / 1000
        let ms = millis - seconds * 1000
        var days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let secondOfDay = seconds - days * 86400
        // Civil-from-days (Howard Hinnant's algorithm).
        days += 719_468
        let era = (days >= 0 ? days : days - 146_096) / 146_097
        let doe = days - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        var year = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        if month <= 2 { year += 1 }
        // Years of four digits (every real time) are written straight into the string: 24 bytes, one allocation.
        if (0...9999).contains(year) {
            return String(unsafeUninitializedCapacity: 24) { out in
                var o = 0
                func put(_ v: Int64, _ width: Int) {
                    var v = v, digit = width
                    while digit > 0 {
                        digit -= 1
                        out[o + digit] = UInt8(ascii: "0") + UInt8(v % 10)
                        v /= 10
                    }
                    o += width
                }
                func mark(_ c: Unicode.Scalar) {
                    out[o] = UInt8(ascii: c)
                    o += 1
                }
                put(year, 4); mark("-"); put(month, 2); mark("-"); put(day, 2); mark("T")
                put(secondOfDay / 3600, 2); mark(":"); put(secondOfDay / 60 % 60, 2); mark(":"); put(secondOfDay % 60, 2)
                mark("."); put(ms, 3); mark("Z")
                return o
            }
        }
        func pad(_ v: Int64, _ width: Int) -> String {
            let s = String(v)
            return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(secondOfDay / 3600, 2)):\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2)).\(pad(ms, 3))Z"
    }

    /// Numbers above 10^11 are taken as milliseconds, others as seconds; text is parsed as ISO-8601
    /// or, if numeric, as a number. Total: anything else, or out of range, is nil.
    package static func date(from value: JSONValue?) -> Date? {
        switch value {
        case .int?, .double?:
            guard let d = value?.doubleValue else { return nil }
            return date(unixSeconds: abs(d) > 1e11 ? d / 1000 : d)
        case .string(let s)?:
            if let d = Double(s) { return date(from: .double(d)) }
            return parseISO(s)
        default:
            return nil
        }
    }

    /// Parses `YYYY-MM-DD[T ]HH:MM[:SS[.fraction]][Z|±HH[:]MM]`; no offset means UTC.
    package static func parseISO(_ text: String) -> Date? {
        let s = Array(text.trimmingSpaces.utf8)
        var i = 0
        func digits(_ count: Int) -> Int? {
            guard i + count <= s.count else { return nil }
            var v = 0
            for k in 0..<count {
                let c = s[i + k]
                guard c >= 48, c <= 57 else { return nil }
                v = v * 10 + Int(c - 48)
            }
            i += count
            return v
        }
        func expect(_ c: Character) -> Bool {
            guard i < s.count, s[i] == c.asciiValue! else { return false }
            i += 1
            return true
        }
        guard let year = digits(4), expect("-"), let month = digits(2), expect("-"), let day = digits(2) else { return nil }
        guard (1...12).contains(month), (1...31).contains(day) else { return nil }
        var hour = 0, minute = 0, second = 0
        var fraction = 0.0
        var offset = 0
        if i < s.count {
            guard s[i] == UInt8(ascii: "T") || s[i] == UInt8(ascii: "t") || s[i] == UInt8(ascii: " ") else { return nil }
            i += 1
            guard let h = digits(2), expect(":"), let m = digits(2) else { return nil }
            hour = h
            minute = m
            if expect(":") {
                guard let sec = digits(2) else { return nil }
                second = sec
                if expect(".") || expect(",") {
                    var scale = 0.1
                    let start = i
                    while i < s.count, s[i] >= 48, s[i] <= 57 {
                        fraction += Double(s[i] - 48) * scale
                        scale /= 10
                        i += 1
                    }
                    guard i > start else { return nil }
                }
            }
            if i < s.count {
                if expect("Z") || expect("z") {
                } else if s[i] == UInt8(ascii: "+") || s[i] == UInt8(ascii: "-") {
                    let sign = s[i] == UInt8(ascii: "+") ? 1 : -1
                    i += 1
                    guard let oh = digits(2) else { return nil }
                    _ = expect(":")
                    let om = digits(2) ?? 0
                    offset = sign * (oh * 3600 + om * 60)
                } else {
                    return nil
                }
            }
            guard i == s.count, hour < 24, minute < 60, second < 61 else { return nil }
        }
        // Days from civil (Howard Hinnant's algorithm).
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = month > 2 ? month - 3 : month + 9
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        let seconds = Double(days * 86400 + hour * 3600 + minute * 60 + second - offset) + fraction
        return Date(timeIntervalSince1970: seconds)
    }
}

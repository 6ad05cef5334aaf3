import Foundation

/// Amounts in a currency's minor units (what billing providers send) turned into the amount a person reads,
/// with the currency's real number of decimals: JPY 4900 is ¥4,900, USD 4999 is $49.99, KWD 1234 is 1.234 KD.
package enum Money {
    /// Whose list of decimals a provider follows.
    package enum Rules: String, Sendable, CaseIterable {
        /// ISO 4217's minor units: Paddle, Chargebee, Lemon Squeezy, Recurly and most others.
        case iso4217 = "iso"
        /// Stripe's: its own zero-decimal list, and ISK, HUF and TWD kept at two decimals in its API.
        case stripe
    }

    /// ISO 4217 currencies whose minor unit is not a hundredth (all others, and any unlisted code, have two).
    static let isoExponents: [String: Int] = {
        var table: [String: Int] = [:]
        for code in ["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV",
                     "XAF", "XOF", "XPF"] { table[code] = 0 }
        for code in ["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"] { table[code] = 3 }
        for code in ["CLF", "UYW"] { table[code] = 4 }
        return table
    }()

    /// Stripe's currency list (docs.stripe.com/currencies): zero-decimal and three-decimal currencies; every
    /// other currency, ISK, HUF and TWD included, has two decimals in Stripe's API.
    static let stripeExponents: [String: Int] = {
        var table: [String: Int] = [:]
        for code in ["BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF",
                     "XOF", "XPF"] { table[code] = 0 }
        for code in ["BHD", "JOD", "KWD", "OMR", "TND"] { table[code] = 3 }
        return table
    }()

    /// The number of decimals of `currency` (a three-letter code, any case) under `rules`; nil if it is not a code.
    package static func exponent(of currency: String, rules: Rules) -> Int? {
        let code = currency.trimmingSpaces.uppercased()
        guard code.utf8.count == 3, code.utf8.allSatisfy({ $0 >= 0x41 && $0 <= 0x5A }) else { return nil }
        switch rules {
        case .iso4217: return isoExponents[code] ?? 2
        case .stripe: return stripeExponents[code] ?? 2
        }
    }

    /// `minor` (an integer, or integer or decimal text such as Paddle's `"4900"` or Stripe's
    /// `unit_amount_decimal` `"1234.5"`) in major units of `currency`. The decimal point is moved in the text,
    /// so the result is the exact amount (as exact as a JSON number can carry it). Missing when the amount is
    /// not a number or the currency is not a three-letter code: an amount is never sent in a guessed currency.
    package static func major(_ minor: JSONValue?, currency: String?, rules: Rules) -> JSONValue? {
        guard let currency, let exponent = exponent(of: currency, rules: rules) else { return nil }
        let text: String
        switch minor {
        case .int(let value)?: text = String(value)
        case .string(let value)?: text = value.trimmingSpaces
        case .double(let value)? where value.isFinite && value.rounded() == value && abs(value) < 9e15: text = String(Int64(value))
        default: return nil
        }
        guard let shifted = shift(text, left: exponent) else { return nil }
        if !shifted.contains("."), let whole = Int64(shifted) { return .int(whole) }
        guard let amount = Double(shifted), amount.isFinite else { return nil }
        return .double(amount)
    }

    /// Decimal text with its point moved `places` to the left ("4999", 2 → "49.99"; "5", 3 → "0.005"),
    /// without trailing zeros after the point; nil unless the text is a plain decimal number.
    static func shift(_ text: String, left places: Int) -> String? {
        var digits = Substring(text)
        var negative = false
        if digits.first == "-" {
            negative = true
            digits = digits.dropFirst()
        } else if digits.first == "+" {
            digits = digits.dropFirst()
        }
        let parts = digits.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, let whole = parts.first, !(whole.isEmpty && (parts.count == 1 || parts[1].isEmpty)),
              parts.allSatisfy({ $0.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } }), whole.utf8.count + (parts.count == 2 ? parts[1].utf8.count : 0) <= 40
        else { return nil }
        var integer = String(whole)
        var fraction = parts.count == 2 ? String(parts[1]) : ""
        // Move `places` digits from the end of the integer part to the front of the fraction.
        if integer.count < places { integer = String(repeating: "0", count: places - integer.count) + integer }
        let split = integer.index(integer.endIndex, offsetBy: -places)
        fraction = String(integer[split...]) + fraction
        integer = String(integer[..<split])
        while integer.count > 1 && integer.hasPrefix("0") { integer.removeFirst() }
        if integer.isEmpty { integer = "0" }
        while fraction.hasSuffix("0") { fraction.removeLast() }
        let body = fraction.isEmpty ? integer : integer + "." + fraction
        return negative && body.contains(where: { $0 != "0" && $0 != "." }) ? "-" + body : body
    }
}

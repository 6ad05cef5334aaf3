import Foundation

/// Email and domain rules shared by the rule language and the router. Every input is hostile: the
/// result is either an address Koala can key a person by, or nil.
package enum Identity {
    /// RFC 5321 limits, in bytes: local part, domain, and the whole address (a 256-byte path minus `<>`).
    static let maxLocalBytes = 64, maxDomainBytes = 255, maxEmailBytes = 254

    /// `local@domain` normalised, or nil when it is not a usable address:
    /// - surrounding whitespace is trimmed; control, format (bidi overrides, zero-width) and separator
    ///   characters anywhere refuse the address;
    /// - the local part is a dot-atom (no quoted forms, no leading, trailing or doubled dots); only its ASCII
    ///   letters are lower-cased, so `\u{212A}elvin` (Kelvin sign) never becomes another person's `kelvin`
    ///   and `İLKER` becomes `İlker`, not `i̇lker`;
    /// - the domain is normalised as IDNA does (NFKC, lower case, ideographic full stops as dots) and written
    ///   in ASCII (`xn--` labels), so `ｇｍａｉｌ.com` is `gmail.com`;
    /// - byte limits: 64 for the local part, 255 for the domain, 254 for the whole.
    package static func normalizeEmail(_ raw: String) -> String? {
        let trimmed = raw.trimmingWhitespace
        guard trimmed.utf8.count <= 4 * maxEmailBytes else { return nil }  // nothing that long normalises under the limit
        guard let at = trimmed.lastIndex(of: "@") else { return nil }
        let localRaw = trimmed[..<at], domainRaw = trimmed[trimmed.index(after: at)...]
        guard let local = normalizeLocalPart(localRaw), let domain = normalizeDomain(String(domainRaw)) else { return nil }
        let email = local + "@" + domain
        guard email.utf8.count <= maxEmailBytes else { return nil }
        return email
    }

    /// ASCII characters a dot-atom may hold besides letters and digits (RFC 5322 `atext`).
    static let atextSymbols = Set("!#$%&'*+-/=?^_`{|}~".utf8)

    static func normalizeLocalPart(_ local: Substring) -> String? {
        guard !local.isEmpty, local.utf8.count <= maxLocalBytes else { return nil }
        let dot = UInt8(ascii: ".")
        guard local.first != ".", local.last != ".", !zip(local.utf8, local.utf8.dropFirst()).contains(where: { $0 == dot && $1 == dot })
        else { return nil }
        var out = String.UnicodeScalarView()
        for scalar in local.unicodeScalars {
            if scalar.isASCII {
                let byte = UInt8(scalar.value)
                switch byte {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"): out.append(Unicode.Scalar(byte + 32))
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."): out.append(scalar)
                default:
                    guard atextSymbols.contains(byte) else { return nil }
                    out.append(scalar)
                }
            } else {
                // RFC 6531 allows UTF-8 local parts; letters, marks, numbers and symbols only, kept as written.
                guard isVisibleWordScalar(scalar) || isSymbol(scalar) else { return nil }
                out.append(scalar)
            }
        }
        return String(out)
    }

    /// A domain in the ASCII form DNS uses, or nil: IDNA-style mapping (NFKC, lower case, `。．｡` as dots),
    /// every label letters, digits and inner hyphens (any script; non-ASCII labels become `xn--` Punycode),
    /// at least two labels, a top-level label of letters (or `xn--`), at most 63 bytes a label and 255 in all.
    static func normalizeDomain(_ raw: String) -> String? {
        guard !raw.isEmpty, raw.utf8.count <= 4 * maxDomainBytes else { return nil }
        // Most domains are already in normal form: say so without building anything.
        return isNormalASCIIDomain(raw) ? raw : normalizeDomainInGeneral(raw)
    }

    /// `normalizeDomain` without its fast path: every step, for any text (a test holds the two to the same answers).
    static func normalizeDomainInGeneral(_ raw: String) -> String? {
        guard !raw.isEmpty, raw.utf8.count <= 4 * maxDomainBytes else { return nil }
        var text = raw
        if !text.utf8.allSatisfy({ $0 < 0x80 }) {
            if text.unicodeScalars.contains(where: { !$0.isASCII && !isVisibleWordScalar($0) && !isDot($0) && !isSymbol($0) }) { return nil }
            text = String(String.UnicodeScalarView(text.unicodeScalars.map { isDot($0) ? "." : $0 }))
            text = text.precomposedStringWithCompatibilityMapping
        }
        text = text.lowercased()
        var labels: [String] = []
        for label in text.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty, label.first != "-", label.last != "-" else { return nil }
            if label.utf8.allSatisfy({ $0 < 0x80 }) {
                guard label.utf8.allSatisfy({ isLDH($0) }) else { return nil }
                labels.append(String(label))
            } else {
                guard label.unicodeScalars.allSatisfy({ $0 == "-" || ($0.isASCII ? isLDH(UInt8($0.value)) : isVisibleWordScalar($0)) }),
                      let encoded = Punycode.encode(String(label)) else { return nil }
                labels.append("xn--" + encoded)
            }
            guard labels.last!.utf8.count <= 63 else { return nil }
        }
        guard labels.count >= 2, let tld = labels.last,
              tld.utf8.allSatisfy({ ($0 | 0x20) >= UInt8(ascii: "a") && ($0 | 0x20) <= UInt8(ascii: "z") }) || tld.hasPrefix("xn--") else { return nil }
        let domain = labels.joined(separator: ".")
        return domain.utf8.count <= maxDomainBytes ? domain : nil
    }

    /// Whether `text` is lowercase ASCII letters, digits, hyphens and dots that `normalizeDomain` would return
    /// unchanged: at least two labels of 1–63 bytes, none starting or ending with a hyphen, an alphabetic (or
    /// `xn--`) last label, at most `maxDomainBytes` in all. False only means "take the general path".
    static func isNormalASCIIDomain(_ text: String) -> Bool {
        let utf8 = text.utf8
        guard utf8.count <= maxDomainBytes else { return false }
        var labels = 0, length = 0, previous: UInt8 = UInt8(ascii: "."), lastLabelStart = utf8.startIndex
        var index = utf8.startIndex
        while index != utf8.endIndex {
            let byte = utf8[index]
            if byte == UInt8(ascii: ".") {
                guard length > 0, previous != UInt8(ascii: "-") else { return false }
                labels += 1
                length = 0
                lastLabelStart = utf8.index(after: index)
            } else {
                let lower = (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                guard lower || byte == UInt8(ascii: "-") else { return false }
                guard !(byte == UInt8(ascii: "-") && length == 0) else { return false }
                length += 1
                guard length <= 63 else { return false }
            }
            previous = byte
            index = utf8.index(after: index)
        }
        guard length > 0, previous != UInt8(ascii: "-"), labels >= 1 else { return false }
        let tld = utf8[lastLabelStart...]
        return tld.allSatisfy { $0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z") } || tld.starts(with: "xn--".utf8)
    }

    /// A syntactically valid domain (see `normalizeDomain`) already in its normal form.
    static func isDomain(_ domain: String) -> Bool {
        normalizeDomain(domain) == domain
    }

    static func isLDH(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
            || byte == UInt8(ascii: "-") || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
    }

    static func isDot(_ scalar: Unicode.Scalar) -> Bool {
        scalar == "." || scalar == "\u{3002}" || scalar == "\u{FF0E}" || scalar == "\u{FF61}"
    }

    /// Letters, combining marks and numbers, in any script.
    static func isVisibleWordScalar(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
             .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .letterNumber, .otherNumber:
            return true
        default:
            return false
        }
    }

    static func isSymbol(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol: return true
        default: return false
        }
    }

    /// The company domain of an email address: nil for invalid addresses and for free-mail or
    /// disposable providers, so `gmail.com` never becomes an Account.
    static func companyDomain(ofEmail raw: String) -> String? {
        guard let email = normalizeEmail(raw), let at = email.lastIndex(of: "@") else { return nil }
        let domain = String(email[email.index(after: at)...])
        return FreeMailDomains.contains(domain) ? nil : domain
    }

    static func companyDomain(from raw: String) -> String? {
        if raw.utf8.contains(UInt8(ascii: "@")) { return companyDomain(ofEmail: raw) }
        guard let domain = normalizeDomain(raw.trimmingWhitespace),
              !FreeMailDomains.contains(domain) else { return nil }
        return domain
    }

    /// Koala profile ids are UUIDs (the `ko_id` cookie).
    static func normalizeProfileID(_ raw: String) -> String? {
        let trimmed = raw.trimmingWhitespace
        guard trimmed.utf8.count == 36, let uuid = UUID(uuidString: trimmed) else { return nil }
        return uuid.uuidString.lowercased()
    }

    /// A provider's id used as an identity or memory key (`account_id`, `remember`, `recall`): printable text
    /// of at most 255 bytes. A control character (a NUL would cut it short in C APIs) or more bytes refuse it.
    static func isUsableKey(_ text: String) -> Bool {
        !text.isEmpty && SourceDefinition.identifierProblem(text) == nil
    }
}

/// RFC 3492 Punycode, the encoding half IDNA needs for `xn--` labels.
enum Punycode {
    static let base = 36, tMin = 1, tMax = 26, skew = 38, damp = 700, initialBias = 72, initialN = 128

    /// The Punycode form of `label` (without `xn--`), or nil on overflow.
    static func encode(_ label: String) -> String? {
        let input = label.unicodeScalars.map { Int($0.value) }
        var output = input.filter { $0 < 0x80 }.map { Character(Unicode.Scalar(UInt8($0))) }
        let basicCount = output.count
        var handled = basicCount
        if basicCount > 0 { output.append("-") }
        var n = initialN, delta = 0, bias = initialBias
        while handled < input.count {
            guard let m = input.filter({ $0 >= n }).min() else { return nil }
            let (product, overflow) = (m - n).multipliedReportingOverflow(by: handled + 1)
            guard !overflow, delta <= Int(Int32.max) - product else { return nil }
            delta += product
            n = m
            for c in input {
                if c < n { delta += 1; guard delta <= Int(Int32.max) else { return nil } }
                if c == n {
                    var q = delta
                    var k = base
                    while true {
                        let t = k <= bias ? tMin : (k >= bias + tMax ? tMax : k - bias)
                        if q < t { break }
                        output.append(digit(t + (q - t) % (base - t)))
                        q = (q - t) / (base - t)
                        k += base
                    }
                    output.append(digit(q))
                    bias = adapt(delta, handled + 1, handled == basicCount)
                    delta = 0
                    handled += 1
                }
            }
            delta += 1
            n += 1
        }
        return String(output)
    }

    static func digit(_ d: Int) -> Character {
        Character(Unicode.Scalar(UInt8(d < 26 ? 97 + d : 22 + d)))
    }

    static func adapt(_ delta: Int, _ count: Int, _ first: Bool) -> Int {
        var delta = first ? delta / damp : delta / 2
        delta += delta / count
        var k = 0
        while delta > ((base - tMin) * tMax) / 2 {
            delta /= base - tMin
            k += base
        }
        return k + (base - tMin + 1) * delta / (delta + skew)
    }
}

/// Free-mail and disposable email providers whose domain is never a company: the shipped list with a site's
/// changes, as a value. The rule loader gives it to every source; routing makes it `current` for the webhook it
/// routes, so `company_domain` and the account domain read the list of the rules in use, and tests of their own
/// lists run side by side.
package struct FreeMailDomains: Sendable, Equatable {
    /// Domains added to the shipped list.
    package var added: Set<String> = []
    /// Shipped domains that are companies here.
    package var removed: Set<String> = []

    /// The shipped list as it is.
    package static let shipped = FreeMailDomains()

    /// The list in effect for the work under way: the routed source's while a webhook is routed, else the shipped one.
    @TaskLocal package static var current = FreeMailDomains.shipped

    package init(added: Set<String> = [], removed: Set<String> = []) {
        self.added = added
        self.removed = removed
    }

    /// The shipped list changed by a list file: one domain per line adds it, `!domain` removes a shipped one,
    /// `#` starts a comment.
    package static func load(file path: String) throws -> FreeMailDomains {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var list = FreeMailDomains()
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first?
                .trimmingSpaces.lowercased() ?? ""
            if line.isEmpty { continue }
            if line.hasPrefix("!") { list.removed.insert(String(line.dropFirst())) } else { list.added.insert(line) }
        }
        return list
    }

    /// Whether `domain` (normalised) is a free-mail or disposable provider's in the list `current`.
    static func contains(_ domain: String) -> Bool { current.contains(domain) }

    /// Whether `domain` (normalised) is a free-mail or disposable provider's: the domain or one of its parent
    /// domains is listed, or is a regional provider's (`yahoo.co.uk`, `gmx.de`). Whole registrable domains only:
    /// `mail.acme-corp.io` is a company's, even though `mail` names a provider elsewhere.
    package func contains(_ domain: String) -> Bool {
        var candidate = Substring(domain)
        while true {
            let name = String(candidate)
            if added.contains(name) { return true }
            if removed.contains(name) { return false }
            if Self.list.contains(name) || Self.isRegionalProvider(candidate) { return true }
            // Up one level, while at least two labels are left.
            guard let dot = candidate.firstIndex(of: "."), candidate[candidate.index(after: dot)...].contains(".") else { return false }
            candidate = candidate[candidate.index(after: dot)...]
        }
    }

    /// `provider.<country suffix>`: a regional provider's name followed by exactly a country-code suffix such as
    /// `de`, `co.uk`, `com.au` or `ne.jp` (never `.com`: `orange.com` is a company; global domains are listed).
    static func isRegionalProvider(_ domain: Substring) -> Bool {
        guard let dot = domain.firstIndex(of: "."), regionalProviders.contains(String(domain[..<dot])) else { return false }
        let suffix = domain[domain.index(after: dot)...].split(separator: ".")
        func isCountry(_ label: Substring) -> Bool {
            label.utf8.count == 2 && label.utf8.allSatisfy { $0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z") } && !vanityCountryCodes.contains(String(label))
        }
        switch suffix.count {
        case 1: return isCountry(suffix[0])
        case 2: return secondLevelSuffixes.contains(String(suffix[0])) && isCountry(suffix[1])
        default: return false
        }
    }

    /// Country codes sold as generic names: a provider's name under them is likely a company.
    static let vanityCountryCodes: Set<String> = ["io", "ai", "co", "tv", "me", "ly", "gg", "so", "sh", "fm", "am", "to", "cc", "ws", "vc", "gl", "sc"]
    static let secondLevelSuffixes: Set<String> = ["co", "com", "net", "org", "ne", "or", "gen"]

    static let regionalProviders: Set<String> = [
        "yahoo", "hotmail", "outlook", "live", "msn", "gmx", "web", "aol", "ymail", "rocketmail", "libero",
        "orange", "wanadoo", "free", "laposte", "t-online", "freenet", "virgilio", "tiscali", "rediffmail",
        "yandex", "mail", "seznam", "wp", "o2", "interia", "onet", "bigpond", "sky", "btinternet",
    ]

    static let list: Set<String> = [
        // Free mail: global domains of the regional providers
        "yahoo.com", "hotmail.com", "outlook.com", "live.com", "msn.com", "aol.com", "ymail.com", "rocketmail.com",
        "yandex.com", "bigpond.com", "btinternet.com", "rediffmail.com", "laposte.net", "sky.com", "libero.it",
        // Free mail
        "gmail.com", "googlemail.com", "icloud.com", "me.com", "mac.com", "proton.me", "protonmail.com",
        "protonmail.ch", "pm.me", "tutanota.com", "tuta.io", "tutamail.com", "zoho.com", "zohomail.com",
        "fastmail.com", "fastmail.fm", "hey.com", "gmx.net", "gmx.com", "mail.com", "email.com", "inbox.com",
        "qq.com", "163.com", "126.com", "sina.com", "sohu.com", "aliyun.com", "naver.com", "daum.net",
        "hanmail.net", "yandex.ru", "ya.ru", "mail.ru", "rambler.ru", "bk.ru", "list.ru", "inbox.ru",
        "comcast.net", "verizon.net", "att.net", "sbcglobal.net", "cox.net", "charter.net", "earthlink.net",
        "juno.com", "optonline.net", "shaw.ca", "rogers.com", "sympatico.ca", "telus.net", "optusnet.com.au",
        "hushmail.com", "lavabit.com", "posteo.de", "posteo.net", "mailbox.org", "runbox.com", "disroot.org",
        "riseup.net", "startmail.com", "skiff.com", "duck.com", "aim.com", "passmail.net", "simplelogin.com",
        "anonaddy.me", "addy.io", "relay.firefox.com", "mozmail.com", "privaterelay.appleid.com",
        // Disposable
        "mailinator.com", "guerrillamail.com", "guerrillamail.net", "sharklasers.com", "10minutemail.com",
        "temp-mail.org", "tempmail.com", "tempmail.net", "throwawaymail.com", "yopmail.com", "yopmail.fr",
        "trashmail.com", "getnada.com", "nada.email", "dispostable.com", "maildrop.cc", "mintemail.com",
        "mohmal.com", "fakeinbox.com", "emailondeck.com", "spamgourmet.com", "mailnesia.com", "mytemp.email",
        "tempail.com", "tempr.email", "discard.email", "33mail.com", "burnermail.io", "moakt.com",
        "mailcatch.com", "inboxkitten.com", "spambox.us", "trbvm.com", "mailpoof.com", "emailfake.com",
        "example.com", "example.org", "example.net", "test.com",
    ]
}

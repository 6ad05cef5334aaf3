import Foundation
import Synchronization

/// Email and domain rules shared by the rule language and the router.
public enum Identity {
    /// Trimmed, lower-cased, and shaped like `local@domain.tld`; nil otherwise.
    public static func normalizeEmail(_ raw: String) -> String? {
        var view = Substring(raw)
        while let c = view.first, c.isWhitespace { view = view.dropFirst() }
        while let c = view.last, c.isWhitespace { view = view.dropLast() }
        let email = view.lowercased()
        guard email.count <= 254 else { return nil }
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, parts[0].count <= 64 else { return nil }
        let local = parts[0], domain = parts[1]
        guard !local.contains(where: { $0.isWhitespace || $0 == "," || $0 == "<" || $0 == ">" }) else { return nil }
        guard isDomain(String(domain)) else { return nil }
        return email
    }

    /// A syntactically valid DNS name with at least two labels.
    public static func isDomain(_ domain: String) -> Bool {
        let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
        guard labels.count >= 2, domain.count <= 253 else { return false }
        for label in labels {
            guard !label.isEmpty, label.count <= 63, label.first != "-", label.last != "-" else { return false }
            guard label.allSatisfy({ ($0.isLetter || $0.isNumber || $0 == "-") }) else { return false }
        }
        return labels.last!.allSatisfy(\.isLetter) || labels.last!.hasPrefix("xn--")
    }

    /// The company domain of an email address: nil for invalid addresses and for free-mail or
    /// disposable providers, so `gmail.com` never becomes an Account.
    public static func companyDomain(ofEmail raw: String) -> String? {
        guard let email = normalizeEmail(raw), let at = email.lastIndex(of: "@") else { return nil }
        let domain = String(email[email.index(after: at)...])
        return FreeMailDomains.contains(domain) ? nil : domain
    }

    public static func companyDomain(from raw: String) -> String? {
        if raw.utf8.contains(UInt8(ascii: "@")) { return companyDomain(ofEmail: raw) }
        let domain = raw.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        guard isDomain(domain), !FreeMailDomains.contains(domain) else { return nil }
        return domain
    }

    /// Koala profile ids are UUIDs (the `ko_id` cookie).
    public static func normalizeProfileID(_ raw: String) -> String? {
        let trimmed = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let uuid = UUID(uuidString: trimmed) else { return nil }
        return uuid.uuidString.lowercased()
    }
}

/// Free-mail and disposable email providers whose domain is never a company.
public enum FreeMailDomains {
    /// Site-specific changes to the shipped list: domains added, and shipped domains that are companies here.
    private static let overrides = Mutex<(added: Set<String>, removed: Set<String>)>(([], []))

    /// Applies a list file: one domain per line adds it, `!domain` removes a shipped one, `#` starts a comment.
    public static func configure(file path: String) throws {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var added = Set<String>(), removed = Set<String>()
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first?
                .trimmingCharacters(in: .whitespaces).lowercased() ?? ""
            if line.isEmpty { continue }
            if line.hasPrefix("!") { removed.insert(String(line.dropFirst())) } else { added.insert(line) }
        }
        configure(added: added, removed: removed)
    }

    public static func configure(added: Set<String>, removed: Set<String>) {
        overrides.withLock { $0 = (added, removed) }
    }

    public static func contains(_ domain: String) -> Bool {
        let (added, removed) = overrides.withLock { $0 }
        if added.contains(domain) { return true }
        if removed.contains(domain) { return false }
        if list.contains(domain) { return true }
        // Regional variants such as yahoo.co.uk, hotmail.fr, gmx.de.
        let labels = domain.split(separator: ".")
        if let first = labels.first, labels.count >= 2, regionalProviders.contains(String(first)) { return true }
        return false
    }

    static let regionalProviders: Set<String> = [
        "yahoo", "hotmail", "outlook", "live", "msn", "gmx", "web", "aol", "ymail", "rocketmail", "libero",
        "orange", "wanadoo", "free", "laposte", "t-online", "freenet", "virgilio", "tiscali", "rediffmail",
        "yandex", "mail", "seznam", "wp", "o2", "interia", "onet", "bigpond", "sky", "btinternet",
    ]

    static let list: Set<String> = [
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

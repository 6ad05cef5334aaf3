/// Which request headers may be kept with a stored webhook. Credentials never are: the headers the source's
/// scheme reads a signature or credential from, and any header whose name looks like one.
public enum StoredHeaders {
    /// Fragments of header names that carry credentials whatever the rule file says (matched case-insensitively).
    static let sensitiveFragments: [[UInt8]] = [
        "auth", "cookie", "signature", "hmac", "token", "secret", "api-key", "apikey", "password", "passwd",
        "credential", "session", "jwt",
    ].map { Array($0.utf8) }

    /// Whether a header name looks like a credential.
    static func isSensitive(_ name: String) -> Bool {
        // A plain byte scan: the generic `firstRange(of:)` allocated a dozen times per call, and this runs
        // for every header of every webhook.
        var lower = Array(name.utf8)
        for i in lower.indices where lower[i] >= 65 && lower[i] <= 90 { lower[i] += 32 }
        return sensitiveFragments.contains { fragment in
            guard lower.count >= fragment.count else { return false }
            return lower.withUnsafeBufferPointer { bytes in
                fragment.withUnsafeBufferPointer { needle in
                    for start in 0...(bytes.count - needle.count) {
                        var i = 0
                        while i < needle.count && bytes[start + i] == needle[i] { i += 1 }
                        if i == needle.count { return true }
                    }
                    return false
                }
            }
        }
    }

    /// `headers` (names lower-cased) without credentials: `credentialHeaders` (the source scheme's, any case)
    /// and every sensitive-looking name.
    static func keepable(_ headers: [String: String], credentialHeaders: [String]) -> [String: String] {
        let credentials = Set(credentialHeaders.map { $0.lowercased() })
        return headers.filter { !credentials.contains($0.key) && !isSensitive($0.key) }
    }
}

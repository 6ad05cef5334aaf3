/// Which request headers may be kept with a stored webhook. A source keeps an allow-list (`SourceDefinition.keptHeaders`);
/// credentials are never on it: the headers the source's scheme reads a signature or credential from, and any
/// header whose name looks like one, even when a rule file lists it.
package enum StoredHeaders {
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

    /// Whether a byte may appear in a header name (RFC 9110 token).
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        default: Array("!#$%&'*+-.^_`|~".utf8).contains(byte)
        }
    }
}

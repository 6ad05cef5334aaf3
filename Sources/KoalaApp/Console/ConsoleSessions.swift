import Foundation
import KoalaCore
import Synchronization

/// Console sessions, signed rather than stored: the cookie is `v1.<expiry>.<nonce>.<mac>`, the MAC an
/// HMAC-SHA256 under a key derived from the admin token. Every replica with the same token accepts it, a
/// changed token ends every session, and nothing about a session is written to the store. A session's CSRF
/// token is another MAC of its nonce. Signing out revokes the nonce on this replica until it expires (and
/// the browser drops the cookie).
final class ConsoleSessions: Sendable {
    static let cookieName = "koala_console"
    /// How long a sign-in lasts.
    let lifetime: TimeInterval
    private let key: [UInt8]
    private let tokenDigest: [UInt8]
    private let revoked = Mutex<[String: Date]>([:])

    init(adminToken: String, lifetime: TimeInterval = 12 * 3600) {
        key = Crypto.digest(.sha256, Array("koala-router console session key\u{0}\(adminToken)".utf8))
        tokenDigest = Crypto.digest(.sha256, Array(adminToken.utf8))
        self.lifetime = lifetime
    }

    /// Whether `given` is the admin token (compared in constant time, as digests).
    func isAdminToken(_ given: String) -> Bool {
        Crypto.constantTimeEquals(Crypto.digest(.sha256, Array(given.utf8)), tokenDigest)
    }

    /// A new session's cookie value.
    func start(now: Date = Date()) -> String {
        var generator = SystemRandomNumberGenerator()
        let nonce = Hex.encode((0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
        let body = "v1.\(Int64(now.addingTimeInterval(lifetime).timeIntervalSince1970)).\(nonce)"
        return body + "." + mac(body)
    }

    /// The session a cookie value names, if it is well formed, signed by this token, unexpired and not revoked.
    func session(_ value: String?, now: Date = Date()) -> Session? {
        guard let value, value.utf8.count <= 200 else { return nil }
        let parts = value.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 4, parts[0] == "v1", let expiry = Int64(parts[1]), parts[2].utf8.count == 32 else { return nil }
        let body = parts[0...2].joined(separator: ".")
        guard Crypto.constantTimeEquals(Array(mac(body).utf8), Array(parts[3].utf8)) else { return nil }
        let expires = Date(timeIntervalSince1970: Double(expiry))
        guard expires > now, revoked.withLock({ $0[parts[2]] == nil }) else { return nil }
        return Session(nonce: parts[2], expires: expires, csrf: mac("csrf." + parts[2]))
    }

    /// Ends a session on this replica.
    func revoke(_ session: Session, now: Date = Date()) {
        revoked.withLock { revoked in
            revoked = revoked.filter { $0.value > now }
            revoked[session.nonce] = session.expires
        }
    }

    private func mac(_ text: String) -> String { Hex.encode(Crypto.hmac(.sha256, key: key, data: Array(text.utf8))) }

    struct Session: Sendable {
        let nonce: String
        let expires: Date
        /// The token every form of this session carries.
        let csrf: String

        func acceptsCSRF(_ given: String?) -> Bool {
            guard let given else { return false }
            return Crypto.constantTimeEquals(Array(given.utf8), Array(csrf.utf8))
        }
    }
}

import Foundation
import KoalaCore
import KoalaStore
import Logging
import Synchronization

/// Console sessions, signed rather than stored: the cookie is `v2.<issued ms>.<expiry>.<nonce>.<mac>`, the MAC
/// an HMAC-SHA256 under a key derived from the admin token. Every replica with the same token accepts it, and a
/// changed token ends every session. A session's CSRF token is another MAC of its nonce.
///
/// Ending a session is stored: signing out revokes its nonce, and signing out everywhere ends every session
/// issued until then, in the store that every replica reads, so a revoked cookie stays refused after a restart
/// and on the other replicas. Each replica also remembers its own revocations, which still hold while the store
/// cannot be asked.
final class ConsoleSessions: Sendable {
    static let cookieName = "koala_console"
    /// How long a sign-in lasts.
    let lifetime: TimeInterval
    private let key: [UInt8]
    private let tokenDigest: [UInt8]
    /// Where revocations are kept (nil: this replica's memory only, as in unit tests without a store).
    private let store: (any OperatorStore)?
    private let logger: Logger
    /// This replica's own revocations (nonce → when the session would expire) and its last sign-out everywhere.
    private let local = Mutex<(revoked: [String: Date], everywhere: Date?)>(([:], nil))

    init(adminToken: String, store: (any OperatorStore)? = nil, lifetime: TimeInterval = 12 * 3600,
         logger: Logger = Logger(label: "koala-router.console")) {
        key = Crypto.digest(.sha256, Array("koala-router console session key\u{0}\(adminToken)".utf8))
        tokenDigest = Crypto.digest(.sha256, Array(adminToken.utf8))
        self.lifetime = lifetime
        self.store = store
        self.logger = logger
    }

    /// Whether `given` is the admin token (compared in constant time, as digests).
    func isAdminToken(_ given: String) -> Bool {
        Crypto.constantTimeEquals(Crypto.digest(.sha256, Array(given.utf8)), tokenDigest)
    }

    /// A new session's cookie value.
    func start(now: Date = Date()) -> String {
        var generator = SystemRandomNumberGenerator()
        let nonce = Hex.encode((0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
        let issued = Int64((now.timeIntervalSince1970 * 1000).rounded(.down))
        let body = "v2.\(issued).\(Int64(now.addingTimeInterval(lifetime).timeIntervalSince1970)).\(nonce)"
        return body + "." + mac(body)
    }

    /// The session a cookie value names, if it is well formed, signed by this token, unexpired and not revoked.
    func session(_ value: String?, now: Date = Date()) async -> Session? {
        guard let session = signed(value, now: now) else { return nil }
        let endedHere = local.withLock { local in
            local.revoked[session.nonce] != nil || local.everywhere.map { session.issuedAt <= $0 } == true
        }
        if endedHere { return nil }
        guard let store else { return session }
        do {
            return try await store.consoleSessionRevoked(nonce: session.nonce, issuedAt: session.issuedAt) ? nil : session
        } catch {
            // The store is down: this replica's own sign-outs still hold; others' cannot be known until it answers.
            logger.warning("console session checked against this replica's sign-outs only: the store did not answer", metadata: ["error": "\(error)"])
            return session
        }
    }

    /// The session a cookie names by its signature and expiry alone.
    private func signed(_ value: String?, now: Date) -> Session? {
        guard let value, value.utf8.count <= 200 else { return nil }
        let parts = value.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 5, parts[0] == "v2", let issued = Int64(parts[1]), let expiry = Int64(parts[2]), parts[3].utf8.count == 32 else { return nil }
        let body = parts[0...3].joined(separator: ".")
        guard Crypto.constantTimeEquals(Array(mac(body).utf8), Array(parts[4].utf8)) else { return nil }
        let expires = Date(timeIntervalSince1970: Double(expiry))
        guard expires > now else { return nil }
        return Session(nonce: parts[3], issuedAt: Date(timeIntervalSince1970: Double(issued) / 1000), expires: expires, csrf: mac("csrf." + parts[3]))
    }

    /// Ends a session on every replica; false when the store could not record it (then only this replica knows).
    func revoke(_ session: Session, now: Date = Date()) async -> Bool {
        local.withLock { local in
            local.revoked = local.revoked.filter { $0.value > now }
            local.revoked[session.nonce] = session.expires
        }
        return await stored("console sign-out") { try await $0.revokeConsoleSession(nonce: session.nonce, expires: session.expires, now: now) }
    }

    /// Ends every session issued until now, this one included, on every replica; false as `revoke`.
    func revokeAll(now: Date = Date()) async -> Bool {
        local.withLock { $0.everywhere = now }
        return await stored("console sign-out everywhere") { try await $0.revokeConsoleSessions(issuedBefore: now) }
    }

    private func stored(_ what: String, _ write: (any OperatorStore) async throws -> Void) async -> Bool {
        guard let store else { return true }
        do {
            try await write(store)
            return true
        } catch {
            logger.error("\(what) is known to this replica only: the store did not answer", metadata: ["error": "\(error)"])
            return false
        }
    }

    private func mac(_ text: String) -> String { Hex.encode(Crypto.hmac(.sha256, key: key, data: Array(text.utf8))) }

    struct Session: Sendable {
        let nonce: String
        /// When it was signed in (to the millisecond): a sign-out everywhere ends every session issued until then.
        let issuedAt: Date
        let expires: Date
        /// The token every form of this session carries.
        let csrf: String

        func acceptsCSRF(_ given: String?) -> Bool {
            guard let given else { return false }
            return Crypto.constantTimeEquals(Array(given.utf8), Array(csrf.utf8))
        }
    }
}

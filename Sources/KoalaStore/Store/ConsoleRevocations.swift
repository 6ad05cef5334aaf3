/// Console sign-outs, kept in the store so that every replica sees them and a restart forgets none: one row per
/// revoked session (its nonce, until it would have expired) and one row, `*`, holding the time of the last
/// sign-out everywhere (every session issued at or before it is ended). Both backends run these texts; only
/// the placeholders differ (`?` for SQLite, `$n` for PostgreSQL).
enum ConsoleRevocations {
    /// The nonce of the sign-out-everywhere row; a real nonce is 32 hex digits.
    static let everywhere = "*"

    static func createTable(real: String) -> String {
        "CREATE TABLE console_revocations (nonce TEXT PRIMARY KEY, expires_at \(real) NOT NULL)"
    }

    /// Binds: nonce, expires_at. A second sign-out of one session, or a later sign-out everywhere, keeps the later time.
    static func upsert(_ p: (Int) -> String, greatest: String) -> String {
        "INSERT INTO console_revocations (nonce, expires_at) VALUES (\(p(1)), \(p(2))) "
            + "ON CONFLICT (nonce) DO UPDATE SET expires_at = \(greatest)(console_revocations.expires_at, excluded.expires_at)"
    }

    /// Binds: now. Revocations of sessions that have expired anyway.
    static func pruneExpired(_ p: (Int) -> String) -> String {
        "DELETE FROM console_revocations WHERE nonce <> '\(everywhere)' AND expires_at < \(p(1))"
    }

    /// Binds: nonce, issued_at. One row (`revoked`, 0 or 1).
    static func isRevoked(_ p: (Int) -> String) -> String {
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM console_revocations WHERE nonce = \(p(1))) "
            + "OR EXISTS (SELECT 1 FROM console_revocations WHERE nonce = '\(everywhere)' AND expires_at >= \(p(2))) THEN 1 ELSE 0 END AS revoked"
    }
}

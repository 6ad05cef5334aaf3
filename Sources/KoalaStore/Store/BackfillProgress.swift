/// Where `backfill` and `reconcile` are, kept in the store so that a rerun after kill -9 continues from the
/// last page stored and every replica's console sees the last reconcile: one row per name (`backfill:stripe:
/// subscriptions` holds a cursor, `reconcile:stripe` a summary), its text and when it was written. Both
/// backends run these texts; only the placeholders differ (`?` for SQLite, `$n` for PostgreSQL).
enum BackfillProgress {
    static func createTable(real: String) -> String {
        "CREATE TABLE backfill_progress (name TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at \(real) NOT NULL)"
    }

    /// Binds: name, value, updated_at.
    static func upsert(_ p: (Int) -> String) -> String {
        "INSERT INTO backfill_progress (name, value, updated_at) VALUES (\(p(1)), \(p(2)), \(p(3))) "
            + "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
    }

    /// Binds: name.
    static func delete(_ p: (Int) -> String) -> String {
        "DELETE FROM backfill_progress WHERE name = \(p(1))"
    }

    /// Binds: the prefix, and the prefix followed by the highest character (a range scan of the primary key).
    static func select(_ p: (Int) -> String) -> String {
        "SELECT name, value, updated_at FROM backfill_progress WHERE name >= \(p(1)) AND name < \(p(2)) ORDER BY name"
    }

    /// The range bounds that `select` takes for names beginning with `prefix`.
    static func bounds(_ prefix: String) -> (String, String) { (prefix, prefix + "\u{10FFFF}") }
}

/// One row of the progress `backfill` and `reconcile` keep.
package struct ProgressEntry: Sendable, Equatable {
    /// `backfill:<source>:<phase>` or `reconcile:<source>`.
    package let name: String
    /// A cursor, or a JSON summary.
    package let value: String
    /// When it was written.
    package let updatedAt: Double

    /// An entry as read.
    package init(name: String, value: String, updatedAt: Double) {
        self.name = name
        self.value = value
        self.updatedAt = updatedAt
    }
}

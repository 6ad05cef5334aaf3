import Foundation
import GRDB
import KoalaCore
import ServiceLifecycle
import Synchronization

/// The embedded default store: one SQLite file in WAL mode with `synchronous=FULL`, so a webhook is on
/// disk before it is acknowledged. Its parts by role: schema, accept, claim and admin (`SQLiteStore+….swift`).
package final class SQLiteStore: WebhookStore {
    let pool: DatabasePool
    let path: String
    /// Wakes `run()`'s writer when accepts are queued.
    let wakeups: AsyncStream<Void>
    let wake: AsyncStream<Void>.Continuation
    let started = Mutex(false)
    /// Whether the last accept found the disk full (or the file read-only).
    let refusals = WriteRefusals()

    /// `ownsDatabase`: the serving process owns the file, so leases left by a crashed predecessor are void.
    /// Operator commands open it alongside a running server and must leave its leases alone.
    package init(path: String, ownsDatabase: Bool = true) async throws {
        self.path = path
        (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        configuration.label = "koala-router"
        // Each accept in a group commit has its own savepoint, and SQLite journals the pages a savepoint changes
        // into a temporary file: half of all write syscalls under load. Kept in memory instead (a few pages per
        // webhook, gone at commit); the database and its WAL are untouched, so durability is the same.
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA temp_store = MEMORY")
        }
        pool = try DatabasePool(path: path, configuration: configuration)
        // GRDB puts a pool's writer in synchronous=NORMAL; a crash-safe acknowledgement needs FULL.
        try await pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            let level = try Int.fetchOne(db, sql: "PRAGMA synchronous")
            guard level == 2 else { throw StoreError.notDurable("PRAGMA synchronous is \(level ?? -1), expected 2 (FULL)") }
        }
        try Self.migrator.migrate(pool)
        // A single serving process owns a SQLite file: leases left by a previous run are void.
        if ownsDatabase {
            try await pool.write { db in
                try db.execute(sql: "UPDATE outbox SET lease_until = 0 WHERE status IN (\(literal: [.pending, .waiting])) AND lease_until > 0")
            }
        }
    }

    /// Group commit: concurrent accepts share one transaction and one fsync. A request is answered only
    /// after the transaction holding it has committed; each request has its own savepoint, so one that
    /// fails does not take the others with it. `run()` is the one writer.
    let acceptQueue = Mutex<(requests: [QueuedAccept], stopped: Bool)>(([], false))

    /// Why an error means SQLite refuses writes: the disk holding the file is full, or the file (or its folder)
    /// is read-only. Nil for any other error.
    func refusal(_ error: any Error) -> String? {
        guard let error = error as? DatabaseError else { return nil }
        switch error.resultCode {
        case .SQLITE_FULL:
            return "the disk holding \(path) is full (SQLITE_FULL); free space on that volume, and accepting resumes by itself"
        case .SQLITE_READONLY:
            return "\(path) is read-only (SQLITE_READONLY); make the file and its folder writable by the service's user"
        case .SQLITE_IOERR, .SQLITE_CANTOPEN:
            return "\(path) cannot be written (\(error.resultCode)): is its volume full, gone or read-only?"
        default:
            return nil
        }
    }

    package var writeRefusal: String? { refusals.current }

    package func health() async -> StoreHealth {
        guard (try? await pool.read({ db in try Int.fetchOne(db, sql: "SELECT 1") })) == 1 else { return .unavailable }
        guard let refused = refusals.current else { return .ok }
        // The last accept was refused: try a write that needs room (64 KB), so readiness comes back by itself
        // once space does.
        do {
            try await refusals.observing(refusal) {
                try await pool.write { db in
                    try db.execute(sql: "CREATE TABLE IF NOT EXISTS koala_router_probe (id INTEGER PRIMARY KEY, room BLOB)")
                    try db.execute(sql: "INSERT OR REPLACE INTO koala_router_probe (id, room) VALUES (1, zeroblob(65536))")
                }
            }
            return .ok
        } catch {
            return .refusingWrites(refusals.current ?? refused)
        }
    }

    /// The group-commit writer: commits queued accepts until graceful shutdown (or cancellation), then
    /// refuses new ones, commits those already queued and closes the database.
    package func run() async throws {
        guard !started.withLock({ started in defer { started = true }; return started }) else { throw StoreError.stopped }
        for await _ in wakeups.cancelOnGracefulShutdown() {
            await drainAccepts()
        }
        acceptQueue.withLock { $0.stopped = true }
        await drainAccepts()
        wake.finish()
        try pool.close()
    }

    /// Opening the file migrated it: ready at once.
    package func ready() async throws {}
}

/// GRDB's rows for the shared decoders (StoreRows.swift).
extension Row: StoreRow {
    func text(_ column: String) -> String? { self[column] }
    func integer(_ column: String) -> Int64? { self[column] }
    func real(_ column: String) -> Double? { self[column] }
}

extension SQLStatement {
    /// The values as GRDB's arguments (built with SQLite's dialect, which binds no arrays).
    var arguments: StatementArguments {
        StatementArguments(values.map { value -> DatabaseValue in
            switch value {
            case .text(let text): text.databaseValue
            case .integer(let number): number.databaseValue
            case .real(let number): number.databaseValue
            case .texts: .null  // SQLite's dialect binds each element on its own (`SQLStatement.oneOf`)
            }
        })
    }
}

extension Database {
    func execute(_ statement: SQLStatement) throws { try execute(sql: statement.text, arguments: statement.arguments) }

    /// Runs a data-changing statement and returns how many rows it changed.
    func changes(_ statement: SQLStatement) throws -> Int {
        try execute(statement)
        return changesCount
    }
}

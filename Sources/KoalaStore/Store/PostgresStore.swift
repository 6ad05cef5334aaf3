import Foundation
import KoalaCore
package import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// The shared store for several replicas: one PostgreSQL database (postgres-nio's pooled client).
///
/// Same contract as `SQLiteStore`, with what sharing needs on top:
/// - dedupe across replicas by the primary key (source, webhook_id): a second replica's insert waits for the
///   first's transaction and then finds the row;
/// - claims take `FOR UPDATE SKIP LOCKED` rows and stamp a lease (`lease_until`, `lease_owner`); a replica that
///   dies mid-batch leaves leases that run out and are claimed again by another;
/// - claims run one at a time across replicas (a transaction-scoped advisory lock) so the per-person check sees
///   every lease already taken: SKIP LOCKED alone would let two replicas each claim one message of the same person;
/// - an outcome other than "delivered" is recorded only by the lease holder (or once the lease has run out);
/// - concurrent accepts commit together: one statement stores a batch (group commit, as SQLite's writer does).
///
/// `run()` runs postgres-nio's connection pool, checks durability and applies migrations; store calls wait
/// for that (within their operation timeout) and fail with its error if it failed.
package final class PostgresStore: WebhookStore {
    let client: PostgresClient
    let settings: PostgresURL
    let logger: Logger
    /// Who holds the leases this process takes.
    let owner: String
    let started = StartGate()
    /// This schema's claim lock: replicas of one service take turns, other schemas never wait for them.
    let claimLock: Int64
    let running = Mutex(false)
    let acceptQueue = Mutex<(requests: [QueuedAccept], committers: Int, stopped: Bool)>(([], 0, false))
    /// Work that `run()` starts as its own child tasks: a group-commit committer, or an ANALYZE of the outbox.
    enum Job { case commit, analyze }
    let (jobs, startJob) = AsyncStream.makeStream(of: Job.self, bufferingPolicy: .unbounded)

    static let migrationLock: Int64 = 0x6B6F_616C_615F_6D69 // "koala_mi"
    static let claimLockBase: Int64 = 0x6B6F_616C_615F_636C // "koala_cl"

    /// A claim slower than this has the outbox analyzed (`analyzeOutboxIfDue`).
    let slowClaim: Duration
    /// When this process last had PostgreSQL analyze the outbox.
    let lastAnalyze = Mutex<ContinuousClock.Instant?>(nil)
    /// Whether the last accept found the database refusing writes (disk full, read-only).
    let refusals = WriteRefusals()

    /// Reads the address (a malformed one throws here); nothing connects before `run()`.
    package init(url: String, logger: Logger, slowClaim: Duration = .milliseconds(250)) throws {
        settings = try PostgresURL(url)
        self.logger = logger
        self.slowClaim = slowClaim
        client = PostgresClient(configuration: settings.clientConfiguration, backgroundLogger: logger)
        claimLock = Self.claimLockBase ^ (Self.migrationLockKey(schema: settings.schema) ^ Self.migrationLock)
        owner = "\(ProcessInfo.processInfo.hostName)/\(ProcessInfo.processInfo.processIdentifier)/\(UUID().uuidString.prefix(8))"
    }

    /// Runs the connection pool until graceful shutdown or cancellation. Connecting, checking durability and
    /// migrating must succeed within `start_timeout_ms` (10 s), or `run()` throws (and so does every store call).
    /// The group-commit committers and the ANALYZE after a slow claim run as its children, so they end with it.
    package func run() async throws {
        guard !running.withLock({ running in defer { running = true }; return running }) else { throw StoreError.stopped }
        try await withThrowingTaskGroup(of: Void.self) { group in
            let client = self.client
            group.addTask { await client.run() }
            group.addTask { await self.runJobs() }
            do {
                try await withDeadline(Double(settings.startTimeoutMS) / 1000, "connect and migrate") { [settings, logger] in
                    try await client.withConnection { connection in
                        try await Self.checkDurable(connection, logger: logger)
                        try await Self.migrate(connection, schema: settings.schema, logger: logger)
                    }
                }
                started.settle(nil)
            } catch {
                started.settle(error)
                group.cancelAll()
                throw error
            }
            try await group.waitForAll()
            started.settle(StoreError.stopped)
        }
    }

    var timeout: Double { Double(settings.operationTimeoutMS) / 1000 }

    /// Runs one store call on a pooled connection, within the operation timeout.
    func withConnection<T: Sendable>(_ name: String, _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T) async throws -> T {
        // Start-up (connecting, migrating) has its own deadline in `run()`; the operation's starts after it.
        try await started.wait()
        return try await withDeadline(timeout, name) { [client, logger] in
            try await client.withConnection { connection in try await body(connection, logger) }
        }
    }

    /// Runs one store call in a transaction, within the operation timeout.
    func withTransaction<T: Sendable>(_ name: String, _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T) async throws -> T {
        // Start-up (connecting, migrating) has its own deadline in `run()`; the operation's starts after it.
        try await started.wait()
        return try await withDeadline(timeout, name) { [client, logger] in
            try await client.withTransaction(logger: logger) { connection in try await body(connection, logger) }
        }
    }
}

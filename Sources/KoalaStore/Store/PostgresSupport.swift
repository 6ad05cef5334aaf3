import Foundation
import KoalaCore
import PostgresNIO
import Synchronization

extension SQLStatement {
    /// The statement for postgres-nio (built with the PostgreSQL dialect).
    var query: PostgresQuery {
        var binds = PostgresBindings()
        for value in values {
            switch value {
            case .text(let text?): binds.append(text)
            case .text(nil): binds.appendNull()
            case .integer(let number): binds.append(number)
            case .real(let number): binds.append(number)
            case .texts(let texts): binds.append(texts)
            }
        }
        return PostgresQuery(unsafeSQL: text, binds: binds)
    }
}

/// Outbox states and lanes in a PostgreSQL query's text: spliced in as literals, not bound (see `OutboxStatus.sql`).
extension PostgresQuery.StringInterpolation {
    mutating func appendInterpolation(literal status: OutboxStatus) { appendInterpolation(unescaped: status.sql) }
    mutating func appendInterpolation(literal states: [OutboxStatus]) { appendInterpolation(unescaped: states.map(\.sql).joined(separator: ", ")) }
    mutating func appendInterpolation(literal lane: OutboxLane) { appendInterpolation(unescaped: lane.sql) }
}

/// PostgreSQL's rows for the shared decoders (StoreRows.swift).
extension PostgresRandomAccessRow: StoreRow {
    func text(_ column: String) throws -> String? { try get(column, as: String?.self) }
    func integer(_ column: String) throws -> Int64? { try get(column, as: Int64?.self) }
    func real(_ column: String) throws -> Double? { try get(column, as: Double?.self) }
}

extension PostgresRandomAccessRow {
    func get<T: PostgresDecodable>(_ column: String, as type: T.Type = T.self) throws -> T {
        try self[column].decode(T.self, context: .default)
    }
}

extension PostgresConnection {
    /// Runs a statement whose rows nobody reads (`SELECT pg_advisory_lock(…)`) to its end. `query` returns at
    /// the statement's first answer, and an error that comes after it (a lock wait cut off by
    /// `statement_timeout`) arrives with the rows: left unread, it is lost and the caller goes on as if it held
    /// the lock.
    func perform(_ query: PostgresQuery, logger: Logger) async throws {
        _ = try await self.query(query, logger: logger).count()
    }
}

extension PostgresRowSequence {
    /// All rows, with random access by column name.
    func rows() async throws -> [PostgresRandomAccessRow] {
        var out: [PostgresRandomAccessRow] = []
        for try await row in self { out.append(row.makeRandomAccess()) }
        return out
    }

    /// How many rows came back (queries end in `RETURNING 1` to count what they changed).
    func count() async throws -> Int {
        var n = 0
        for try await _ in self { n += 1 }
        return n
    }
}

/// Who answers a deadline-bound call first: the operation or its timer.
private final class DeadlineRace<T: Sendable>: Sendable {
    private let state = Mutex<(done: Bool, timer: Task<Void, Never>?)>((false, nil))
    let continuation: CheckedContinuation<T, any Error>

    init(_ continuation: CheckedContinuation<T, any Error>) { self.continuation = continuation }

    /// Resumes the caller unless the other side already has.
    func finish(with result: Result<T, any Error>) {
        let winner = state.withLock { s -> (won: Bool, timer: Task<Void, Never>?) in
            if s.done { return (false, nil) }
            s.done = true
            return (true, s.timer)
        }
        guard winner.won else { return }
        winner.timer?.cancel()
        continuation.resume(with: result)
    }

    func setTimer(_ timer: Task<Void, Never>) {
        let done = state.withLock { s -> Bool in
            if !s.done { s.timer = timer }
            return s.done
        }
        if done { timer.cancel() }
    }
}

/// Runs `operation`, but gives up after `seconds` without waiting for it: a request whose database is gone
/// gets its 503 promptly. The operation keeps running in the background; if it commits after all, the
/// provider's retry finds a duplicate and is answered 200, so nothing acknowledged is lost.
///
/// Deliberately unstructured (one of two such tasks in the service; the other is a backfill's read-ahead): a
/// structured deadline has to wait for the cancelled operation, and a query on a database that stopped
/// answering ends only when it answers again —
/// tried with a task group and closing the connection on cancellation, the sender then hung for good after
/// a frozen database came back (`aDatabaseThatStopsAnsweringGets503sOnTime`).
func withDeadline<T: Sendable>(_ seconds: Double, _ name: String,
                               _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        let race = DeadlineRace(continuation)
        let work = Task {
            do { race.finish(with: .success(try await operation())) } catch { race.finish(with: .failure(error)) }
        }
        race.setTimer(Task {
            try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            if Task.isCancelled { return }
            work.cancel()
            race.finish(with: .failure(StoreError.unavailable(operation: name, seconds: seconds)))
        })
    }
}

/// Opens once: store calls wait here until `run()` has connected and migrated, then pass straight through;
/// if start-up failed, every call fails with its error.
final class StartGate: Sendable {
    private enum State {
        case waiting([CheckedContinuation<Void, any Error>])
        case open
        case failed(any Error)
    }
    private let state = Mutex(State.waiting([]))

    /// Whether start-up has succeeded (never waits).
    var isOpen: Bool {
        state.withLock { if case .open = $0 { true } else { false } }
    }

    func wait() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let outcome = state.withLock { state -> Result<Void, any Error>? in
                switch state {
                case .waiting(var waiters):
                    waiters.append(continuation)
                    state = .waiting(waiters)
                    return nil
                case .open: return .success(())
                case .failed(let error): return .failure(error)
                }
            }
            if let outcome { continuation.resume(with: outcome) }
        }
    }

    /// Opens the gate (`nil`) or fails it; later calls change nothing.
    func settle(_ error: (any Error)?) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            guard case .waiting(let waiters) = state else { return [] }
            state = error.map { .failed($0) } ?? .open
            return waiters
        }
        for waiter in waiters {
            if let error { waiter.resume(throwing: error) } else { waiter.resume() }
        }
    }
}

import Foundation
import Logging
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

/// The two store backends; every store test runs against both when a PostgreSQL server is configured.
enum Backend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgres
    var testDescription: String { rawValue }

    /// Whether `scripts/test` (or the environment) named a PostgreSQL server for the tests.
    static var postgresConfigured: Bool { !(ProcessInfo.processInfo.environment["KOALA_ROUTER_TEST_POSTGRES_URL"] ?? "").isEmpty }

    /// The backends the store tests run against here: SQLite, and PostgreSQL when configured. Without it the
    /// PostgreSQL cases do not run, and `PostgresConfiguration.postgresIsConfigured` says why in one line.
    static var configured: [Backend] { postgresConfigured ? allCases : [.sqlite] }
}

/// The one place a missing PostgreSQL server is reported, instead of an error from deep inside each test.
@Suite("PostgreSQL for the tests")
struct PostgresConfiguration {
    @Test func postgresIsConfigured() {
        #expect(Backend.postgresConfigured, "no PostgreSQL server for the tests, so its cases did not run: run the tests with scripts/test, which starts one")
    }
}

struct PostgresNotConfigured: Error, CustomStringConvertible {
    var description: String {
        "KOALA_ROUTER_TEST_POSTGRES_URL is not set: run the tests with scripts/test, which starts a PostgreSQL server for them"
    }
}

/// The test PostgreSQL server's address (started by `scripts/test` through `scripts/postgres`).
func testPostgresURL() throws -> String {
    guard let url = ProcessInfo.processInfo.environment["KOALA_ROUTER_TEST_POSTGRES_URL"], !url.isEmpty else {
        throw PostgresNotConfigured()
    }
    return url
}

/// A database address of its own: the test server's database with a fresh schema, so tests never see each other's rows.
/// Start-up and store calls get more time than in production: dozens of stores start at once beside CPU-bound
/// tests on the test machine's two cores, and a test is about what the store does, not how fast a starved machine is.
/// (Tests of deadlines set their own timeouts on the URL, after these.)
func freshPostgresURL() throws -> String {
    let base = try testPostgresURL()
    let schema = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
    return base + (base.contains("?") ? "&" : "?") + "schema=" + schema + "&start_timeout_ms=30000&operation_timeout_ms=15000"
}

/// An empty store of the given backend.
func makeStore(_ backend: Backend) async throws -> any WebhookStore {
    switch backend {
    case .sqlite: return try await SQLiteStore(path: temporaryDirectory() + "/db.sqlite")
    case .postgres: return try PostgresStore(url: try freshPostgresURL(), logger: quietLogger)
    }
}

/// Runs several stores while `body` runs (replicas side by side).
func whileRunning<S: WebhookStore, T>(_ stores: [S], _ body: () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for store in stores { group.addTask { try await store.run() } }
        let result: Result<T, any Error>
        do { result = .success(try await body()) } catch { result = .failure(error) }
        group.cancelAll()
        while let _ = try? await group.next() {}
        return try result.get()
    }
}

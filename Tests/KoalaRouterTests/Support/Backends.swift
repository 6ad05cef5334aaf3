import Foundation
import Logging
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore

/// The two store backends; every store test runs against both.
enum Backend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgres
    var testDescription: String { rawValue }
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
func freshPostgresURL() throws -> String {
    let base = try testPostgresURL()
    let schema = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
    return base + (base.contains("?") ? "&" : "?") + "schema=" + schema
}

/// An empty store of the given backend.
func makeStore(_ backend: Backend) async throws -> any WebhookStore {
    switch backend {
    case .sqlite: return try await SQLiteStore(path: temporaryDirectory() + "/db.sqlite")
    case .postgres: return try await PostgresStore(url: try freshPostgresURL(), logger: quietLogger)
    }
}

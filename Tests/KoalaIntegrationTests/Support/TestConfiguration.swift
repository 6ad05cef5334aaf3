import Foundation
import HTTPTypes
@testable import KoalaApp
@testable import KoalaDelivery
import KoalaTestSupport

/// The admin token of `testConfiguration`: readiness details (`/readyz` with it), the admin API and the console.
let testAdminToken = "test-admin-token-0123456789"

/// `/readyz` with its details (the admin token).
let readinessDetails: HTTPFields = [.authorization: "Bearer \(testAdminToken)"]

/// Test configuration: shipped routes, a temp SQLite file, fast retries, the admin token.
func testConfiguration(database: String, koala: FakeKoala?, routes: String = repositoryRoot + "/routes") -> RouterConfiguration {
    var config = RouterConfiguration(environment: ["STRIPE_WEBHOOK_SECRET": testSecret])
    config.routesDirectory = routes
    config.database = database
    config.koalaAPIURL = koala?.baseURL ?? "http://127.0.0.1:9"
    config.koalaPublicKey = koala?.key
    config.delivery.linger = 0.02
    config.delivery.pollInterval = 0.01
    config.delivery.initialBackoff = 0.05
    config.delivery.maxBackoff = 0.2
    config.delivery.requestTimeout = 2
    config.reloadOnSIGHUP = false
    config.rulesPollInterval = 0
    config.adminToken = testAdminToken
    return config
}

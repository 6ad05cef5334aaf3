import Foundation
@testable import KoalaApp
@testable import KoalaDelivery
import KoalaTestSupport

/// Test configuration: shipped routes, a temp SQLite file, fast retries.
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
    return config
}

import Foundation
import HTTPTypes
import KoalaApp
import KoalaCore
import KoalaDelivery
import KoalaStore
import Logging
import Testing

let quietLogger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

/// A fresh temporary folder for one test.
func temporaryDirectory() -> String {
    let path = NSTemporaryDirectory() + "koala-router-tests/" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Polls `condition` until it holds or `timeout` passes.
func eventually(timeout: Double = 10, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try await condition() { return true }
        try? await Task.sleep(nanoseconds: 10_000_000)
    }
    return try await condition()
}

/// The repository root (tests read the shipped routes/).
let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    while url.path != "/" {
        url.deleteLastPathComponent()
        if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
    }
    return FileManager.default.currentDirectoryPath
}()

let testSecret = "whsec_koala_router_tests"

/// A Stripe-shaped event body.
func stripeEvent(id: String, type: String, created: Int = 1_732_871_520, object: JSONValue) -> [UInt8] {
    Array(JSONValue.object(["id": .string(id), "object": "event", "type": .string(type), "created": .int(Int64(created)),
                            "data": ["object": object]]).encoded().utf8)
}

func invoicePaid(id: String, email: String, amount: Int64 = 4900, created: Int = 1_732_871_520) -> [UInt8] {
    stripeEvent(id: id, type: "invoice.paid", created: created, object: [
        "id": .string("in_\(id)"), "object": "invoice", "customer_email": .string(email), "amount_paid": .int(amount),
        "currency": "usd", "customer": "cus_1", "number": "INV-1", "billing_reason": "subscription_create",
    ])
}

func stripeHeaders(_ body: [UInt8], secret: String = testSecret, timestamp: Int64 = Int64(Date().timeIntervalSince1970)) -> HTTPFields {
    [HTTPField.Name("Stripe-Signature")!: StripeVerifier.sign(body: body, secret: secret, timestamp: timestamp),
     .contentType: "application/json"]
}

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

import Foundation
import HTTPTypes
import KoalaCore
import Logging

package let quietLogger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

/// A fresh temporary folder for one test.
package func temporaryDirectory() -> String {
    let path = NSTemporaryDirectory() + "koala-router-tests/" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Polls `condition` until it holds or `timeout` passes.
package func eventually(timeout: Double = 10, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try await condition() { return true }
        try? await Task.sleep(nanoseconds: 10_000_000)
    }
    return try await condition()
}

/// The repository root (tests read the shipped routes/).
package let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    while url.path != "/" {
        url.deleteLastPathComponent()
        if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
    }
    return FileManager.default.currentDirectoryPath
}()

package let testSecret = "whsec_koala_router_tests"

/// A Stripe-shaped event body.
package func stripeEvent(id: String, type: String, created: Int = 1_732_871_520, object: JSONValue) -> [UInt8] {
    Array(JSONValue.object(["id": .string(id), "object": "event", "type": .string(type), "created": .int(Int64(created)),
                            "data": ["object": object]]).encoded().utf8)
}

package func invoicePaid(id: String, email: String, amount: Int64 = 4900, created: Int = 1_732_871_520) -> [UInt8] {
    stripeEvent(id: id, type: "invoice.paid", created: created, object: [
        "id": .string("in_\(id)"), "object": "invoice", "customer_email": .string(email), "amount_paid": .int(amount),
        "currency": "usd", "customer": "cus_1", "number": "INV-1", "billing_reason": "subscription_create",
    ])
}

package func stripeHeaders(_ body: [UInt8], secret: String = testSecret, timestamp: Int64 = Int64(Date().timeIntervalSince1970)) -> HTTPFields {
    [HTTPField.Name("Stripe-Signature")!: StripeVerifier.sign(body: body, secret: secret, timestamp: timestamp),
     .contentType: "application/json"]
}


/// Header fields from name → value pairs.
package func fields(_ pairs: [String: String]) -> HTTPFields {
    var f = HTTPFields()
    for (k, v) in pairs { f[HTTPField.Name(k)!] = v }
    return f
}

/// Runs a program to its end and returns its exit status with its standard output and error together.
/// `folder`: the working directory (default: this process's).
package func runProgram(_ executable: String, _ arguments: [String], environment: [String: String], in folder: String? = nil) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.environment = environment
    if let folder { process.currentDirectoryURL = URL(fileURLWithPath: folder) }
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, output)
}

/// SplitMix64: a repeatable random order per seed.
package struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    package init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

import Foundation
import Testing
@testable import KoalaCore
import KoalaTestSupport

/// The rule commands as an ops engineer runs them: the real binary.
@Suite("Rule commands")
struct RuleCommandTests {
    func run(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
        let binary = try #require(CrashTests.binary, "build the koala-router executable first (swift build --build-tests)")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.environment = environment.merging(["LOG_LEVEL": "critical"]) { a, _ in a }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    /// Issue 16: a broken test file never reads as a passing summary.
    @Test func aBrokenTestFileIsNoPassingSummary() throws {
        let dir = temporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir + "/tests", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: repositoryRoot + "/routes/stripe.yaml", toPath: dir + "/stripe.yaml")
        try """
            source: stripe
            tests:
              - name: a typo in a key
                webhok: x.json
                expect: []
            """.write(toFile: dir + "/tests/stripe.yaml", atomically: true, encoding: .utf8)
        let result = try run(["test", dir], environment: ["STRIPE_WEBHOOK_SECRET": "whsec_x"])
        #expect(result.status == 1)
        #expect(result.output.contains("unknown key 'webhok' in a test; did you mean 'webhook'?"), "\(result.output)")
        #expect(result.output.contains("0 passed, 0 failed, 2 error(s) in test files (above): those tests did not run"), "\(result.output)")
    }
}

import AsyncHTTPClient
import Foundation
import Testing
@testable import KoalaCore
import KoalaTestSupport

/// Issue 16, part 7: `koala-router send SOURCE FILE` signs a sample with the source's own scheme and posts it
/// to a running router — for every shipped provider — and sends nothing when it cannot sign.
@Suite("koala-router send")
struct SendCommandTests {
    static let secrets = [
        "STRIPE_WEBHOOK_SECRET": testSecret, "PADDLE_WEBHOOK_SECRET": "pdl_ntfset_send_test",
        "CHARGEBEE_WEBHOOK_USERNAME": "koala", "CHARGEBEE_WEBHOOK_PASSWORD": "s3cret:with:colons",
        "CLERK_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "LEMONSQUEEZY_WEBHOOK_SECRET": "lemon-send-test-secret",
        "RECURLY_WEBHOOK_SECRET": "recurly-send-test", "WORKOS_WEBHOOK_SECRET": "workos-send-test",
    ]

    func send(_ arguments: [String], environment: [String: String]) throws -> (status: Int32, output: String) {
        try runProgram(try #require(CrashTests.binary), ["send"] + arguments,
                       environment: environment.merging(["LOG_LEVEL": "critical"]) { a, _ in a }, in: repositoryRoot)
    }

    @Test func everyShippedProviderIsSignedAsItSignsAndAccepted() async throws {
        let binary = try #require(CrashTests.binary, "build the koala-router executable first (swift build --build-tests)")
        let koala = try await FakeKoala.start()
        defer { koala.stop() }
        let router = try CrashTests.Router(binary: binary, database: temporaryDirectory() + "/db.sqlite", koala: koala, extra: Self.secrets)
        defer { router.kill9() }
        #expect(await router.ready())
        let environment = Self.secrets.merging(["KOALA_ROUTER_URL": "http://127.0.0.1:\(router.port)"]) { $1 }
        let samples = [
            ("stripe", "invoice.paid.json"), ("paddle", "subscription.created.json"), ("chargebee", "subscription_created.json"),
            ("clerk", "user.created.json"), ("lemonsqueezy", "order_created.json"), ("recurly", "subscription.created.json"),
            ("workos", "user.created.json"),
        ]
        for (source, sample) in samples {
            let result = try send([source, "routes/samples/\(source)/\(sample)"], environment: environment)
            #expect(result.status == 0, "\(source): \(result.output)")
            #expect(result.output.hasPrefix("200 "), "\(source): \(result.output)")
            #expect(result.output.contains(#""status":"accepted""#), "\(source): \(result.output)")
        }
        // The same file again is a duplicate, not a second webhook.
        let again = try send(["stripe", "routes/samples/stripe/invoice.paid.json"], environment: environment)
        #expect(again.status == 0 && again.output.contains(#""status":"duplicate""#), "\(again.output)")
        // A wrong secret here: the router refuses it, and send says so in its status.
        var wrong = environment
        wrong["STRIPE_WEBHOOK_SECRET"] = "whsec_not_the_one"
        let refused = try send(["stripe", "routes/samples/stripe/checkout.session.completed.json"], environment: wrong)
        #expect(refused.status == 1 && refused.output.hasPrefix("401 "), "\(refused.output)")
        // Issue 28: while the rules folder is broken (a typo in another file), send still signs with the source's own
        // file, and says so: the running router, on its last good table, accepts it.
        let broken = temporaryDirectory() + "/routes"
        try FileManager.default.copyItem(atPath: repositoryRoot + "/routes", toPath: broken)
        let workos = try String(contentsOfFile: broken + "/workos.yaml", encoding: .utf8)
        try workos.replacingOccurrences(of: "\ndescription:", with: "\ndescripton:").write(toFile: broken + "/workos.yaml", atomically: true, encoding: .utf8)
        let whileBroken = try send(["stripe", "routes/samples/stripe/checkout.session.completed.json", "--routes", broken], environment: environment)
        #expect(whileBroken.status == 0 && whileBroken.output.contains(#""status":"accepted""#), "\(whileBroken.output)")
        #expect(whileBroken.output.contains("the rules folder is broken (a running router keeps serving its last good table)"), "\(whileBroken.output)")
        #expect(whileBroken.output.contains("workos.yaml:8:1: unknown key 'descripton'"), "\(whileBroken.output)")
        #expect(whileBroken.output.contains("signing with \(broken)/stripe.yaml alone, which loads"), "\(whileBroken.output)")
        #expect(koala.violations.isEmpty)
    }

    /// Issue 28: a router that is not running is said plainly.
    @Test func aRouterThatIsNotRunningIsSaidPlainly() throws {
        let port = CrashTests.freePort()
        let result = try send(["stripe", "routes/samples/stripe/invoice.paid.json", "--url", "http://127.0.0.1:\(port)"], environment: Self.secrets)
        #expect(result.status == 1)
        #expect(result.output.contains("koala-router: nothing is listening at http://127.0.0.1:\(port) (connection refused): start the router (koala-router serve) or give its address with --url; nothing was sent"),
                "\(result.output)")
        #expect(!result.output.contains("errno"))
    }

    @Test func nothingIsSentWhenItCannotSign() throws {
        let noSecret = try send(["stripe", "routes/samples/stripe/invoice.paid.json", "--url", "http://127.0.0.1:9"], environment: [:])
        #expect(noSecret.status == 2)
        #expect(noSecret.output.contains("cannot sign for source 'stripe': set STRIPE_WEBHOOK_SECRET"), "\(noSecret.output)")
        #expect(noSecret.output.contains("nothing was sent"))
        let noFile = try send(["stripe", "routes/samples/stripe/nope.json", "--url", "http://127.0.0.1:9"], environment: Self.secrets)
        #expect(noFile.status == 2 && noFile.output.contains("cannot read routes/samples/stripe/nope.json; nothing was sent"), "\(noFile.output)")
        let unknown = try send(["strpe", "routes/samples/stripe/invoice.paid.json"], environment: Self.secrets)
        #expect(unknown.status == 2 && unknown.output.contains("no rule file declares source 'strpe'"), "\(unknown.output)")
    }
}

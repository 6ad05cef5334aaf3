import Foundation
import HTTPTypes
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

/// Every shipped rule file with its sample payloads: signed the provider's way, accepted, routed to the
/// expected Koala messages with no problems.
@Suite("Shipped routes")
struct ShippedRoutesTests {
    static let environment = [
        "STRIPE_WEBHOOK_SECRET": "whsec_stripe_test",
        "PADDLE_WEBHOOK_SECRET": "pdl_ntfset_01_test",
        "CHARGEBEE_WEBHOOK_USERNAME": "chargebee",
        "CHARGEBEE_WEBHOOK_PASSWORD": "cb-pass-0123456789",
        "LEMONSQUEEZY_WEBHOOK_SECRET": "lemon-secret-0123456",
        "CLERK_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "WORKOS_WEBHOOK_SECRET": "workos-secret-012345",
        "RECURLY_WEBHOOK_SECRET": "354fab5bd35f5a0d50845ee7e30165244468b13c2c343f104e4e730a59326d9d",
    ]

    func sample(_ source: String, _ name: String) throws -> [UInt8] {
        let path = "\(repositoryRoot)/routes/samples/\(source)/\(name).json"
        return [UInt8](try #require(FileManager.default.contents(atPath: path)))
    }

    /// Headers as each provider sends them.
    func signed(_ source: String, _ body: [UInt8], now: Date) -> HTTPFields {
        let env = Self.environment
        let seconds = Int64(now.timeIntervalSince1970)
        switch source {
        case "stripe":
            return fields(["Stripe-Signature": StripeVerifier.sign(body: body, secret: env["STRIPE_WEBHOOK_SECRET"]!, timestamp: seconds)])
        case "paddle":
            let h = Hex.encode(Crypto.hmac(.sha256, key: env["PADDLE_WEBHOOK_SECRET"]!, data: Array("\(seconds):".utf8) + body))
            return fields(["Paddle-Signature": "ts=\(seconds);h1=\(h)"])
        case "chargebee":
            return fields(["Authorization": "Basic " + Base64.encode(Array("chargebee:cb-pass-0123456789".utf8))])
        case "lemonsqueezy":
            return fields(["X-Signature": Hex.encode(Crypto.hmac(.sha256, key: env["LEMONSQUEEZY_WEBHOOK_SECRET"]!, data: body)),
                           "X-Event-Name": "order_created"])
        case "clerk":
            let key = StandardWebhooksVerifier.decodeSecret(env["CLERK_WEBHOOK_SECRET"]!)!
            return fields(["svix-id": "msg_2koalaSvix0001", "svix-timestamp": String(seconds),
                           "svix-signature": StandardWebhooksVerifier.sign(id: "msg_2koalaSvix0001", timestamp: seconds, body: body, key: key)])
        case "workos":
            let ms = seconds * 1000
            let h = Hex.encode(Crypto.hmac(.sha256, key: env["WORKOS_WEBHOOK_SECRET"]!, data: Array("\(ms).".utf8) + body))
            return fields(["WorkOS-Signature": "t=\(ms), v1=\(h)"])
        case "recurly":
            let ms = seconds * 1000
            let h = Hex.encode(Crypto.hmac(.sha256, key: env["RECURLY_WEBHOOK_SECRET"]!, data: Array("\(ms).".utf8) + body))
            return fields(["recurly-signature": "\(ms),\(h)"])
        default:
            return [:]
        }
    }

    struct Expected {
        let source: String
        let sample: String
        let webhookID: String?
        let outputs: [String]
        let identity: KoalaIdentity
        let account: KoalaIdentity?
    }

    static let cases: [Expected] = [
        Expected(source: "stripe", sample: "invoice.paid", webhookID: "evt_1QkoalaInvoicePaid0001", outputs: ["payment-succeeded/track"],
                 identity: KoalaIdentity(email: "ada.lovelace@analytical-engines.io"), account: nil),
        Expected(source: "stripe", sample: "checkout.session.completed", webhookID: "evt_1QkoalaCheckout0001",
                 outputs: ["checkout-completed/track", "checkout-completed/identify"],
                 identity: KoalaIdentity(email: "ada.lovelace@analytical-engines.io"), account: nil),
        Expected(source: "paddle", sample: "customer.created", webhookID: "evt_01hkoala0paddle0customer0001",
                 outputs: ["customer-upserted/identify"],
                 identity: KoalaIdentity(email: "grace.hopper@compilers.dev"), account: nil),
        Expected(source: "chargebee", sample: "subscription_created", webhookID: "ev_koala_chargebee_0001",
                 outputs: ["subscription-started/track", "subscription-revenue/account", "subscription-revenue/track"],
                 identity: KoalaIdentity(email: "katherine@orbital-mechanics.io"), account: KoalaIdentity(domain: "orbital-mechanics.io")),
        Expected(source: "lemonsqueezy", sample: "order_created", webhookID: "order_created:orders:1001:2024-11-29T09:12:00.000000Z",
                 outputs: ["order-paid/track", "order-paid/identify"],
                 identity: KoalaIdentity(email: "margaret@apollo-guidance.io"), account: nil),
        Expected(source: "clerk", sample: "user.created", webhookID: "msg_2koalaSvix0001",
                 outputs: ["user-signed-up/track", "user-signed-up/identify"],
                 identity: KoalaIdentity(email: "alan@bletchley-park.io"), account: nil),
        Expected(source: "recurly", sample: "account.created", webhookID: "rjxkoala0acct0created",
                 outputs: ["account-status/account"],
                 identity: KoalaIdentity(), account: KoalaIdentity(accountID: "acct_koala_0001")),
        Expected(source: "workos", sample: "user.created", webhookID: "event_01JKOALAWORKOS0000000001",
                 outputs: ["user-signed-up/track", "user-signed-up/identify"],
                 identity: KoalaIdentity(email: "barbara.liskov@substitution.dev"), account: nil),
        Expected(source: "workos", sample: "organization.created", webhookID: "event_01JKOALAWORKOS0000000002",
                 outputs: ["organization-upserted/account"],
                 identity: KoalaIdentity(), account: KoalaIdentity(domain: "substitution.dev")),
        Expected(source: "clerk", sample: "organizationMembership.created", webhookID: "msg_2koalaSvix0001",
                 outputs: ["membership-joined/track", "membership-joined/identify"],
                 identity: KoalaIdentity(email: "alan@bletchley-park.io"), account: nil),
    ]

    /// Issue 14, part 7: Lemon Squeezy sends no event id. The same event serialised again (keys in another
    /// order, other spacing) is the same webhook, so its revenue is never counted twice; the same order
    /// changed later is a new one.
    @Test func lemonSqueezyEventsAreKnownByTheirIdentityNotTheirBytes() async throws {
        let table = try RuleLoader(environment: Self.environment).load(directory: repositoryRoot + "/routes")
        let store = try await SQLiteStore(path: temporaryDirectory() + "/db.sqlite")
        try await store.whileRunning {
            let ingest = Ingest(rules: RulesHolder(table), store: store, linger: 0, logger: quietLogger)
            let original = try sample("lemonsqueezy", "order_created")
            let reserialised = Array(try JSONValue.parse(original).encoded().utf8)
            #expect(reserialised != original)
            guard case .object(var event) = try JSONValue.parse(original), case .object(var data)? = event["data"],
                  case .object(var attributes)? = data["attributes"] else { Issue.record("sample shape"); return }
            attributes["updated_at"] = "2024-11-30T10:00:00.000000Z"
            data["attributes"] = .object(attributes)
            event["data"] = .object(data)
            let changed = Array(JSONValue.object(event).encoded().utf8)
            var answers: [JSONValue] = []
            for body in [original, reserialised, changed] {
                let now = Date()
                answers.append(await ingest.handle(source: "lemonsqueezy", headers: signed("lemonsqueezy", body, now: now), body: body, now: now).body)
            }
            #expect(answers.map { $0["status"] } == ["accepted", "duplicate", "accepted"])
            #expect(answers.map { $0["webhook_id"] } == ["order_created:orders:1001:2024-11-29T09:12:00.000000Z",
                                                         "order_created:orders:1001:2024-11-29T09:12:00.000000Z",
                                                         "order_created:orders:1001:2024-11-30T10:00:00.000000Z"])
        }
    }

    /// Issue 26, finding 9: a Recurly notification without an `id` is accepted (not 400, which Recurly retries
    /// forever) under an id derived from what it says; its retry is a duplicate; another notification is not.
    @Test func aRecurlyNotificationWithoutAnIdGetsAStableDerivedId() async throws {
        let table = try RuleLoader(environment: Self.environment).load(directory: repositoryRoot + "/routes")
        let store = try await SQLiteStore(path: temporaryDirectory() + "/db.sqlite")
        try await store.whileRunning {
            let ingest = Ingest(rules: RulesHolder(table), store: store, linger: 0, logger: quietLogger)
            let expired = Array(#"{"object_type":"subscription","event_type":"expired","event_time":"2025-04-01T00:00:00Z","account_code":"acct_8","uuid":"sub_8"}"#.utf8)
            let retry = Array(#"{"uuid":"sub_8","account_code":"acct_8","event_time":"2025-04-01T00:00:00Z","event_type":"expired","object_type":"subscription"}"#.utf8)
            let renewed = Array(#"{"object_type":"subscription","event_type":"renewed","event_time":"2025-03-01T00:00:00Z","account_code":"acct_8","uuid":"sub_8"}"#.utf8)
            var answers: [Ingest.Answer] = []
            for body in [expired, retry, renewed] {
                let now = Date()
                answers.append(await ingest.handle(source: "recurly", headers: signed("recurly", body, now: now), body: body, now: now))
            }
            #expect(answers.map(\.status) == [.ok, .ok, .ok])
            #expect(answers.map { $0.body["status"] } == ["accepted", "duplicate", "accepted"])
            #expect(answers.map { $0.body["webhook_id"] } == ["subscription.expired:sub_8:2025-04-01T00:00:00Z",
                                                               "subscription.expired:sub_8:2025-04-01T00:00:00Z",
                                                               "subscription.renewed:sub_8:2025-03-01T00:00:00Z"])
        }
    }

    @Test(arguments: cases.indices)
    func sampleIsAcceptedAndRouted(_ index: Int) async throws {
        let expected = Self.cases[index]
        let table = try RuleLoader(environment: Self.environment).load(directory: repositoryRoot + "/routes")
        #expect(table.warnings.isEmpty)
        #expect(table.sources[expected.source] != nil)
        let store = try await SQLiteStore(path: temporaryDirectory() + "/db.sqlite")
        try await store.whileRunning {
            let ingest = Ingest(rules: RulesHolder(table), store: store, linger: 0, logger: quietLogger)
            let body = try sample(expected.source, expected.sample)
            let now = Date()

            let answer = await ingest.handle(source: expected.source, headers: signed(expected.source, body, now: now), body: body, now: now)
            #expect(answer.status == .ok, "\(answer.body)")
            #expect(answer.body["status"] == "accepted")
            #expect(answer.body["dead_lettered"] == 0)
            let webhookID = expected.webhookID ?? Hex.encode(Crypto.digest(.sha256, body))
            #expect(answer.body["webhook_id"] == .string(webhookID))

            let due = try await store.claimDue(now: now.addingTimeInterval(1), limit: 100, lease: 60)
            let routed = due.map { "\($0.route)/\($0.endpoint == .account ? "account" : $0.kind.rawValue)" }
            #expect(Set(routed) == Set(expected.outputs))
            for message in due {
                if message.endpoint == .account {
                    // The account, with the person its traits came with (when the route names one).
                    #expect(KoalaIdentity(domain: message.identity.domain, accountID: message.identity.accountID) == expected.account)
                } else {
                    #expect(message.identity == expected.identity)
                }
                let item = try JSONValue.parse(Array(message.itemJSON.utf8))
                #expect(item["message_id"] == .string(message.messageID))
                #expect(item["sent_at"]?.stringValue.flatMap(Timestamps.parseISO) != nil)
            }
            // A retry of the same delivery is a duplicate.
            let again = await ingest.handle(source: expected.source, headers: signed(expected.source, body, now: now), body: body, now: now)
            #expect(again.body["status"] == "duplicate")
            // And a tampered body is refused.
            var tampered = body
            tampered[tampered.count / 2] ^= 0x20
            if expected.source != "chargebee" {
                let refused = await ingest.handle(source: expected.source, headers: signed(expected.source, body, now: now), body: tampered, now: now)
                #expect(refused.status == .unauthorized)
            }
        }
    }

    @Test func everySourceNamesItsSecretByConvention() throws {
        let table = try RuleLoader(environment: [:]).load(directory: repositoryRoot + "/routes")
        for (name, source) in table.sources {
            #expect(source.verifier == nil)
            let variable = name == "chargebee" ? "CHARGEBEE_WEBHOOK_USERNAME" : "\(name.uppercased())_WEBHOOK_SECRET"
            #expect(source.disabledReason?.contains("set \(variable)") == true || (name == "chargebee" && source.disabledReason?.contains("set CHARGEBEE_WEBHOOK_PASSWORD") == true),
                    "\(name): \(source.disabledReason ?? "")")
        }
    }
}

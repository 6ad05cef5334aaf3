import Foundation
import HTTPTypes
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

/// One mapping, per provider: the same objects read through the provider's list API (the fake, paging two at a
/// time) or sent as that provider's webhooks leave Koala with the same account traits; the backfill names the
/// same people, sends no lifecycle event, and a second run sends nothing.
@Suite("Backfill, per provider")
struct BackfillProviderTests {
    /// One object, as its webhook (sample file) and where the list API holds it.
    struct Object {
        let webhook: JSONValue
        let collection: String
        /// The list entry, from the webhook body (the object itself, or Chargebee's entry wrapping it).
        let entry: JSONValue
    }

    struct Case: CustomTestStringConvertible, Sendable {
        let provider: ProviderKind
        let objects: @Sendable () throws -> [Object]
        /// People the backfill identifies.
        let people: Set<String>
        let accounts: Set<String>
        var testDescription: String { provider.rawValue }
    }

    static func sample(_ path: String) throws -> JSONValue {
        try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: repositoryRoot + "/routes/samples/" + path + ".json"))))
    }

    static func object(_ path: String, _ collection: String, entry: (JSONValue) -> JSONValue? = { $0["data"] }) throws -> Object {
        let webhook = try sample(path)
        return Object(webhook: webhook, collection: collection, entry: try #require(entry(webhook)))
    }

    /// A webhook body of `provider` around `object` (for objects no sample event carries).
    static func event(_ provider: ProviderKind, type: String, id: String, _ object: JSONValue) -> JSONValue {
        switch provider {
        case .clerk: ["object": "event", "type": .string(type), "timestamp": 1_732_871_590_000, "data": object]
        default: ["id": .string(id), "event": .string(type), "created_at": "2024-11-29T09:13:00.000Z", "data": object]
        }
    }

    static let clerkOrganization: JSONValue = [
        "object": "organization", "id": "org_2koalaClerkOrg00001", "name": "Bletchley Park", "slug": "bletchley-park",
        "created_at": 1_732_871_590_000, "updated_at": 1_732_871_590_000, "members_count": 1, "max_allowed_memberships": 5,
        "public_metadata": [:], "private_metadata": [:],
    ]

    static let cases: [Case] = [
        Case(provider: .paddle, objects: {
            [try object("paddle/discount.created", "discounts"), try object("paddle/customer.created", "customers"),
             try object("paddle/subscription.updated.discount", "subscriptions")]
        }, people: ["grace.hopper@compilers.dev"], accounts: ["compilers.dev"]),
        Case(provider: .chargebee, objects: {
            let created = try sample("chargebee/subscription_created")
            let customer = try #require(created["content"]?["customer"])
            return [Object(webhook: created, collection: "customers", entry: ["customer": customer]),
                    Object(webhook: created, collection: "subscriptions", entry: try #require(created["content"]))]
        }, people: [], accounts: []),
        Case(provider: .lemonsqueezy, objects: {
            [try object("lemonsqueezy/snapshot.customer", "customers"), try object("lemonsqueezy/subscription_updated.trial-converted", "subscriptions")]
        }, people: ["grace@cobol-works.io"], accounts: ["cobol-works.io"]),
        Case(provider: .clerk, objects: {
            [try object("clerk/user.created", "users"),
             Object(webhook: event(.clerk, type: "organization.created", id: "", clerkOrganization), collection: "organizations", entry: clerkOrganization),
             try object("clerk/organizationDomain.updated", "domains:org_2koalaClerkOrg00001"),
             try object("clerk/organizationMembership.created", "memberships:org_2koalaClerkOrg00001")]
        }, people: [], accounts: ["bletchley-park.io"]),
        Case(provider: .workos, objects: {
            [try object("workos/user.created", "users"), try object("workos/organization.created", "organizations"),
             try object("workos/organization_membership.created", "memberships:org_01JKOALAWORKOSORG00000001")]
        }, people: ["barbara.liskov@substitution.dev"], accounts: ["substitution.dev"]),
    ]

    func signed(_ provider: ProviderKind, _ body: [UInt8], index: Int, now: Date) -> HTTPFields {
        guard provider == .clerk else { return ShippedRoutesTests().signed(provider.rawValue, body, now: now) }
        let seconds = Int64(now.timeIntervalSince1970), id = "msg_backfill_\(index)"
        let key = StandardWebhooksVerifier.decodeSecret(BackfillTests.environment["CLERK_WEBHOOK_SECRET"]!)!
        return fields(["svix-id": id, "svix-timestamp": String(seconds),
                       "svix-signature": StandardWebhooksVerifier.sign(id: id, timestamp: seconds, body: body, key: key)])
    }

    @Test("The same objects backfilled or sent as webhooks leave the same account traits", arguments: cases)
    func oneMapping(_ c: Case) async throws {
        let objects = try c.objects()
        // As webhooks.
        let viaWebhooks = try await makeStore(.sqlite)
        let webhookAccounts = try await viaWebhooks.whileRunning {
            let rig = try BackfillTests.Rig(store: viaWebhooks)
            let now = Date()
            var seen = Set<JSONValue>()
            for (index, object) in objects.enumerated() where seen.insert(object.webhook).inserted {
                let body = Array(object.webhook.encoded().utf8)
                let answer = await rig.ingest.handle(source: c.provider.rawValue, headers: signed(c.provider, body, index: index, now: now), body: body, now: now)
                #expect(answer.status == .ok, "\(answer.body.encoded())")
            }
            return try await rig.sent().accounts
        }

        // As a backfill.
        let api = try await FakeProviderAPI.start(c.provider)
        defer { api.stop() }
        for (name, group) in Dictionary(grouping: objects, by: \.collection) { api.set(name, group.map(\.entry)) }
        let store = try await makeStore(.sqlite)
        try await store.whileRunning {
            let rig = try BackfillTests.Rig(store: store)
            let summary = try await rig.backfill.run(BackfillTests.options(api))
            #expect(summary.total == objects.count, "\(summary.objects)")
            #expect(summary.deadLettered == 0, "\(summary)")
            let sent = try await rig.sent()
            #expect(!sent.events.contains { $0.name != "MRR Changed" }, "a backfill tells no moment: \(sent.events.map(\.name))")
            #expect(Set(sent.accounts.keys) == Set(webhookAccounts.keys))
            for (domain, traits) in webhookAccounts {
                #expect(sent.accounts[domain] == traits, "\(domain): backfill \(JSONValue.object(sent.accounts[domain] ?? [:]).encoded()) vs webhooks \(JSONValue.object(traits).encoded())")
            }
            #expect(c.accounts.isSubset(of: Set(sent.accounts.keys)), "\(sent.accounts.keys)")
            #expect(c.people.isSubset(of: Set(sent.people.keys)), "\(sent.people.keys)")
            #expect(!sent.messages.contains { $0.itemJSON.contains("null") })

            let again = try await rig.backfill.run(BackfillTests.options(api))
            #expect(again.messages == 0 && again.stored == 0, "\(again)")
            #expect(try await rig.sent().messages.isEmpty)
        }
    }
}

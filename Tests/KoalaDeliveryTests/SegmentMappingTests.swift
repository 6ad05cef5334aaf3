import Foundation
import Testing
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

/// Issue 15, part 2: Koala messages as Segment-compatible calls, checked against Segment's documented shape
/// (type, messageId, timestamp, userId or anonymousId; 32 KB per call, 500 KB per batch).
@Suite("Segment-compatible mapping")
struct SegmentMappingTests {
    func message(_ seq: Int64, identity: KoalaIdentity, endpoint: KoalaEndpoint = .person, kind: KoalaMessage.Kind, item: JSONValue) -> OutboxMessage {
        OutboxMessage(seq: seq, messageID: "m\(seq)", source: "stripe", route: "r", endpoint: endpoint, kind: kind, identity: identity,
                      itemJSON: item.encoded(), eventTime: Date(timeIntervalSince1970: Double(seq)), createdAt: Date(), attempts: 0)
    }

    var library: JSONValue { ["name": "koala-router", "version": .string(KoalaRouterVersion.string)] }

    @Test func aTrackIsATrackCallByTheEmail() throws {
        let m = message(1, identity: KoalaIdentity(email: "ada@acme.io"), kind: .track, item: [
            "type": "track", "event": "Payment Succeeded", "message_id": "m1", "sent_at": "2024-11-29T09:12:00.000Z",
            "properties": ["amount": 49, "currency": "USD"],
        ])
        let call = try SegmentMapping.call(m).get()
        #expect(call == [
            "type": "track", "event": "Payment Succeeded", "userId": "ada@acme.io", "messageId": "m1",
            "timestamp": "2024-11-29T09:12:00.000Z", "properties": ["amount": 49, "currency": "USD"],
            "context": ["library": library, "traits": ["email": "ada@acme.io"]],
        ])
    }

    /// A rule's `person.user_id` is the userId; the email still travels as a trait.
    @Test func aRulesUserIDIsTheUserId() throws {
        let m = message(7, identity: KoalaIdentity(email: "ada@acme.io", userID: "cus_42"), kind: .track,
                        item: ["type": "track", "event": "Payment Succeeded", "message_id": "m7", "sent_at": "2024-11-29T09:12:00.000Z"])
        let call = try SegmentMapping.call(m).get()
        #expect(call["userId"] == "cus_42")
        #expect(call["context"]?["traits"] == ["email": "ada@acme.io"])
    }

    @Test func anIdentifyCarriesTheEmailAsATrait() throws {
        let m = message(2, identity: KoalaIdentity(email: "ada@acme.io"), kind: .identify, item: [
            "type": "identify", "message_id": "m2", "sent_at": "2024-11-29T09:12:00.000Z", "traits": ["name": "Ada"],
        ])
        let call = try SegmentMapping.call(m).get()
        #expect(call["type"] == "identify")
        #expect(call["userId"] == "ada@acme.io")
        #expect(call["traits"] == ["name": "Ada", "email": "ada@acme.io"])
        #expect(call["context"] == ["library": library])
    }

    @Test func aVisitorKnownByProfileIDIsAnonymous() throws {
        let m = message(3, identity: KoalaIdentity(profileID: "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"), kind: .track,
                        item: ["type": "track", "event": "Signed Up", "message_id": "m3", "sent_at": "2024-11-29T09:12:00.000Z"])
        let call = try SegmentMapping.call(m).get()
        #expect(call["anonymousId"] == "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba")
        #expect(call["userId"] == nil)
        #expect(call["properties"] == [:])
    }

    /// Issue 26, finding 10: account traits are a group call of the person they came with into the billing
    /// customer's group (group_id), the domain a trait; two customers on one domain stay two groups; no
    /// anonymous user is invented.
    @Test func anAccountIsAGroupCallOfItsPersonIntoTheBillingCustomer() throws {
        let m = message(4, identity: KoalaIdentity(email: "ada@acme.io", domain: "acme.io"), endpoint: .account, kind: .identify, item: [
            "type": "identify", "message_id": "m4", "sent_at": "2024-11-29T09:12:00.000Z",
            "traits": ["billing_status": "active", "mrr": 49, "group_id": "cus_1"],
        ])
        let call = try SegmentMapping.call(m).get()
        #expect(call == [
            "type": "group", "groupId": "cus_1", "userId": "ada@acme.io", "messageId": "m4",
            "timestamp": "2024-11-29T09:12:00.000Z", "traits": ["billing_status": "active", "mrr": 49, "group_id": "cus_1", "domain": "acme.io"],
            "context": ["library": library],
        ])
        let other = message(5, identity: KoalaIdentity(email: "bob@acme.io", domain: "acme.io", userID: "cus_2"), endpoint: .account, kind: .identify,
                            item: ["type": "identify", "message_id": "m5", "traits": ["group_id": "cus_2", "plan": "Pro"]])
        let second = try SegmentMapping.call(other).get()
        #expect(second["groupId"] == "cus_2" && second["userId"] == "cus_2" && second["anonymousId"] == nil)
        // Without a group_id the group is the account's domain (or account id).
        let byID = message(6, identity: KoalaIdentity(email: "eve@acme.io", accountID: "acct_1"), endpoint: .account, kind: .identify,
                           item: ["type": "identify", "message_id": "m6", "traits": ["plan": "Pro"]])
        let third = try SegmentMapping.call(byID).get()
        #expect(third["groupId"] == "acct_1" && third["traits"]?["account_id"] == "acct_1")
        // A visitor known by profile id joins as that anonymous visitor; nobody at all is refused, never invented.
        let visitor = message(7, identity: KoalaIdentity(profileID: "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba", domain: "acme.io"), endpoint: .account,
                              kind: .identify, item: ["type": "identify", "message_id": "m7", "traits": ["plan": "Pro"]])
        #expect(try SegmentMapping.call(visitor).get()["anonymousId"] == "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba")
        let nobody = message(8, identity: KoalaIdentity(domain: "acme.io"), endpoint: .account, kind: .identify,
                             item: ["type": "identify", "message_id": "m8", "traits": ["plan": "Pro"]])
        #expect(SegmentMapping.call(nobody) == .failure(.init(reason: "the account traits name no person: a group call needs the user who belongs to the group")))
    }

    @Test func aCallOverThirtyTwoKilobytesIsRefused() {
        let big = message(6, identity: KoalaIdentity(email: "ada@acme.io"), kind: .track,
                          item: ["type": "track", "event": "E", "message_id": "m6", "properties": ["blob": .string(String(repeating: "x", count: 33_000))]])
        #expect(SegmentMapping.call(big) == .failure(.init(reason: "the call is over Segment's 32 KB limit per message")))
        let plan = SegmentMapping.plan([big])
        #expect(plan.batches.isEmpty)
        #expect(plan.refused.map(\.messageID) == ["m6"])
    }

    /// Many people per request, in event-time order, and a new request before 500 KB.
    @Test func batchesHoldManyPeopleAndStayUnderTheLimit() throws {
        let messages = (1...60).map { i in
            message(Int64(i), identity: KoalaIdentity(email: "u\(i % 7)@acme.io"), kind: .track,
                    item: ["type": "track", "event": "E", "message_id": .string("m\(i)"), "properties": ["pad": .string(String(repeating: "p", count: 20_000))]])
        }
        let plan = SegmentMapping.plan(messages.reversed())
        #expect(plan.refused.isEmpty)
        #expect(plan.batches.flatMap(\.messageIDs) == (1...60).map { "m\($0)" })
        #expect(plan.batches.count == 3)
        for batch in plan.batches {
            #expect(batch.body.utf8.count <= SegmentMapping.maxBatchBytes)
            let body = try JSONValue.parse(Array(batch.body.utf8))
            guard case .array(let calls)? = body["batch"] else { Issue.record("no batch array"); continue }
            #expect(calls.count == batch.messageIDs.count)
            #expect(calls.allSatisfy { $0["messageId"] != nil && $0["type"] != nil && $0["userId"] != nil })
        }
    }
}

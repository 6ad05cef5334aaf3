import AsyncHTTPClient
import Foundation
import Testing
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

/// Issue 15, step 2: the requests the Segment-compatible mapping builds are accepted by a strict fake of
/// the API, with the write key as Basic auth; a wrong key, a retryable answer and a refusal mean what they
/// mean for Koala.
@Suite("Segment-compatible client")
struct SegmentClientTests {
    func messages() -> [OutboxMessage] {
        func message(_ seq: Int64, _ identity: KoalaIdentity, _ endpoint: KoalaEndpoint, _ kind: KoalaMessage.Kind, _ item: JSONValue) -> OutboxMessage {
            OutboxMessage(seq: seq, messageID: "m\(seq)", source: "stripe", route: "r", endpoint: endpoint, kind: kind, identity: identity,
                          itemJSON: item.encoded(), eventTime: Date(timeIntervalSince1970: Double(seq)), createdAt: Date(), attempts: 0)
        }
        let at: JSONValue = "2024-11-29T09:12:00.000Z"
        return [
            message(1, KoalaIdentity(email: "ada@acme.io"), .person, .track,
                    ["type": "track", "event": "Payment Succeeded", "message_id": "m1", "sent_at": at, "properties": ["amount": 49]]),
            message(2, KoalaIdentity(email: "ada@acme.io"), .person, .identify, ["type": "identify", "message_id": "m2", "sent_at": at, "traits": ["name": "Ada"]]),
            message(3, KoalaIdentity(profileID: "3e6a2c18-3b02-40c4-b8d2-1842c193d3ba"), .person, .track,
                    ["type": "track", "event": "Signed Up", "message_id": "m3", "sent_at": at]),
            message(4, KoalaIdentity(email: "ada@acme.io", domain: "acme.io"), .account, .identify,
                    ["type": "identify", "message_id": "m4", "sent_at": at, "traits": ["billing_status": "active", "group_id": "cus_1"]]),
        ]
    }

    @Test func theStrictFakeAcceptsWhatTheMappingBuilds() async throws {
        let fake = try await FakeSegment.start()
        defer { fake.stop() }
        let client = SegmentClient(http: HTTPClient.shared, baseURL: fake.baseURL, writeKey: fake.writeKey, timeout: 5)
        let plan = SegmentMapping.plan(messages())
        #expect(plan.batches.count == 1)
        for batch in plan.batches { #expect(await client.send(batch) == .delivered(status: 200)) }
        #expect(fake.violations.isEmpty, "\(fake.violations)")
        #expect(fake.calls.map { $0["messageId"] } == ["m1", "m2", "m3", "m4"])
        #expect(fake.calls.map { $0["type"] } == ["track", "identify", "track", "group"])
    }

    @Test func answersMeanWhatTheyMeanForKoala() async throws {
        let fake = try await FakeSegment.start()
        defer { fake.stop() }
        let batch = try #require(SegmentMapping.plan(messages()).batches.first)
        // A wrong (or revoked) write key: refused, not retried.
        let wrongKey = SegmentClient(http: HTTPClient.shared, baseURL: fake.baseURL, writeKey: "wk_revoked", timeout: 5)
        guard case .rejected(401, _) = await wrongKey.send(batch) else { Issue.record("a wrong write key is not a rejection"); return }
        let client = SegmentClient(http: HTTPClient.shared, baseURL: fake.baseURL + "/", writeKey: fake.writeKey, timeout: 5)
        fake.script([(503, ""), (429, ""), (400, #"{"success":false,"message":"bad"}"#)])
        #expect(await client.send(batch) == .retry(.status(503), retryAfter: nil))
        #expect(await client.send(batch) == .retry(.status(429), retryAfter: nil))
        #expect(await client.send(batch) == .rejected(status: 400, body: #"{"success":false,"message":"bad"}"#))
        #expect(await client.send(batch) == .delivered(status: 200))
        #expect(fake.calls.count == 4)
        // Nothing listening: a connection error, retried.
        let nowhere = SegmentClient(http: HTTPClient.shared, baseURL: "http://127.0.0.1:1", writeKey: "k", timeout: 2)
        guard case .retry(.connection, _) = await nowhere.send(batch) else { Issue.record("a refused connection is not retried"); return }
    }

    /// The fake is strict: it refuses what the API refuses, so the test above could fail.
    @Test func theFakeRefusesWhatTheAPIRefuses() {
        #expect(FakeSegment.validate(["type": "track", "messageId": "m", "timestamp": "2024-11-29T09:12:00.000Z", "userId": "u"]) == ["a track without event"])
        #expect(FakeSegment.validate(["type": "group", "messageId": "m", "timestamp": "2024-11-29T09:12:00.000Z", "groupId": "g"])
                == ["a call without userId or anonymousId"])
        #expect(FakeSegment.validate(["type": "identify", "timestamp": "yesterday", "userId": "u", "traits": ["x": .null]])
                == ["a call without messageId", "a call without an ISO timestamp", "null in identify traits.x"])
    }
}

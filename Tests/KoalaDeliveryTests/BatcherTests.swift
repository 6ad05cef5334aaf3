import Foundation
import Testing
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

@Suite("Batching per person")
struct BatcherTests {
    func message(_ seq: Int64, _ email: String, _ kind: KoalaMessage.Kind = .track, time: Double? = nil, endpoint: KoalaEndpoint = .person) -> OutboxMessage {
        OutboxMessage(seq: seq, messageID: "m\(seq)", source: "s", route: "r", endpoint: endpoint, kind: kind,
                      identity: endpoint == .person ? KoalaIdentity(email: email) : KoalaIdentity(domain: email),
                      itemJSON: #"{"message_id":"m\#(seq)","type":"\#(kind.rawValue)"}"#,
                      eventTime: Date(timeIntervalSince1970: time ?? Double(seq)), createdAt: Date(), attempts: 0)
    }

    /// Splitting a rejected request (issue 14, part 8): two requests of the first and second half, in order,
    /// each a valid request for the same person.
    @Test func aRequestSplitsInHalvesInOrder() throws {
        let messages = [message(1, "a@x.io"), message(2, "a@x.io", .identify), message(3, "a@x.io"), message(4, "a@x.io"), message(5, "a@x.io", .identify)]
        let batch = try #require(Batcher.plan(messages).first?.first)
        let halves = batch.halves()
        #expect(halves.map(\.seqs) == [[1, 2], [3, 4, 5]])
        #expect(halves.map(\.messageIDs) == [["m1", "m2"], ["m3", "m4", "m5"]])
        let second = try JSONValue.parse(Array(halves[1].body.utf8))
        #expect(second["email"] == "a@x.io")
        #expect(second["events"] == [["message_id": "m3", "type": "track"], ["message_id": "m4", "type": "track"]])
        #expect(second["identifies"] == [["message_id": "m5", "type": "identify"]])
        #expect(halves[0].halves().map(\.seqs) == [[1], [2]])
        #expect(halves[0].halves()[0].halves().isEmpty)
    }

    @Test func seventyFiveEventsForOnePersonMakeThreeRequests() {
        let plan = Batcher.plan((1...75).map { message($0, "a@x.io") })
        #expect(plan.count == 1)
        #expect(plan[0].map(\.seqs.count) == [30, 30, 15])
        #expect(plan[0].flatMap(\.seqs) == Array(1...75))
    }

    @Test func eventsAndIdentifiesEachCapAtThirty() {
        let messages = (1...40).map { message($0, "a@x.io", .track) } + (41...80).map { message($0, "a@x.io", .identify) }
        let batches = Batcher.plan(messages)[0]
        for batch in batches {
            let body = try! JSONValue.parse(Array(batch.body.utf8))
            if case .array(let e)? = body["events"] { #expect(e.count <= 30) }
            if case .array(let i)? = body["identifies"] { #expect(i.count <= 30) }
        }
        #expect(batches.flatMap(\.seqs).count == 80)
    }

    @Test func peopleAreNeverMixed() {
        let plan = Batcher.plan([message(1, "a@x.io"), message(2, "b@x.io"), message(3, "a@x.io"), message(4, "acme.io", .identify, endpoint: .account)])
        #expect(plan.count == 3)
        #expect(plan[0].flatMap(\.seqs) == [1, 3])
        #expect(plan[1].flatMap(\.seqs) == [2])
        #expect(plan[2][0].endpoint == .account)
        #expect(plan[2][0].body == #"{"domain":"acme.io","identifies":[{"message_id":"m4","type":"identify"}]}"#)
    }

    @Test func ordersByEventTimeWithinAPerson() {
        let plan = Batcher.plan([message(1, "a@x.io", time: 30), message(2, "a@x.io", time: 10), message(3, "a@x.io", time: 20)])
        #expect(plan[0][0].seqs == [2, 3, 1])
        #expect(plan[0][0].body == #"{"email":"a@x.io","events":[{"message_id":"m2","type":"track"},{"message_id":"m3","type":"track"},{"message_id":"m1","type":"track"}]}"#)
    }

    @Test func responsesAreClassified() {
        #expect(KoalaClient.classify(status: 200, body: "", retryAfter: nil) == .delivered(status: 200))
        #expect(KoalaClient.classify(status: 204, body: "", retryAfter: nil) == .delivered(status: 204))
        #expect(KoalaClient.classify(status: 429, body: "", retryAfter: "7") == .retry(.status(429), retryAfter: 7))
        #expect(KoalaClient.classify(status: 503, body: "", retryAfter: nil) == .retry(.status(503), retryAfter: nil))
        #expect(KoalaClient.classify(status: 408, body: "", retryAfter: nil) == .retry(.status(408), retryAfter: nil))
        #expect(KoalaClient.classify(status: 400, body: "bad", retryAfter: nil) == .rejected(status: 400, body: "bad"))
        // An absurd Retry-After never parks a message beyond every retry.
        #expect(KoalaClient.parseRetryAfter("inf") == nil)
        #expect(KoalaClient.parseRetryAfter("1e300") == KoalaClient.maxRetryAfter)
        #expect(KoalaClient.parseRetryAfter("120") == 120)
        #expect(KoalaClient.parseRetryAfter("soon") == nil)
    }

    @Test func backoffGrowsAndIsCapped() {
        var policy = DeliveryPolicy()
        policy.initialBackoff = 1
        policy.maxBackoff = 600
        #expect((0.5...1).contains(policy.backoff(attempt: 1)))
        #expect((4...8).contains(policy.backoff(attempt: 4)))
        #expect((300...600).contains(policy.backoff(attempt: 40)))
    }
}

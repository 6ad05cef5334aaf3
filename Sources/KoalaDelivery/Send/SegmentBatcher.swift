import Foundation
package import KoalaCore
package import KoalaStore

/// The same messages as Segment-compatible calls (Segment's HTTP Tracking API, RudderStack's HTTP API and
/// others that accept it): a `track` output is a `track` call, an `identify` output an `identify`, an
/// `account` output a `group`. Pure and deterministic, so `simulate` shows the exact request.
///
/// Who the call is about:
/// - a person: `userId` is the rule's `person.user_id` when it sets one (e.g. the provider's customer id, or
///   your app's user id), otherwise the email (the one id both the provider and Koala know); the email is
///   also `traits.email` (identify) or `context.traits.email` (track), as Segment's spec names it;
/// - a person known only by Koala's `profile_id` (the `ko_id` cookie, an anonymous visitor): `anonymousId`;
/// - an account: a `group` call of the person the traits came with (`userId` as above, or `anonymousId` for a
///   visitor known by profile id) into `groupId` = the account's `group_id` (the billing customer, or the
///   workspace), else its domain (or `account_id`); the domain is a trait. Account traits that name no person
///   are not sent here (the router keeps them for Koala): no anonymous user is ever invented.
///
/// `messageId` is the same deterministic id Koala gets, so a retry or replay is absorbed the same way;
/// `timestamp` is the event time; `context.library` names koala-router and its version.
package enum SegmentMapping {
    /// Segment's documented cap on one call.
    package static let maxCallBytes = 32 * 1024
    /// Segment's documented cap on one `/v1/batch` request.
    package static let maxBatchBytes = 500 * 1024

    /// The call for one stored message, or why it cannot be sent.
    package static func call(_ message: OutboxMessage) -> Result<JSONValue, Refusal> {
        guard case .object(let item)? = try? JSONValue.parse(Array(message.itemJSON.utf8)) else {
            return .failure(Refusal(reason: "the stored item is not a JSON object"))
        }
        var call: [String: JSONValue] = [
            "messageId": .string(message.messageID),
            "context": ["library": ["name": "koala-router", "version": .string(KoalaRouterVersion.string)]],
        ]
        if let sentAt = item["sent_at"] { call["timestamp"] = sentAt }
        let identity = message.identity
        switch (message.endpoint, message.kind) {
        case (.account, _):
            var traits: [String: JSONValue] = [:]
            if case .object(let given)? = item["traits"] { traits = given }
            guard let groupID = traits["group_id"]?.textValue ?? identity.domain ?? identity.accountID else {
                return .failure(Refusal(reason: "the account has no group_id, domain or account_id"))
            }
            guard let (field, who) = user(identity) else {
                return .failure(Refusal(reason: "the account traits name no person: a group call needs the user who belongs to the group"))
            }
            call[field] = .string(who)
            if let domain = identity.domain, traits["domain"] == nil { traits["domain"] = .string(domain) }
            if let accountID = identity.accountID, traits["account_id"] == nil { traits["account_id"] = .string(accountID) }
            call["type"] = "group"
            call["groupId"] = .string(groupID)
            call["traits"] = .object(traits)
        case (.person, let kind):
            guard let (field, who) = user(identity) else { return .failure(Refusal(reason: "the person has no email or profile_id")) }
            call[field] = .string(who)
            if kind == .track {
                call["type"] = "track"
                call["event"] = item["event"]
                call["properties"] = item["properties"] ?? .object([:])
                if let email = identity.email {
                    call["context"] = ["library": call["context"]?["library"] ?? .null, "traits": ["email": .string(email)]]
                }
            } else {
                call["type"] = "identify"
                var traits: [String: JSONValue] = [:]
                if case .object(let given)? = item["traits"] { traits = given }
                if let email = identity.email, traits["email"] == nil { traits["email"] = .string(email) }
                call["traits"] = .object(traits)
            }
        }
        let encoded = JSONValue.object(call)
        if encoded.encoded().utf8.count > maxCallBytes {
            return .failure(Refusal(reason: "the call is over Segment's \(maxCallBytes / 1024) KB limit per message"))
        }
        return .success(encoded)
    }

    /// Who a call is about: `userId` (the rule's user id, else the email), or `anonymousId` for a visitor known
    /// only by Koala's profile id; nil when nobody is named.
    static func user(_ identity: KoalaIdentity) -> (field: String, value: String)? {
        if let userID = identity.userID ?? identity.email { return ("userId", userID) }
        if let profileID = identity.profileID { return ("anonymousId", profileID) }
        return nil
    }

    /// Why a message cannot be a Segment-compatible call (it goes to that destination's dead letters).
    package struct Refusal: Error, Sendable, Equatable {
        /// Said to a person: what is wrong.
        package let reason: String
    }

    /// One `/v1/batch` request: calls of any number of people, in the order they must be sent.
    package struct Batch: Sendable, Equatable {
        /// The request body, ready to send.
        package let body: String
        /// The messages in it, in order.
        package let messageIDs: [String]
    }

    /// Requests for these messages, in event-time order (ties by arrival), each within `maxBatchBytes`;
    /// messages that cannot be calls are returned with the reason.
    package static func plan(_ messages: [OutboxMessage], maxBatchBytes: Int = SegmentMapping.maxBatchBytes)
        -> (batches: [Batch], refused: [(messageID: String, reason: String)]) {
        let chunks = chunked(messages, maxBatchBytes: maxBatchBytes)
        return (chunks.requests.map { Batch(body: body($0.map(\.call)), messageIDs: $0.map(\.message.messageID)) },
                chunks.refused.map { ($0.message.messageID, $0.reason) })
    }

    /// The same requests as the sender sends them to `destination`, with the messages each one holds.
    static func requests(_ messages: [OutboxMessage], destination: Destination, maxBatchBytes: Int = SegmentMapping.maxBatchBytes)
        -> (batches: [KoalaBatch], refused: [(message: OutboxMessage, reason: String)]) {
        let chunks = chunked(messages, maxBatchBytes: maxBatchBytes)
        return (chunks.requests.map { request($0, destination: destination) }, chunks.refused)
    }

    /// One request holding exactly `messages` (already known to be calls), in their order.
    static func request(_ messages: [OutboxMessage], destination: Destination) -> KoalaBatch {
        request(messages.compactMap { message in (try? call(message).get().encoded()).map { (message, $0) } }, destination: destination)
    }

    /// One request of calls already encoded, in their order.
    static func request(_ pairs: [(message: OutboxMessage, call: String)], destination: Destination) -> KoalaBatch {
        let messages = pairs.map(\.message), calls = pairs.map(\.call)
        var batch = KoalaBatch(endpoint: messages.first?.endpoint ?? .person, identity: KoalaIdentity(), seqs: messages.map(\.seq),
                               messageIDs: messages.map(\.messageID), body: body(calls),
                               oldestCreatedAt: messages.map(\.createdAt).min() ?? Date(), attempts: messages.map(\.attempts).max() ?? 0)
        batch.acceptedAt = messages.map(\.createdAt)
        batch.messages = messages
        batch.destination = destination
        return batch
    }

    static func body(_ calls: [String]) -> String { #"{"batch":["# + calls.joined(separator: ",") + "]}" }

    /// Messages in event-time order (ties by arrival) cut into requests under `maxBatchBytes`.
    static func chunked(_ messages: [OutboxMessage], maxBatchBytes: Int)
        -> (requests: [[(message: OutboxMessage, call: String)]], refused: [(message: OutboxMessage, reason: String)]) {
        let sorted = messages.sorted { ($0.eventTime, $0.seq) < ($1.eventTime, $1.seq) }
        let wrapper = body([]).utf8.count
        var requests: [[(message: OutboxMessage, call: String)]] = []
        var refused: [(message: OutboxMessage, reason: String)] = []
        var current: [(message: OutboxMessage, call: String)] = [], size = wrapper
        for message in sorted {
            switch call(message) {
            case .failure(let refusal):
                refused.append((message, refusal.reason))
            case .success(let value):
                let text = value.encoded()
                let added = text.utf8.count + (current.isEmpty ? 0 : 1)
                if size + added > maxBatchBytes, !current.isEmpty {
                    requests.append(current)
                    current = []
                    size = wrapper
                }
                size += text.utf8.count + (current.isEmpty ? 0 : 1)
                current.append((message, text))
            }
        }
        if !current.isEmpty { requests.append(current) }
        return (requests, refused)
    }
}

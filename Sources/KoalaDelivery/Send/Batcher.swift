import Foundation
package import KoalaCore
package import KoalaStore

/// One HTTP request to Koala: one person (or account), at most `maxPerType` events and identifies.
package struct KoalaBatch: Sendable, Equatable {
    /// Where the request goes.
    package let endpoint: KoalaEndpoint
    let identity: KoalaIdentity
    let seqs: [Int64]
    let messageIDs: [String]
    /// The request body, ready to send.
    package let body: String
    let oldestCreatedAt: Date
    /// Failed attempts so far of the most-tried message in the batch.
    let attempts: Int
    /// When each message was accepted, for the delivery latency.
    var acceptedAt: [Date] = []
    /// The messages in the request, in the order they were put in it.
    var messages: [OutboxMessage] = []
    /// Whose API the body is for: Koala's, or a Segment-compatible `/v1/batch` (many people per request).
    var destination: Destination = .koala

    /// The request split in two requests of the first and second half of its messages (kept in order), to
    /// find the message the destination refuses; empty for a request of one message.
    func halves() -> [KoalaBatch] {
        guard messages.count > 1 else { return [] }
        let middle = messages.count / 2
        return [Array(messages[..<middle]), Array(messages[middle...])].map { part in
            if destination != .koala { return SegmentMapping.request(part, destination: destination) }
            return Batcher.build(part, events: part.filter { $0.kind == .track }, identifies: part.filter { $0.kind != .track })
        }
    }

    /// What every log line about this request says of it, so it can be found from the webhooks it carries: their
    /// sources and webhook ids (the first five, then how many more) and, for a request of one, its message id.
    var correlation: [String: String] {
        func distinct(_ values: [String]) -> [String] {
            var seen: Set<String> = []
            return values.filter { seen.insert($0).inserted }
        }
        let ids = distinct(messages.map(\.webhookID))
        var fields = [
            "source": distinct(messages.map(\.source)).joined(separator: ","),
            "webhook_id": ids.prefix(5).joined(separator: ",") + (ids.count > 5 ? " +\(ids.count - 5) more" : ""),
        ]
        if messageIDs.count == 1 { fields["message_id"] = messageIDs[0] }
        let traces = distinct(messages.compactMap { WebhookTracing.traceID(of: $0.traceParent) })
        if !traces.isEmpty { fields["trace_id"] = traces.prefix(5).joined(separator: ",") + (traces.count > 5 ? " +\(traces.count - 5) more" : "") }
        return fields
    }
}

/// Groups leased messages into Koala requests. Pure and deterministic.
package enum Batcher {
    /// One list of batches per person (or account), in the order they must be sent. Messages are taken
    /// in event-time order (ties by arrival) and a new request starts when either type reaches the cap.
    package static func plan(_ messages: [OutboxMessage], maxPerType: Int = KoalaEndpoint.maxPerType) -> [[KoalaBatch]] {
        var order: [String] = []
        var groups: [String: [OutboxMessage]] = [:]
        for message in messages {
            let key = message.endpoint.rawValue + "|" + message.identity.key
            if groups[key] == nil { order.append(key) }
            groups[key, default: []].append(message)
        }
        return order.map { key in
            let sorted = groups[key, default: []].sorted { ($0.eventTime, $0.seq) < ($1.eventTime, $1.seq) }
            var batches: [KoalaBatch] = []
            var events: [OutboxMessage] = [], identifies: [OutboxMessage] = []
            var current: [OutboxMessage] = []
            func flush() {
                guard !current.isEmpty else { return }
                batches.append(build(current, events: events, identifies: identifies))
                current = []; events = []; identifies = []
            }
            for message in sorted {
                let full = message.kind == .track ? events.count >= maxPerType : identifies.count >= maxPerType
                if full { flush() }
                current.append(message)
                if message.kind == .track { events.append(message) } else { identifies.append(message) }
            }
            flush()
            return batches
        }
    }

    static func build(_ all: [OutboxMessage], events: [OutboxMessage], identifies: [OutboxMessage]) -> KoalaBatch {
        let first = all[0]
        var body = "{"
        var needsComma = false
        for (name, value) in first.identity.topLevel {
            if needsComma { body += "," }
            JSONValue.writeString(name, to: &body)
            body += ":"
            JSONValue.writeString(value, to: &body)
            needsComma = true
        }
        for (name, items) in [("events", events), ("identifies", identifies)] where !items.isEmpty {
            if needsComma { body += "," }
            body += "\"\(name)\":["
            body += items.map(\.itemJSON).joined(separator: ",")
            body += "]"
            needsComma = true
        }
        body += "}"
        var batch = KoalaBatch(endpoint: first.endpoint, identity: first.identity, seqs: all.map(\.seq),
                          messageIDs: all.map(\.messageID), body: body,
                          oldestCreatedAt: all.map(\.createdAt).min() ?? first.createdAt,
                          attempts: all.map(\.attempts).max() ?? 0)
        batch.acceptedAt = all.map(\.createdAt)
        batch.messages = all
        return batch
    }
}

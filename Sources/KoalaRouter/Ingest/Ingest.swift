import Foundation
import HTTPTypes
import Logging

/// The ingest stage without HTTP: verify, parse, route, store. Returns the HTTP answer to give.
public struct Ingest: Sendable {
    public let rules: RulesHolder
    public let store: any WebhookStore
    public let linger: TimeInterval
    /// How long a message whose `recall` missed waits for the identity before it is dead-lettered.
    public let identityWait: TimeInterval
    public let metrics: RouterMetrics
    let logger: Logger

    public init(rules: RulesHolder, store: any WebhookStore, linger: TimeInterval, identityWait: TimeInterval = 900,
                metrics: RouterMetrics = RouterMetrics(), logger: Logger) {
        self.rules = rules
        self.store = store
        self.linger = linger
        self.identityWait = identityWait
        self.metrics = metrics
        self.logger = logger
    }

    public struct Answer: Sendable, Equatable {
        public let status: HTTPResponse.Status
        public let body: JSONValue
    }

    /// Headers that carry credentials are never stored.
    public static func isSensitive(_ name: String) -> Bool {
        // A plain byte scan: the generic `firstRange(of:)` allocated a dozen times per call, and this runs
        // for every header of every webhook.
        var lower = Array(name.utf8)
        for i in lower.indices where lower[i] >= 65 && lower[i] <= 90 { lower[i] += 32 }
        return sensitiveFragments.contains { fragment in
            guard lower.count >= fragment.count else { return false }
            return lower.withUnsafeBufferPointer { bytes in
                fragment.withUnsafeBufferPointer { needle in
                    for start in 0...(bytes.count - needle.count) {
                        var i = 0
                        while i < needle.count && bytes[start + i] == needle[i] { i += 1 }
                        if i == needle.count { return true }
                    }
                    return false
                }
            }
        }
    }

    static let sensitiveFragments: [[UInt8]] = [
        "authorization", "cookie", "signature", "hmac", "token", "secret", "api-key", "apikey",
    ].map { Array($0.utf8) }

    /// Checks that `source` exists and is enabled before the body is read.
    public func precheck(source name: String) -> Answer? {
        let table = rules.table
        guard let source = table.sources[name] else {
            metrics.webhookReceived(source: "unknown", outcome: "unknown_source")
            return Answer(status: .notFound, body: [
                "error": .string("unknown source '\(name)'"),
                "hint": .string("webhooks go to /webhooks/<source>, where <source> is declared by a file in the routes folder"),
            ])
        }
        if source.verifier == nil {
            metrics.webhookReceived(source: name, outcome: "source_disabled")
            return Answer(status: .serviceUnavailable, body: ["error": .string(source.disabledReason ?? "source '\(name)' is disabled")])
        }
        return nil
    }

    public func handle(source name: String, headers: HTTPFields, body: [UInt8], now: Date = Date(), requestID: String? = nil) async -> Answer {
        var logger = self.logger
        if let requestID { logger[metadataKey: "request_id"] = .string(requestID) }
        if let early = precheck(source: name) { return early }
        let table = rules.table
        let source = table.sources[name]!
        let verifier = source.verifier!

        let verification: Verification
        switch verifier.verify(headers: headers, body: body, now: now) {
        case .success(let v):
            verification = v
            metrics.secretUsed(source: name, label: v.secretLabel)
        case .failure(let failure):
            metrics.webhookReceived(source: name, outcome: failure.code)
            logger.warning("webhook rejected", metadata: ["source": "\(name)", "reason": "\(failure.code)", "detail": "\(failure.reason)"])
            return Answer(status: .unauthorized, body: ["error": .string(failure.reason)])
        }

        let json: JSONValue
        do {
            json = try JSONValue.parse(body)
        } catch {
            logger.warning("webhook body is not JSON", metadata: ["source": "\(name)", "detail": "\(error)"])
            metrics.webhookReceived(source: name, outcome: "invalid_json")
            return Answer(status: .badRequest, body: ["error": .string("body is not valid JSON: \(error)")])
        }

        let webhook: VerifiedWebhook
        switch source.webhook(body: body, json: json, headers: headers, receivedAt: now, secretLabel: verification.secretLabel,
                              rulesVersion: table.version) {
        case .success(let w):
            webhook = w
        case .failure(let problem):
            metrics.webhookReceived(source: name, outcome: problem.outcome)
            return Answer(status: .badRequest, body: ["error": .string(problem.message)])
        }
        let webhookID = webhook.webhookID, eventType = webhook.eventType
        let router = WebhookRouter(source: source)
        do {
            let recallKeys = router.recallKeys(webhook)
            let memory = recallKeys.isEmpty ? [:] : try await store.recall(source: name, keys: recallKeys)
            let routing = router.routing(webhook, memory: memory)
            let messages = routing.messages
            let outcome = try await store.accept(webhook, messages: messages, remembers: routing.remembers,
                                                 linger: linger, identityWait: identityWait)
            switch outcome {
            case .accepted(let queued, let dead, let waiting):
                metrics.webhookReceived(source: name, outcome: "accepted")
                for (route, group) in Dictionary(grouping: messages.filter { $0.problem == nil && $0.waitingFor == nil }, by: \.route) {
                    metrics.messagesQueued(source: name, route: route, count: group.count)
                }
                if dead > 0 { metrics.messagesFinished(endpoint: .person, outcome: "dead_lettered", count: dead) }
                logger.info("webhook accepted", metadata: [
                    "source": "\(name)", "webhook_id": "\(webhookID)", "type": "\(eventType)",
                    "queued": "\(queued)", "dead_lettered": "\(dead)", "waiting": "\(waiting)", "secret": "\(verification.secretLabel)",
                ])
                var body: [String: JSONValue] = [
                    "status": "accepted", "source": .string(name), "webhook_id": .string(webhookID),
                    "messages": .int(Int64(queued)), "dead_lettered": .int(Int64(dead)),
                ]
                if waiting > 0 { body["waiting_for_identity"] = .int(Int64(waiting)) }
                return Answer(status: .ok, body: .object(body))
            case .duplicate:
                metrics.webhookReceived(source: name, outcome: "duplicate")
                logger.info("duplicate webhook ignored", metadata: ["source": "\(name)", "webhook_id": "\(webhookID)"])
                return Answer(status: .ok, body: [
                    "status": "duplicate", "source": .string(name), "webhook_id": .string(webhookID),
                ])
            }
        } catch {
            metrics.webhookReceived(source: name, outcome: "store_unavailable")
            logger.error("store could not take a webhook", metadata: ["source": "\(name)", "webhook_id": "\(webhookID)", "error": "\(error)"])
            return Answer(status: .serviceUnavailable, body: ["error": "storage unavailable, retry later"])
        }
    }
}

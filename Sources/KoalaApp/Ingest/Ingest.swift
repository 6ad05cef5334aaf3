package import Foundation
package import HTTPTypes
package import KoalaCore
package import KoalaDelivery
package import KoalaStore
package import Logging
import Tracing

/// The ingest stage without HTTP: verify, parse, route, store. Returns the HTTP answer to give.
package struct Ingest: Sendable {
    let rules: RulesHolder
    let store: any IngestStore
    let linger: TimeInterval
    /// How long a message whose `recall` missed waits for the identity before it is dead-lettered.
    let identityWait: TimeInterval
    let metrics: RouterMetrics
    let logger: Logger
    /// Serialises webhooks that remember the same state within this process (see `stateKeys`).
    let stateLocks = KeyedLocks()
    /// Where every message goes: Koala, and the Segment-compatible destinations configured.
    let destinations: [Destination]
    /// Refusals are logged through it: the first of a kind in full, the rest summed up (`serve` shares one with the
    /// HTTP routes and runs it as a service).
    var rejections: RejectionLog
    /// The spans of each webhook (receive → verify → route → store), when on.
    var tracing = WebhookTracing.off

    package init(rules: RulesHolder, store: any IngestStore, linger: TimeInterval, identityWait: TimeInterval = 900,
                destinations: [Destination] = [.koala], metrics: RouterMetrics = RouterMetrics(), logger: Logger) {
        self.rules = rules
        self.store = store
        self.destinations = destinations
        self.linger = linger
        self.identityWait = identityWait
        self.metrics = metrics
        self.logger = logger
        rejections = RejectionLog(interval: 60, logger: logger)
    }

    /// The HTTP answer to a webhook.
    package struct Answer: Sendable, Equatable {
        /// The status.
        package let status: HTTPResponse.Status
        /// The JSON body.
        package let body: JSONValue
        /// Seconds a provider should wait before retrying (`Retry-After`), for a 503 it may retry.
        package var retryAfter: Int?

        init(status: HTTPResponse.Status, body: JSONValue, retryAfter: Int? = nil) {
            self.status = status
            self.body = body
            self.retryAfter = retryAfter
        }
    }

    /// A request let in before its body is read: its source, from one read of the rule table, which then
    /// verifies and routes it whatever a concurrent reload does.
    package struct Admitted: Sendable {
        let source: SourceDefinition
        let verifier: any SignatureVerifier
        let rulesVersion: String
    }

    /// What the headers alone decide, before the body is read.
    package enum Admission: Sendable {
        case admitted(Admitted)
        /// Answer without reading the body.
        case refused(Answer)
    }

    /// Decides from the path and headers alone: the source must exist and be enabled, and the request must carry
    /// a well-formed signature with a fresh timestamp (or the right credential) in the headers its scheme reads.
    func admit(source name: String, headers: HTTPFields, client: ClientAddress = .unknown, now: Date = Date()) -> Admission {
        let table = rules.table
        guard let source = table.sources[name] else {
            metrics.webhookReceived(source: "unknown", outcome: .unknownSource)
            return .refused(Answer(status: .notFound, body: [
                "error": .string("unknown source '\(LogText.bounded(LogText.escaped(name), limit: 64))'"),
                "hint": .string("webhooks go to /webhooks/<source>, where <source> is declared by a file in the routes folder"),
            ]))
        }
        switch source.state {
        case .disabled(let reason):
            metrics.webhookReceived(source: name, outcome: .sourceDisabled)
            return .refused(Answer(status: .serviceUnavailable, body: ["error": .string(reason)]))
        case .enabled(let verifier):
            let names = verifier.credentialHeaders
            var failure: VerificationFailure?
            if !names.isEmpty, !names.contains(where: { headers.value(named: $0) != nil }) {
                failure = .missingHeader(names[0])
            } else {
                failure = verifier.precheck(headers: headers, now: now)
            }
            if let failure {
                return .refused(rejected(failure, source: name, client: client, before: "body"))
            }
            return .admitted(Admitted(source: source, verifier: verifier, rulesVersion: table.version))
        }
    }

    /// A verification failure: counted, logged (through the rejection log), and answered 401.
    private func rejected(_ failure: VerificationFailure, source name: String, client: ClientAddress, before: String? = nil) -> Answer {
        metrics.webhookReceived(source: name, outcome: failure.outcome)
        var metadata: Logger.Metadata = ["source": "\(name)", "reason": "\(failure.outcome.rawValue)", "detail": "\(failure.reason)"]
        if let before { metadata["before"] = "\(before)" }
        rejections.warning("webhook rejected", key: "rejected\u{0}\(name)\u{0}\(failure.outcome.rawValue)", client: client, metadata: metadata)
        return Answer(status: .unauthorized, body: ["error": .string(failure.reason)])
    }

    /// Admits, verifies, parses, routes and stores one webhook (what `POST /webhooks/{source}` does).
    package func handle(source name: String, headers: HTTPFields, body: [UInt8], now: Date = Date(), requestID: String? = nil) async -> Answer {
        switch admit(source: name, headers: headers, now: now) {
        case .refused(let answer): return answer
        case .admitted(let admitted): return await handle(admitted, headers: headers, body: body, now: now, requestID: requestID)
        }
    }

    /// `resume`: where the handler continues after the commit (the connection's event loop).
    func handle(_ admitted: Admitted, headers: HTTPFields, body: [UInt8], client: ClientAddress = .unknown, now: Date = Date(),
                requestID: String? = nil, resumingOn resume: AcceptResumer? = nil) async -> Answer {
        // The webhook's trace: a child of the provider's `traceparent` when the request carries one.
        guard let receive = tracing.start("webhook.receive", parent: tracing.context(from: headers, using: HeaderReader()), kind: .server) else {
            return await process(admitted, headers: headers, body: body, client: client, now: now, requestID: requestID, resumingOn: resume, span: nil)
        }
        receive.attributes["koala.source"] = admitted.source.name
        receive.attributes["http.request.body.size"] = body.count
        let answer = await process(admitted, headers: headers, body: body, client: client, now: now, requestID: requestID, resumingOn: resume,
                                   span: receive)
        receive.attributes["http.response.status_code"] = Int(answer.status.code)
        if answer.status.code >= 400 {
            // The status only: the answer's text can quote the payload, and spans leave for a collector.
            receive.setStatus(SpanStatus(code: .error, message: "answered \(answer.status.code)"))
        }
        receive.end()
        return answer
    }

    /// Reads the trace context of an incoming request from its header fields.
    struct HeaderReader: Extractor {
        func extract(key: String, from carrier: HTTPFields) -> String? { HTTPField.Name(key).flatMap { carrier[$0] } }
    }

    /// What `handle` does, in the span `span` (nil when tracing is off).
    private func process(_ admitted: Admitted, headers: HTTPFields, body: [UInt8], client: ClientAddress, now: Date, requestID: String?,
                         resumingOn resume: AcceptResumer?, span: (any Span)?) async -> Answer {
        var logger = self.logger
        if let requestID { logger[metadataKey: "request_id"] = .string(requestID) }
        let source = admitted.source, name = source.name
        let traceParent = span.flatMap { tracing.traceParent(of: $0.context) }
        if let traceID = WebhookTracing.traceID(of: traceParent) { logger[metadataKey: "trace_id"] = .string(traceID) }

        // Verification, parsing and identification: after them the webhook is trusted and named.
        let verify = tracing.start("webhook.verify", parent: span?.context)
        let verification: Verification
        switch admitted.verifier.verify(headers: headers, body: body, now: now) {
        case .success(let v):
            verification = v
            metrics.secretUsed(source: name, label: v.secretLabel)
            verify?.attributes["koala.secret"] = v.secretLabel
        case .failure(let failure):
            verify?.attributes["koala.outcome"] = failure.outcome.rawValue
            verify?.setStatus(SpanStatus(code: .error, message: failure.outcome.rawValue))
            verify?.end()
            return rejected(failure, source: name, client: client)
        }

        let json: JSONTape
        do {
            json = try JSONTape.parse(body)
        } catch {
            rejections.warning("webhook body is not JSON", key: "invalid_json\u{0}\(name)", client: client, metadata: ["source": "\(name)", "detail": "\(error)"])
            metrics.webhookReceived(source: name, outcome: .invalidJSON)
            verify?.setStatus(SpanStatus(code: .error, message: WebhookOutcome.invalidJSON.rawValue))
            verify?.end()
            return Answer(status: .badRequest, body: ["error": .string("body is not valid JSON: \(error)")])
        }

        var webhook: VerifiedWebhook
        switch source.webhook(body: body, json: json, headers: headers, receivedAt: now, secretLabel: verification.secretLabel,
                              rulesVersion: admitted.rulesVersion) {
        case .success(let w):
            webhook = w
        case .failure(let problem):
            metrics.webhookReceived(source: name, outcome: problem.outcome)
            rejections.warning("webhook refused", key: "refused\u{0}\(name)\u{0}\(problem.outcome.rawValue)", client: client,
                               metadata: ["source": "\(name)", "reason": "\(problem.outcome.rawValue)", "detail": "\(problem.message)"])
            verify?.setStatus(SpanStatus(code: .error, message: problem.outcome.rawValue))
            verify?.end()
            return Answer(status: .badRequest, body: ["error": .string(problem.message)])
        }
        verify?.end()
        if let span {
            // Trusted from here: the span names the webhook.
            span.attributes["koala.webhook_id"] = webhook.webhookID
            span.attributes["koala.event_type"] = webhook.eventType
            webhook.traceParent = traceParent
        }
        if let problem = webhook.eventTimeProblem {
            logger.warning("event time unusable; using the time of receipt", metadata: [
                "source": "\(name)", "webhook_id": "\(webhook.webhookID)", "detail": "\(problem)",
            ])
        }
        let webhookID = webhook.webhookID, eventType = webhook.eventType
        let router = WebhookRouter(source: source)
        do {
            let (routing, outcome) = try await routeAndStore(webhook, router: router, resumingOn: resume, trace: span?.context)
            let messages = routing.messages
            span?.attributes["koala.outcome"] = outcome.webhookOutcome.rawValue
            switch outcome {
            case .accepted(let queued, let dead, let waiting):
                metrics.webhookReceived(source: name, outcome: .accepted)
                for (route, group) in Dictionary(grouping: messages.filter { $0.disposition == .send }, by: \.route) {
                    metrics.messagesQueued(source: name, route: route, count: group.count)
                }
                if dead > 0 { metrics.messagesFinished(endpoint: .person, outcome: .deadLettered, count: dead) }
                for message in messages {
                    for dropped in message.droppedFields {
                        metrics.identityFieldDropped(source: name, route: message.route, field: dropped.field)
                        logger.warning("identity field left out; the message goes by the person's other field", metadata: [
                            "source": "\(name)", "webhook_id": "\(webhookID)", "route": "\(message.route)",
                            "field": "\(dropped.field)", "problem": "\(dropped.reason)", "message_id": "\(message.messageID)",
                        ])
                    }
                }
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
            case .stateChanged:
                // Routed again four times and another replica still moved the state first: let the provider retry.
                metrics.webhookReceived(source: name, outcome: .stateContended)
                logger.warning("the remembered state kept changing while this webhook was routed; asking the provider to retry",
                               metadata: ["source": "\(name)", "webhook_id": "\(webhookID)"])
                return Answer(status: .serviceUnavailable, body: ["error": "busy with other updates of the same object, retry later"], retryAfter: 1)
            case .duplicate:
                metrics.webhookReceived(source: name, outcome: .duplicate)
                logger.info("duplicate webhook ignored", metadata: ["source": "\(name)", "webhook_id": "\(webhookID)"])
                return Answer(status: .ok, body: [
                    "status": "duplicate", "source": .string(name), "webhook_id": .string(webhookID),
                ])
            }
        } catch {
            metrics.webhookReceived(source: name, outcome: .storeUnavailable)
            // A full disk or a read-only database heals slowly: ask for a later retry than for a passing fault.
            let refusal = store.writeRefusal
            var metadata: Logger.Metadata = ["source": "\(name)", "webhook_id": "\(webhookID)", "error": "\(error)"]
            if let refusal { metadata["refusing_writes"] = "\(refusal)" }
            rejections.error("store could not take a webhook", key: "store\u{0}\(refusal == nil ? "unavailable" : "refusing")", client: client, metadata: metadata)
            return Answer(status: .serviceUnavailable, body: ["error": "storage unavailable, retry later"], retryAfter: refusal == nil ? 5 : 60)
        }
    }

    /// Recalls memory, routes and stores. Webhooks that remember the same state are taken one at a time, so
    /// an update compares against the state of the update before it, not a state both read at once.
    /// `extra`: memory stored with it besides what its routes remember (a snapshot's digest).
    /// `trace`: the webhook's span, parent of a route and a store span per attempt (when tracing).
    func routeAndStore(_ webhook: VerifiedWebhook, router: WebhookRouter, extra: [Remembered] = [],
                       resumingOn resume: AcceptResumer? = nil, trace: ServiceContext? = nil) async throws -> (WebhookRouter.Routing, AcceptOutcome) {
        let stateKeys = router.stateKeys(webhook).map { "\(webhook.source)\u{0}\($0.namespace)\u{0}\($0.key)" }
        let recallKeys = router.recallKeys(webhook)
        let work: @Sendable () async throws -> (WebhookRouter.Routing, AcceptOutcome) = { [store, linger, identityWait, destinations, tracing] in
            // The store refuses (stateChanged) when another replica moved a state between recall and accept.
            var attempt = 0
            while true {
                attempt += 1
                let route = tracing.start("webhook.route", parent: trace)
                route?.attributes["koala.attempt"] = attempt
                let memory: [MemoryKey: Remembered]
                do {
                    memory = recallKeys.isEmpty ? [:] : try await store.recall(source: webhook.source, keys: recallKeys)
                } catch {
                    route?.recordError(error)
                    route?.end()
                    throw error
                }
                let routing = router.routing(webhook, memory: memory, destinations: destinations, explaining: false)
                if let route {
                    route.attributes["koala.rules_version"] = webhook.rulesVersion
                    route.attributes["koala.routes"] = Array(Set(routing.messages.map(\.route))).sorted()
                    route.attributes["koala.messages"] = routing.messages.count
                    route.end()
                }
                var journaled = webhook
                if !recallKeys.isEmpty { journaled.routedStates = memory.values.filter { $0.state != nil } }
                let commit = tracing.start("webhook.store", parent: trace)
                let outcome: AcceptOutcome
                do {
                    outcome = try await store.accept(journaled, messages: routing.messages, remembers: extra.isEmpty ? routing.remembers : routing.remembers + extra,
                                                     linger: linger, identityWait: identityWait, resumingOn: resume)
                } catch {
                    commit?.recordError(error)
                    commit?.setStatus(SpanStatus(code: .error, message: "store unavailable"))
                    commit?.end()
                    throw error
                }
                commit?.attributes["koala.outcome"] = outcome.webhookOutcome.rawValue
                commit?.end()
                if outcome != .stateChanged || attempt >= 4 { return (routing, outcome) }
            }
        }
        return stateKeys.isEmpty ? try await work() : try await stateLocks.withLocks(stateKeys, work)
    }
}

extension AcceptOutcome {
    /// What the webhook's outcome is called in metrics and spans.
    var webhookOutcome: WebhookOutcome {
        switch self {
        case .accepted: .accepted
        case .duplicate: .duplicate
        case .stateChanged: .stateContended
        }
    }
}

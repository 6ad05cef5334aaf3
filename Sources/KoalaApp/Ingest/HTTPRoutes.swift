import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import KoalaCore
import KoalaDelivery
import KoalaStore
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// A JSON answer; `close` ends the connection after it (the body was not read), `retryAfter` adds the header.
func jsonResponse(_ status: HTTPResponse.Status, _ body: JSONValue, close: Bool = false, retryAfter: Int? = nil) -> Response {
    var headers: HTTPFields = [.contentType: "application/json"]
    // Answered without reading the body: the connection is closed after the answer rather than drained.
    if close { headers[.connection] = "close" }
    if let retryAfter { headers[.retryAfter] = String(retryAfter) }
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body.encoded() + "\n")))
}

func addRoutes(to router: Router<RouterRequestContext>, components: RouterComponents, maxBodyBytes: Int) {
    let guards = components.guards
    router.post("/webhooks/:source") { request, context -> Response in
        let source = context.parameters.get("source") ?? ""
        let client = guards.client(request, context)
        let declared = request.headers[.contentLength].flatMap { Int($0) }
        // A refusal leaves the body unread. As Go's net/http does, a small one is discarded so the connection
        // can be kept; a large or chunked one closes it, so a refused client cannot make us read megabytes.
        let discardable = request.headers[.transferEncoding] == nil && (declared ?? 0) <= unreadBodyKeptAlive
        // A client that keeps failing verification is refused before anything is checked or read.
        let failureKey = client.text + "\u{0}" + source
        if let retryAfter = guards.signatureFailures.retryAfter(failureKey) {
            components.metrics.webhookReceived(source: components.rules.table.sources[source] == nil ? "unknown" : source, outcome: .rateLimited)
            guards.rejections.warning("webhooks refused: too many failed verifications from one client", key: "rate_limited\u{0}\(source)",
                                      client: client, metadata: ["source": "\(source)", "retry_after_s": "\(retryAfter)"])
            return ClientGuards.tooMany("webhooks failing verification", retryAfter: retryAfter, close: !discardable)
        }
        let admitted: Ingest.Admitted
        switch components.ingest.admit(source: source, headers: request.headers, client: client) {
        case .refused(let answer):
            if answer.status == .unauthorized { guards.signatureFailures.failed(failureKey) }
            return jsonResponse(answer.status, answer.body, close: !discardable)
        case .admitted(let a): admitted = a
        }
        switch try await readBody(request.body, declaredLength: declared, limit: maxBodyBytes, budget: guards.bodies, client: client.text) {
        case .tooLarge:
            components.metrics.webhookReceived(source: source, outcome: .tooLarge)
            return jsonResponse(.contentTooLarge, ["error": .string("body is larger than \(maxBodyBytes) bytes")], close: !discardable)
        case .overBudget(let refusal):
            components.metrics.webhookReceived(source: source, outcome: .overloaded)
            let why = refusal == .clientShare ? "this client has too many webhook bodies in flight" : "too many webhook bodies in flight"
            return jsonResponse(.serviceUnavailable, ["error": .string("\(why), retry later")], close: true, retryAfter: 1)
        case .body(let bytes, let reserved):
            defer { guards.bodies.release(reserved, client: client.text) }
            // After the commit the handler continues on the connection's own event loop, which writes the answer.
            let loop = context.eventLoop
            let resumer: AcceptResumer = { work in if loop.inEventLoop { work() } else { loop.execute(work) } }
            let answer = await components.ingest.handle(admitted, headers: request.headers, body: bytes, client: client,
                                                        requestID: context.logger[metadataKey: "hb.request.id"]?.description,
                                                        resumingOn: resumer)
            if answer.status == .unauthorized { guards.signatureFailures.failed(failureKey) }
            return jsonResponse(answer.status, answer.body, retryAfter: answer.retryAfter)
        }
    }
}

/// `/healthz`, `/readyz` and (with `metrics`) `/metrics`. Readiness says only whether the router can take webhooks,
/// unless `detailed` (the listener of its own) or the request carries the admin token: then it adds the store,
/// the rules' version and last reload error, each source's state and each destination's circuit.
func addHealthRoutes(to router: Router<RouterRequestContext>, components: RouterComponents, adminToken: String?, detailed: Bool, metrics: Bool) {
    let guards = components.guards
    let expected = adminToken.map { Crypto.digest(.sha256, Array("Bearer \($0)".utf8)) }
    if metrics {
        router.get("/metrics") { _, _ -> Response in
            if let stats = try? await components.store.queueStats(now: Date()) {
                components.metrics.queue(stats)
            }
            for sender in [components.sender] + components.destinationSenders {
                components.metrics.circuit(destination: sender.destination, sender.health.snapshot)
            }
            if let process = ProcessStats.current() { components.metrics.process(process) }
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: components.metrics.exposition()))
            )
        }
    }
    router.get("/healthz") { _, _ -> Response in
        jsonResponse(.ok, ["status": "ok"])
    }
    router.get("/readyz") { request, context -> Response in
        var details = detailed
        if !details, let given = request.headers[.authorization] {
            let client = guards.client(request, context)
            if let retryAfter = guards.adminFailures.retryAfter(client.text) { return ClientGuards.tooMany("wrong admin tokens", retryAfter: retryAfter) }
            guard let expected, Crypto.constantTimeEquals(Crypto.digest(.sha256, Array(given.utf8)), expected) else {
                guards.adminFailures.failed(client.text)
                guards.rejections.warning("readiness details refused: wrong admin token", key: "readyz", client: client, metadata: [:])
                return jsonResponse(.unauthorized, ["error": "readiness details need Authorization: Bearer <KOALA_ROUTER_ADMIN_TOKEN>"])
            }
            details = true
        }
        let (ready, body) = await readiness(components)
        return jsonResponse(ready ? .ok : .serviceUnavailable, details ? body : ["status": body["status"] ?? "not ready"])
    }
}

/// Whether the router can take webhooks, and why: the store, the rules (version, last reload error), each
/// source's state, each destination's circuit.
func readiness(_ components: RouterComponents) async -> (Bool, JSONValue) {
    let table = components.rules.table
    let health = await components.store.health()
    let storeOK = health.isReady
    var sources: [String: JSONValue] = [:]
    for (name, source) in table.sources {
        switch source.state {
        case .enabled: sources[name] = "enabled"
        case .disabled(let reason): sources[name] = .string(reason)
        }
    }
    var body: [String: JSONValue] = [
        "status": .string(storeOK ? "ready" : "not ready"),
        "store": .string(health.description),
        "rules_version": .string(table.version),
        "sources": .object(sources),
    ]
    if let error = components.rules.lastReloadError {
        body["rules_reload_error"] = .string(error)
    }
    body["koala"] = components.sender.health.json
    if !components.destinationSenders.isEmpty {
        // Each destination's circuit and last answers: one being down never delays another.
        var destinations: [String: JSONValue] = [Destination.koala.rawValue: components.sender.health.json]
        for sender in components.destinationSenders { destinations[sender.destination.rawValue] = sender.health.json }
        body["destinations"] = .object(destinations)
    }
    return (storeOK, .object(body))
}

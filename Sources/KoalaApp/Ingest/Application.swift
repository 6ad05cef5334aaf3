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

/// Opens the store named by the configuration; it works once `run()` runs (`serve` runs it as a service,
/// commands through `whileRunning`).
/// `serving`: this process runs the sender and owns the database (false for operator commands).
package func openStore(_ configuration: RouterConfiguration, serving: Bool = true,
                      logger: Logger = Logger(label: "koala-router.store")) async throws -> any WebhookStore {
    if PostgresURL.isPostgres(configuration.database) {
        // Replicas share it: leases are never voided at start-up, they run out.
        return try PostgresStore(url: configuration.database, logger: logger)
    }
    guard let path = configuration.sqlitePath else {
        throw StoreError.unsupportedURL(configuration.database)
    }
    return try await SQLiteStore(path: path, ownsDatabase: serving)
}

/// Runs the store as the first service of the group, so it stops last (after the server and the sender),
/// and logs when it has closed.
struct StoreService: Service {
    let store: any WebhookStore
    let logger: Logger

    func run() async throws {
        try await store.run()
        logger.info("store closed")
    }
}

/// Everything the service is made of; `buildComponents` wires it, tests reach into it.
package struct RouterComponents: Sendable {
    let rules: RulesHolder
    let store: any WebhookStore
    /// Koala's sender.
    let sender: Sender
    /// One sender per Segment-compatible destination configured, each with its own retries and circuit.
    var destinationSenders: [Sender] = []
    let ingest: Ingest
    let metrics: RouterMetrics
    let reloader: RulesReloader
    let resolver: IdentityResolver
    let retention: Retention
    /// What one client may hold and try: connections, body bytes, failed credentials; and the refusal log.
    let guards: ClientGuards
}

/// The per-client limits of the HTTP listener, shared by every connection and route.
struct ClientGuards: Sendable {
    let limits: ConnectionLimits
    let connections: ClientConnections
    let bodies: BodyBudget
    /// Wrong admin tokens per client (the admin API, the console's sign-in, /readyz details).
    let adminFailures: FailureLimiter
    /// Webhooks failing verification per client and source.
    let signatureFailures: FailureLimiter
    let rejections: RejectionLog

    init(limits: ConnectionLimits, logger: Logger) {
        self.limits = limits
        connections = ClientConnections(limit: limits.maxConnectionsPerClient)
        bodies = BodyBudget(limit: limits.maxBodyBytesInFlight, perClient: limits.maxBodyBytesInFlightPerClient)
        adminFailures = FailureLimiter(perMinute: limits.adminFailuresPerMinute)
        signatureFailures = FailureLimiter(perMinute: limits.signatureFailuresPerMinute)
        rejections = RejectionLog(interval: limits.rejectionLogInterval, logger: logger)
    }

    /// Who sent `request`: its peer, or the client a trusted proxy names.
    func client(_ request: Request, _ context: RouterRequestContext) -> ClientAddress {
        ClientAddress(peer: context.remoteAddress, headers: request.headers, trusted: limits.trustedProxies)
    }

    /// 429 for a client that has failed too often, with when to try again.
    static func tooMany(_ what: String, retryAfter: Int, close: Bool = false) -> Response {
        jsonResponse(.tooManyRequests, ["error": .string("too many \(what) from this client; retry in \(retryAfter) s")],
                     close: close, retryAfter: retryAfter)
    }
}

/// The request context of every route: Hummingbird's, and the peer's address for per-client limits.
package struct RouterRequestContext: RequestContext, RemoteAddressRequestContext {
    /// Hummingbird's own part of the context.
    package var coreContext: CoreRequestContextStorage
    /// The connection's peer (a proxy, when one is in front).
    package let remoteAddress: SocketAddress?

    /// The context of a request arriving on `source.channel`.
    package init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}

/// Loads the rules and wires the pipeline: store → ingest, identity resolver → sender → Koala client.
/// Nothing runs yet; `buildApplication` runs the background parts as services.
func buildComponents(_ configuration: RouterConfiguration, logger: Logger, store existingStore: (any WebhookStore)?,
                     httpClient: HTTPClient) async throws -> RouterComponents {
    if let file = configuration.freeMailDomainsFile {
        try FreeMailDomains.configure(file: file)
    }
    let table = try RuleLoader(environment: configuration.environment).load(directory: configuration.routesDirectory)
    for warning in table.warnings { logger.warning("\(warning)") }
    for error in table.secretErrors { logger.error("\(error)") }
    logger.info("rules loaded", metadata: [
        "version": "\(table.version)", "sources": "\(table.sources.keys.sorted().joined(separator: ","))",
    ])
    let store: any WebhookStore
    if let existingStore {
        store = existingStore
    } else {
        store = try await openStore(configuration, logger: logger)
    }
    let rules = RulesHolder(table)
    let client = KoalaClient(http: httpClient, baseURL: configuration.koalaAPIURL, publicKey: configuration.koalaPublicKey,
                             timeout: configuration.delivery.requestTimeout, logger: logger)
    let metrics = RouterMetrics()
    let others = try configuration.segmentDestinations()
    let destinationSenders = others.map { other in
        Sender(store: store, segment: SegmentClient(http: httpClient, baseURL: other.url, writeKey: other.writeKey,
                                                    timeout: configuration.delivery.requestTimeout),
               destination: other.destination, policy: configuration.delivery, metrics: metrics, logger: logger)
    }
    if !others.isEmpty {
        logger.info("destinations", metadata: ["destinations": "\(([Destination.koala] + others.map(\.destination)).map(\.rawValue).joined(separator: ","))"])
    }
    let guards = ClientGuards(limits: configuration.connections, logger: logger)
    var ingest = Ingest(rules: rules, store: store, linger: configuration.delivery.linger, identityWait: configuration.identityWait,
                        destinations: [.koala] + others.map(\.destination), metrics: metrics, logger: logger)
    ingest.rejections = guards.rejections
    var components = RouterComponents(
        rules: rules, store: store,
        sender: Sender(store: store, client: client, policy: configuration.delivery, metrics: metrics, logger: logger),
        ingest: ingest,
        metrics: metrics,
        reloader: RulesReloader(holder: rules, directory: configuration.routesDirectory, environment: configuration.environment,
                                pollInterval: configuration.rulesPollInterval, metrics: metrics, logger: logger,
                                handleSignals: configuration.reloadOnSIGHUP),
        resolver: IdentityResolver(store: store, rules: rules, linger: configuration.delivery.linger, logger: logger),
        retention: Retention(store: store, keep: configuration.retention, logger: logger),
        guards: guards)
    components.destinationSenders = destinationSenders
    return components
}

/// The HTTP routes: webhooks, health, readiness and metrics (unless they have a listener of their own), and the
/// admin API and console when a token is set.
func buildRouter(_ components: RouterComponents, configuration: RouterConfiguration, logger: Logger) -> Router<RouterRequestContext> {
    let router = Router<RouterRequestContext>(context: RouterRequestContext.self)
    addRoutes(to: router, components: components, maxBodyBytes: configuration.maxBodyBytes)
    addHealthRoutes(to: router, components: components, adminToken: configuration.adminToken, detailed: false,
                    metrics: configuration.metricsAddress == nil)
    if let token = configuration.adminToken {
        addAdminRoutes(to: router, components: components, token: token)
        Console(components: components, sessions: ConsoleSessions(adminToken: token, store: components.store, logger: logger),
                routesDirectory: configuration.routesDirectory,
                logger: logger).addRoutes(to: router)
    } else {
        logger.info("admin API and console off (set KOALA_ROUTER_ADMIN_TOKEN to enable them)")
    }
    return router
}

/// Runs Swift concurrency's jobs on NIO's event loops (the threads that already serve every connection and
/// the Koala client), instead of on a second thread pool. A request's handler then continues on the thread
/// that read it, and the hand-offs between the two pools — a quarter of ingest's CPU in the profile, as
/// kernel thread switches — go away. Call it first thing in `serve`, before any task runs; nothing in the
/// service blocks a thread (the stores hand their work to GRDB's queues and postgres-nio's connections).
/// Returns false when the runtime refuses (the service then runs as before, on the default pool).
package func runConcurrencyOnEventLoops() -> Bool {
    NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
}

/// The service as a Hummingbird application, for a Swift program that embeds koala-router: the same settings as
/// `koala-router serve` (`RouterConfiguration.load(…)` reads flags, environment, secret files and the config file),
/// the same store, rules, ingest, delivery and background services. Run it with `runService()`.
public func makeRouterApplication(_ configuration: RouterConfiguration, logger: Logger) async throws -> some ApplicationProtocol {
    try await buildApplication(configuration, logger: logger).0
}

/// Builds the whole service — components, routes, the HTTP server with its connection limits, and the
/// background services — for `koala-router serve` and the tests.
package func buildApplication(
    _ configuration: RouterConfiguration,
    logger: Logger,
    store existingStore: (any WebhookStore)? = nil,
    httpClient: HTTPClient = .shared
) async throws -> (some ApplicationProtocol, RouterComponents) {
    let components = try await buildComponents(configuration, logger: logger, store: existingStore, httpClient: httpClient)
    let limits = configuration.connections
    let guards = components.guards, metrics = components.metrics
    var app = Application(
        router: buildRouter(components, configuration: configuration, logger: logger),
        server: .http1(configuration: .init(additionalChannelHandlers: [
            ConnectionGuard(limits: limits, clients: guards.connections, timedOut: { metrics.connectionTimedOut(phase: $0) },
                            refusedOverCap: { metrics.connectionRefused(reason: "client_cap") }),
        ])),
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "koala-router",
                             backlog: 1024, availableConnectionsDelegate: .maximum(limits.maxConnections, logger: logger)),
        logger: logger
    )
    // The store runs first (and stops last); the server listens once the database is migrated.
    let store = components.store
    app.beforeServerStarts { try await store.ready() }
    app.addServices(StoreService(store: store, logger: logger), components.sender, components.resolver, components.reloader,
                    components.retention, guards.rejections)
    if let address = configuration.metricsAddress {
        // Metrics and probes on a listener of their own: never behind the webhooks' connections, and readiness
        // with its details, for the orchestrator and Prometheus only.
        let ops = Router<RouterRequestContext>(context: RouterRequestContext.self)
        addHealthRoutes(to: ops, components: components, adminToken: nil, detailed: true, metrics: true)
        let (host, port) = try RouterConfiguration.hostAndPort(address)
        app.addServices(Application(router: ops, configuration: .init(address: .hostname(host, port: port), serverName: "koala-router",
                                                                       availableConnectionsDelegate: .maximum(64, logger: logger)),
                                    logger: logger))
    }
    for sender in components.destinationSenders { app.addServices(sender) }
    if configuration.reconcileInterval > 0 {
        app.addServices(ReconcileSchedule(backfill: Backfill(ingest: components.ingest, store: components.store, logger: logger), configuration: configuration, logger: logger))
    }
    return (app, components)
}

func jsonResponse(_ status: HTTPResponse.Status, _ body: JSONValue, close: Bool = false, retryAfter: Int? = nil) -> Response {
    var headers: HTTPFields = [.contentType: "application/json"]
    // Answered without reading the body: the connection is closed after the answer rather than drained.
    if close { headers[.connection] = "close" }
    if let retryAfter { headers[.retryAfter] = String(retryAfter) }
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body.encoded() + "\n")))
}

/// The largest unread request body discarded to keep a connection alive after a refusal.
let unreadBodyKeptAlive = 64 * 1024

/// A webhook body read within the size limit and the memory budget; its bytes go back to the budget on `release`.
enum BodyRead {
    case body([UInt8], reserved: Int)
    case tooLarge
    case overBudget(BodyBudget.Refusal)
}

/// Reads a request body up to `limit` bytes, taking each chunk from `budget` (for `client`) as it arrives. A
/// declared length over the limit is refused before any byte is read; otherwise nothing is reserved for what a
/// `Content-Length` only promises.
func readBody(_ body: RequestBody, declaredLength: Int?, limit: Int, budget: BodyBudget, client: String) async throws -> BodyRead {
    if let declaredLength, declaredLength > limit { return .tooLarge }
    var reserved = 0
    var bytes: [UInt8] = []
    // Room for the usual webhook at once; a larger body grows the array as it arrives, not as it is announced.
    bytes.reserveCapacity(min(declaredLength ?? 16 * 1024, 64 * 1024))
    do {
        for try await chunk in body {
            guard bytes.count + chunk.readableBytes <= limit else {
                budget.release(reserved, client: client)
                return .tooLarge
            }
            if let refusal = budget.reserve(chunk.readableBytes, client: client) {
                budget.release(reserved, client: client)
                return .overBudget(refusal)
            }
            reserved += chunk.readableBytes
            bytes.append(contentsOf: chunk.readableBytesView)
        }
    } catch {
        budget.release(reserved, client: client)
        throw error
    }
    return .body(bytes, reserved: reserved)
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
            let answer = await components.ingest.handle(admitted, headers: request.headers, body: bytes, client: client,
                                                        requestID: context.logger[metadataKey: "hb.request.id"]?.description)
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

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
public func openStore(_ configuration: RouterConfiguration, serving: Bool = true,
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
public struct RouterComponents: Sendable {
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
    var components = RouterComponents(
        rules: rules, store: store,
        sender: Sender(store: store, client: client, policy: configuration.delivery, metrics: metrics, logger: logger),
        ingest: Ingest(rules: rules, store: store, linger: configuration.delivery.linger, identityWait: configuration.identityWait,
                       destinations: [.koala] + others.map(\.destination), metrics: metrics, logger: logger),
        metrics: metrics,
        reloader: RulesReloader(holder: rules, directory: configuration.routesDirectory, environment: configuration.environment,
                                pollInterval: configuration.rulesPollInterval, metrics: metrics, logger: logger,
                                handleSignals: configuration.reloadOnSIGHUP),
        resolver: IdentityResolver(store: store, rules: rules, linger: configuration.delivery.linger, logger: logger),
        retention: Retention(store: store, keep: configuration.retention, logger: logger))
    components.destinationSenders = destinationSenders
    return components
}

/// The HTTP routes: webhooks, health, readiness and metrics, and the admin API when a token is set.
func buildRouter(_ components: RouterComponents, configuration: RouterConfiguration, logger: Logger) -> Router<BasicRequestContext> {
    let router = Router<BasicRequestContext>()
    addRoutes(to: router, components: components, maxBodyBytes: configuration.maxBodyBytes,
              budget: BodyBudget(limit: configuration.connections.maxBodyBytesInFlight))
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
public func runConcurrencyOnEventLoops() -> Bool {
    NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
}

/// Builds the whole service — components, routes, the HTTP server with its connection limits, and the
/// background services — for `koala-router serve` and the tests.
public func buildApplication(
    _ configuration: RouterConfiguration,
    logger: Logger,
    store existingStore: (any WebhookStore)? = nil,
    httpClient: HTTPClient = .shared
) async throws -> (some ApplicationProtocol, RouterComponents) {
    let components = try await buildComponents(configuration, logger: logger, store: existingStore, httpClient: httpClient)
    let limits = configuration.connections
    var app = Application(
        router: buildRouter(components, configuration: configuration, logger: logger),
        server: .http1(configuration: .init(additionalChannelHandlers: [
            ConnectionGuard(limits: limits, timedOut: components.metrics.connectionTimedOut),
        ])),
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "koala-router",
                             backlog: 1024, availableConnectionsDelegate: .maximum(limits.maxConnections, logger: logger)),
        logger: logger
    )
    // The store runs first (and stops last); the server listens once the database is migrated.
    let store = components.store
    app.beforeServerStarts { try await store.ready() }
    app.addServices(StoreService(store: store, logger: logger), components.sender, components.resolver, components.reloader,
                    components.retention)
    for sender in components.destinationSenders { app.addServices(sender) }
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
    case overBudget
}

/// Reads a request body up to `limit` bytes, taking each chunk from `budget` before keeping it.
func readBody(_ body: RequestBody, declaredLength: Int?, limit: Int, budget: BodyBudget) async throws -> BodyRead {
    if let declaredLength, declaredLength > limit { return .tooLarge }
    var reserved = 0
    // With a declared length the whole body is reserved up front, so a burst of large bodies is refused
    // before any of them is read.
    if let declaredLength {
        guard budget.reserve(declaredLength) else { return .overBudget }
        reserved = declaredLength
    }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(min(declaredLength ?? 16 * 1024, limit))
    do {
        for try await chunk in body {
            guard bytes.count + chunk.readableBytes <= limit else {
                budget.release(reserved)
                return .tooLarge
            }
            let needed = bytes.count + chunk.readableBytes - reserved
            if needed > 0 {
                guard budget.reserve(needed) else {
                    budget.release(reserved)
                    return .overBudget
                }
                reserved += needed
            }
            bytes.append(contentsOf: chunk.readableBytesView)
        }
    } catch {
        budget.release(reserved)
        throw error
    }
    return .body(bytes, reserved: reserved)
}

func addRoutes(to router: Router<BasicRequestContext>, components: RouterComponents, maxBodyBytes: Int, budget: BodyBudget) {
    router.post("/webhooks/:source") { request, context -> Response in
        let source = context.parameters.get("source") ?? ""
        let declared = request.headers[.contentLength].flatMap { Int($0) }
        // A refusal leaves the body unread. As Go's net/http does, a small one is discarded so the connection
        // can be kept; a large or chunked one closes it, so a refused client cannot make us read megabytes.
        let discardable = request.headers[.transferEncoding] == nil && (declared ?? 0) <= unreadBodyKeptAlive
        let admitted: Ingest.Admitted
        switch components.ingest.admit(source: source, headers: request.headers) {
        case .refused(let answer): return jsonResponse(answer.status, answer.body, close: !discardable)
        case .admitted(let a): admitted = a
        }
        switch try await readBody(request.body, declaredLength: declared, limit: maxBodyBytes, budget: budget) {
        case .tooLarge:
            components.metrics.webhookReceived(source: source, outcome: .tooLarge)
            return jsonResponse(.contentTooLarge, ["error": .string("body is larger than \(maxBodyBytes) bytes")], close: !discardable)
        case .overBudget:
            components.metrics.webhookReceived(source: source, outcome: .overloaded)
            return jsonResponse(.serviceUnavailable, ["error": "too many webhook bodies in flight, retry later"], close: true, retryAfter: 1)
        case .body(let bytes, let reserved):
            defer { budget.release(reserved) }
            let answer = await components.ingest.handle(admitted, headers: request.headers, body: bytes,
                                                        requestID: context.logger[metadataKey: "hb.request.id"]?.description)
            return jsonResponse(answer.status, answer.body)
        }
    }
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
    router.get("/healthz") { _, _ -> Response in
        jsonResponse(.ok, ["status": "ok"])
    }
    router.get("/readyz") { _, _ -> Response in
        let table = components.rules.table
        let storeOK = await components.store.ping()
        var sources: [String: JSONValue] = [:]
        for (name, source) in table.sources {
            switch source.state {
            case .enabled: sources[name] = "enabled"
            case .disabled(let reason): sources[name] = .string(reason)
            }
        }
        var body: [String: JSONValue] = [
            "status": .string(storeOK ? "ready" : "not ready"),
            "store": .string(storeOK ? "ok" : "unavailable"),
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
        return jsonResponse(storeOK ? .ok : .serviceUnavailable, .object(body))
    }
}

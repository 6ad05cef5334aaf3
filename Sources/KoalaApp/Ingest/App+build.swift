package import AsyncHTTPClient
import Foundation
import HTTPTypes
public import Hummingbird
import KoalaCore
package import KoalaDelivery
package import KoalaStore
public import Logging
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
        throw StoreError.unsupported(configuration.database)
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
    let destinationSenders: [Sender]
    let ingest: Ingest
    let metrics: RouterMetrics
    let reloader: RulesReloader
    let resolver: IdentityResolver
    let retention: Retention
    /// What one client may hold and try: connections, body bytes, failed credentials; and the refusal log.
    let guards: ClientGuards
}

/// Loads the rules and wires the pipeline: store → ingest, identity resolver → sender → Koala client.
/// Nothing runs yet; `buildApplication` runs the background parts as services.
func buildComponents(_ configuration: RouterConfiguration, logger: Logger, store existingStore: (any WebhookStore)?,
                     httpClient: HTTPClient, tracing: WebhookTracing = .off) async throws -> RouterComponents {
    let freeMail = try configuration.freeMailDomainsFile.map(FreeMailDomains.load(file:)) ?? .shipped
    let table = try RuleLoader(environment: configuration.environment, freeMail: freeMail).load(directory: configuration.routesDirectory)
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
               destination: other.destination, policy: configuration.delivery, metrics: metrics, tracing: tracing, logger: logger)
    }
    if !others.isEmpty {
        logger.info("destinations", metadata: ["destinations": "\(([Destination.koala] + others.map(\.destination)).map(\.rawValue).joined(separator: ","))"])
    }
    let guards = ClientGuards(limits: configuration.connections, logger: logger)
    var ingest = Ingest(rules: rules, store: store, linger: configuration.delivery.linger, identityWait: configuration.identityWait,
                        destinations: [.koala] + others.map(\.destination), metrics: metrics, logger: logger)
    ingest.rejections = guards.rejections
    ingest.tracing = tracing
    return RouterComponents(
        rules: rules, store: store,
        sender: Sender(store: store, client: client, policy: configuration.delivery, metrics: metrics, tracing: tracing, logger: logger),
        destinationSenders: destinationSenders,
        ingest: ingest,
        metrics: metrics,
        reloader: RulesReloader(holder: rules, directory: configuration.routesDirectory, environment: configuration.environment, freeMail: freeMail,
                                pollInterval: configuration.rulesPollInterval, metrics: metrics, logger: logger,
                                handleSignals: configuration.reloadOnSIGHUP),
        resolver: IdentityResolver(store: store, rules: rules, linger: configuration.delivery.linger, logger: logger),
        retention: Retention(store: store, keep: configuration.retention, logger: logger),
        guards: guards)
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
        Console(data: ConsoleData(components), sessions: ConsoleSessions(adminToken: token, store: components.store, logger: logger),
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
/// the same store, rules, ingest, delivery and background services. Run it with `runService()`. What it throws is a
/// `KoalaRouterError` (a rule file that does not load, a store that cannot be opened), or cancellation.
public func makeRouterApplication(_ configuration: RouterConfiguration, logger: Logger) async throws -> some ApplicationProtocol {
    do {
        return try await buildApplication(configuration, logger: logger).0
    } catch {
        throw KoalaRouterError.wrapping(error)
    }
}

/// Builds the whole service — components, routes, the HTTP server with its connection limits, and the
/// background services — for `koala-router serve` and the tests.
package func buildApplication(
    _ configuration: RouterConfiguration,
    logger: Logger,
    store existingStore: (any WebhookStore)? = nil,
    httpClient: HTTPClient = .shared,
    tracing: WebhookTracing = .off
) async throws -> (some ApplicationProtocol, RouterComponents) {
    let components = try await buildComponents(configuration, logger: logger, store: existingStore, httpClient: httpClient, tracing: tracing)
    let limits = configuration.connections
    let guards = components.guards, metrics = components.metrics
    // At 0 from the start, so the first timeout or refusal shows as an increase (a series that appears at 1 does not).
    for phase in ConnectionGuard.phasesWithDeadlines { metrics.connectionTimedOut(phase: phase.rawValue, count: 0) }
    metrics.connectionRefused(reason: ConnectionGuard.clientCapReason, count: 0)
    var app = Application(
        router: buildRouter(components, configuration: configuration, logger: logger),
        server: .http1(configuration: .init(additionalChannelHandlers: [
            ConnectionGuard(limits: limits, clients: guards.connections, timedOut: { metrics.connectionTimedOut(phase: $0) },
                            refusedOverCap: { metrics.connectionRefused(reason: ConnectionGuard.clientCapReason) }),
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

import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// Opens the store named by the configuration.
/// `serving`: this process runs the sender and owns the database (false for operator commands).
public func openStore(_ configuration: RouterConfiguration, serving: Bool = true,
                      logger: Logger = Logger(label: "koala-router.store")) async throws -> any WebhookStore {
    if PostgresURL.isPostgres(configuration.database) {
        // Replicas share it: leases are never voided at start-up, they run out.
        return try await PostgresStore(url: configuration.database, logger: logger)
    }
    guard let path = configuration.sqlitePath else {
        throw StoreError.unsupportedURL(configuration.database)
    }
    return try await SQLiteStore(path: path, ownsDatabase: serving)
}

/// Closes the store when the service group shuts down (after the server and sender have stopped).
struct StoreCloser: Service {
    let store: any WebhookStore
    let logger: Logger

    func run() async throws {
        // Returns when graceful shutdown starts (services stop in reverse order, so this one stops last)
        // or throws when the task is cancelled; either way the store is closed.
        try? await gracefulShutdown()
        try await store.close()
        logger.info("store closed")
    }
}


/// Everything the service is made of; `buildApplication` wires it, tests reach into it.
public struct RouterComponents: Sendable {
    public let rules: RulesHolder
    public let store: any WebhookStore
    public let sender: Sender
    public let ingest: Ingest
    public let metrics: RouterMetrics
    public let reloader: RulesReloader
}

/// Builds the whole service: used by `koala-router serve` and by the tests.
public func buildApplication(
    _ configuration: RouterConfiguration,
    logger: Logger,
    store existingStore: (any WebhookStore)? = nil,
    httpClient: HTTPClient = .shared
) async throws -> (some ApplicationProtocol, RouterComponents) {
    if let file = configuration.freeMailDomainsFile {
        try FreeMailDomains.configure(file: file)
    }
    let table: RuleTable
    do {
        table = try RuleLoader(environment: configuration.environment).load(directory: configuration.routesDirectory)
    }
    for warning in table.warnings { logger.warning("\(warning)") }
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
    let sender = Sender(store: store, client: client, policy: configuration.delivery, metrics: metrics, logger: logger)
    let ingest = Ingest(rules: rules, store: store, linger: configuration.delivery.linger, identityWait: configuration.identityWait,
                        metrics: metrics, logger: logger)
    let resolver = IdentityResolver(store: store, rules: rules, linger: configuration.delivery.linger, logger: logger)
    let reloader = RulesReloader(holder: rules, directory: configuration.routesDirectory, environment: configuration.environment,
                                 pollInterval: configuration.rulesPollInterval, metrics: metrics, logger: logger,
                                 handleSignals: configuration.reloadOnSIGHUP)
    let components = RouterComponents(rules: rules, store: store, sender: sender, ingest: ingest, metrics: metrics, reloader: reloader)

    let router = Router<BasicRequestContext>()
    addRoutes(to: router, components: components, maxBodyBytes: configuration.maxBodyBytes)
    if let token = configuration.adminToken {
        addAdminRoutes(to: router, components: components, token: token)
    } else {
        logger.info("admin API off (set KOALA_ROUTER_ADMIN_TOKEN to enable it)")
    }

    var app = Application(
        router: router,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "koala-router"),
        logger: logger
    )
    let retention = Retention(store: store, keep: configuration.retention, logger: logger)
    app.addServices(StoreCloser(store: store, logger: logger), sender, resolver, reloader, retention)
    return (app, components)
}

func jsonResponse(_ status: HTTPResponse.Status, _ body: JSONValue) -> Response {
    Response(
        status: status,
        headers: [.contentType: "application/json"],
        body: .init(byteBuffer: ByteBuffer(string: body.encoded() + "\n"))
    )
}

func addRoutes(to router: Router<BasicRequestContext>, components: RouterComponents, maxBodyBytes: Int) {
    router.post("/webhooks/:source") { request, context -> Response in
        let source = context.parameters.get("source") ?? ""
        if let early = components.ingest.precheck(source: source) {
            return jsonResponse(early.status, early.body)
        }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: maxBodyBytes)
        } catch is NIOTooManyBytesError {
            components.metrics.webhookReceived(source: source, outcome: "too_large")
            return jsonResponse(.contentTooLarge, ["error": .string("body is larger than \(maxBodyBytes) bytes")])
        }
        let answer = await components.ingest.handle(source: source, headers: request.headers, body: Array(buffer: buffer),
                                                    requestID: context.logger[metadataKey: "hb.request.id"]?.description)
        return jsonResponse(answer.status, answer.body)
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
            sources[name] = source.verifier == nil ? .string(source.disabledReason ?? "disabled") : "enabled"
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
        return jsonResponse(storeOK ? .ok : .serviceUnavailable, .object(body))
    }
}

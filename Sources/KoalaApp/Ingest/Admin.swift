package import Foundation
import HTTPTypes
import Hummingbird
import KoalaCore
import KoalaDelivery
import KoalaStore
import Logging
import NIOCore

/// Time arguments: ISO-8601 (`2024-11-29T09:00:00Z`) or an age (`90s`, `30m`, `2h`, `7d`) counted back from now.
package func parseTimeArgument(_ text: String, now: Date = Date()) -> Date? {
    if let date = Timestamps.parseISO(text) { return date }
    let units: [(String, Double)] = [("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
    for (suffix, factor) in units where text.hasSuffix(suffix) {
        if let value = Double(text.dropLast()), value >= 0 { return now.addingTimeInterval(-value * factor) }
    }
    return nil
}

/// A dead-letter filter from request parameters (`destination`, `source`, `route`, `reason`, `since`, `until`,
/// and `id`s), for the admin API and the console. Throws a message naming the parameter and what it takes.
func deadLetterFilter(ids: [String], _ value: (String) -> String?, now: Date = Date()) throws(HTTPError) -> DeadLetterFilter {
    var filter = DeadLetterFilter()
    filter.messageIDs = ids.flatMap { $0.split(separator: ",").map(String.init) }
    if let name = value("destination") {
        guard let destination = Destination(rawValue: name) else {
            throw HTTPError(.badRequest, message: "destination must be one of \(Destination.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        filter.destination = destination
    }
    filter.source = value("source")
    filter.route = value("route")
    filter.reason = value("reason")
    for name in ["since", "until"] {
        guard let text = value(name) else { continue }
        guard let date = parseTimeArgument(text, now: now) else {
            throw HTTPError(.badRequest, message: "\(name) must be ISO-8601 or an age such as 2h")
        }
        if name == "since" { filter.since = date } else { filter.until = date }
    }
    return filter
}

/// The admin HTTP API (dead letters), on only when `KOALA_ROUTER_ADMIN_TOKEN` is set; every request must
/// carry `Authorization: Bearer <token>`, compared in constant time.
func addAdminRoutes(to router: Router<RouterRequestContext>, components: RouterComponents, token: String) {
    let expected = Crypto.digest(.sha256, Array("Bearer \(token)".utf8))
    let guards = components.guards
    let unauthorized = jsonResponse(.unauthorized, ["error": "admin API: missing or wrong bearer token"])
    /// Nil when the request carries the token; otherwise the answer: 401, or 429 once the client has sent too
    /// many wrong tokens (then nothing is compared until its bucket refills).
    @Sendable func refusal(_ request: Request, _ context: RouterRequestContext) -> Response? {
        let client = guards.client(request, context)
        if let retryAfter = guards.adminFailures.retryAfter(client.text) { return ClientGuards.tooMany("wrong admin tokens", retryAfter: retryAfter) }
        if let given = request.headers[.authorization], Crypto.constantTimeEquals(Crypto.digest(.sha256, Array(given.utf8)), expected) {
            return nil
        }
        guards.adminFailures.failed(client.text)
        guards.rejections.warning("admin API refused: missing or wrong bearer token", key: "admin", client: client, metadata: ["path": "\(request.uri.path)"])
        return unauthorized
    }
    @Sendable func filter(_ request: Request) throws -> DeadLetterFilter {
        let query = request.uri.queryParameters
        return try deadLetterFilter(ids: query.getAll("id")) { query.get($0) }
    }

    router.get("/admin/dead-letters") { request, context -> Response in
        if let refused = refusal(request, context) { return refused }
        let limit = request.uri.queryParameters.get("limit").flatMap(Int.init) ?? 100
        let letters = try await components.store.deadLetters(matching: try filter(request), limit: min(max(limit, 1), 10000))
        return jsonResponse(.ok, ["dead_letters": .array(letters.map(\.json)), "count": .int(Int64(letters.count))])
    }
    router.get("/admin/dead-letters/:id") { request, context -> Response in
        if let refused = refusal(request, context) { return refused }
        let id = context.parameters.get("id") ?? ""
        guard let letter = try await components.store.deadLetters(matching: DeadLetterFilter(messageIDs: [id]), limit: 1).first else {
            return jsonResponse(.notFound, ["error": .string("no dead letter with message id \(id)")])
        }
        return jsonResponse(.ok, letter.json)
    }
    router.post("/admin/dead-letters/retry") { request, context -> Response in
        if let refused = refusal(request, context) { return refused }
        let count = try await components.store.retryDeadLetters(matching: try filter(request), at: Date())
        return jsonResponse(.ok, ["retried": .int(Int64(count))])
    }
    router.post("/admin/dead-letters/drop") { request, context -> Response in
        if let refused = refusal(request, context) { return refused }
        let f = try filter(request)
        guard f != DeadLetterFilter() else {
            return jsonResponse(.badRequest, ["error": "refusing to drop every dead letter: give id, source, route, reason, since or until"])
        }
        let count = try await components.store.dropDeadLetters(matching: f)
        return jsonResponse(.ok, ["dropped": .int(Int64(count))])
    }
}

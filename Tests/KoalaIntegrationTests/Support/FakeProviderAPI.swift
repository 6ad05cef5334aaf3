import Foundation
import HTTPTypes
import Hummingbird
@testable import KoalaApp
@testable import KoalaCore
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// A provider's list API on loopback, written from its API reference: Stripe (`starting_after`, `has_more`),
/// Paddle (`after`, `meta.pagination`), Chargebee (`offset`/`next_offset`, entries wrapping the object),
/// Lemon Squeezy (JSON:API, `page[number]`, `meta.page`), Clerk (`offset`; users as a bare array, the rest as
/// `{data, total_count}`), WorkOS (`after`, `list_metadata`). It pages `pageSize` objects at a time whatever
/// `limit` says (providers may return fewer), refuses a request without the key, and plays scripted faults
/// (429 with Retry-After, 5xx, slow answers) in request order.
final class FakeProviderAPI: Sendable {
    enum Fault: Sendable {
        case status(Int, retryAfter: String? = nil)
        case delay(Double)
    }

    struct Seen: Sendable {
        let path: String
        let query: [String: String]
        let at: Date
    }

    let provider: ProviderKind
    let key: String
    let port: Int
    private let group: ServiceGroup
    /// Collections by name: `customers`, `subscriptions`, `discounts`, `users`, `organizations`,
    /// `domains:<org>`, `memberships:<org>`.
    let collections = Mutex<[String: [JSONValue]]>([:])
    private let faults = Mutex<[Fault]>([])
    private let log = Mutex<[Seen]>([])
    /// Objects per page.
    let pageSize = Mutex(2)
    /// Seconds every list page waits before answering (a slow API, for the kill -9 test).
    let pageDelay = Mutex(0.0)

    var baseURL: String { "http://127.0.0.1:\(port)" }
    var seen: [Seen] { log.withLock { $0 } }

    func set(_ name: String, _ objects: [JSONValue]) { collections.withLock { $0[name] = objects } }
    func script(_ replies: [Fault]) { faults.withLock { $0 = replies } }

    static func start(_ provider: ProviderKind, key: String = "rk_test_backfill_key") async throws -> FakeProviderAPI {
        let portStream = AsyncStream<Int>.makeStream()
        let holder = Mutex<FakeProviderAPI?>(nil)
        let router = Router()
        router.get("**") { request, _ -> Response in
            guard let fake = holder.withLock({ $0 }) else { return Response(status: .serviceUnavailable) }
            return try await fake.handle(request)
        }
        let quiet = Logger(label: "fake-provider", factory: { _ in SwiftLogNoOpLogHandler() })
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { portStream.continuation.yield($0.localAddress?.port ?? 0) }, logger: quiet)
        let group = ServiceGroup(configuration: .init(services: [app], logger: quiet))
        Task { try await group.run() }
        var port = 0
        for await p in portStream.stream {
            port = p
            break
        }
        let fake = FakeProviderAPI(provider: provider, key: key, port: port, group: group)
        holder.withLock { $0 = fake }
        return fake
    }

    private init(provider: ProviderKind, key: String, port: Int, group: ServiceGroup) {
        self.provider = provider
        self.key = key
        self.port = port
        self.group = group
    }

    func stop() {
        let group = self.group
        Task { await group.triggerGracefulShutdown() }
    }

    private func json(_ status: HTTPResponse.Status, _ value: JSONValue, headers extra: HTTPFields = [:]) -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        headers.append(contentsOf: extra)
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: value.encoded())))
    }

    private func handle(_ request: Request) async throws -> Response {
        let path = request.uri.path
        var query: [String: String] = [:]
        // Decoded as the providers' servers decode them (`expand%5B%5D` is `expand[]`).
        for (name, value) in request.uri.queryParameters {
            query[String(name).removingPercentEncoding ?? String(name)] = String(value).removingPercentEncoding ?? String(value)
        }
        log.withLock { $0.append(Seen(path: path, query: query, at: Date())) }
        let expected = provider == .chargebee ? "Basic " + Data("\(key):".utf8).base64EncodedString() : "Bearer \(key)"
        guard request.headers[.authorization] == expected else {
            return json(.unauthorized, ["error": "invalid_api_key", "message": "Invalid API Key provided"])
        }
        guard request.headers[.userAgent]?.hasPrefix("koala-router/") == true else { return json(.badRequest, ["error": "no User-Agent"]) }
        if let fault = faults.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) {
            switch fault {
            case .status(let code, let retryAfter):
                var headers: HTTPFields = [:]
                if let retryAfter { headers[.retryAfter] = retryAfter }
                return json(.init(code: code), ["error": "scripted"], headers: headers)
            case .delay(let seconds):
                try await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
            }
        }
        let delay = pageDelay.withLock { $0 }
        if delay > 0 { try await Task.sleep(for: .milliseconds(Int64(delay * 1000))) }
        let size = pageSize.withLock { $0 }
        let all = collections.withLock { $0 }
        func list(_ name: String) -> [JSONValue] { all[name] ?? [] }
        func index(after id: String?, in objects: [JSONValue], id key: (JSONValue) -> String? = { $0["id"]?.textValue }) -> Int {
            guard let id, let found = objects.firstIndex(where: { key($0) == id }) else { return 0 }
            return found + 1
        }

        switch provider {
        case .stripe:
            let name = path == "/v1/customers" ? "customers" : path == "/v1/subscriptions" ? "subscriptions" : nil
            guard let name else { return json(.notFound, ["error": ["message": "Unrecognized request URL"]]) }
            var objects = list(name)
            if let since = query["created[gte]"].flatMap(Int64.init) {
                objects = objects.filter { ($0["created"]?.doubleValue ?? 0) >= Double(since) }
            }
            if name == "subscriptions", query["status"] != "all" { objects = objects.filter { $0["status"]?.stringValue != "canceled" } }
            if name == "subscriptions", query["expand[]"] != "data.discounts" {
                // Unexpanded, discounts are ids.
                objects = objects.map { subscription in
                    guard case .object(var fields) = subscription, case .array(let discounts)? = fields["discounts"] else { return subscription }
                    fields["discounts"] = .array(discounts.map { $0["id"] ?? $0 })
                    return .object(fields)
                }
            }
            let start = index(after: query["starting_after"], in: objects)
            let page = Array(objects[min(start, objects.count)..<min(start + size, objects.count)])
            return json(.ok, ["object": "list", "url": .string(path), "has_more": .bool(start + size < objects.count), "data": .array(page)])

        case .paddle:
            let name = String(path.dropFirst())
            guard ["customers", "subscriptions", "discounts"].contains(name) else { return json(.notFound, ["error": ["code": "not_found"]]) }
            let objects = list(name)
            let start = index(after: query["after"], in: objects)
            let page = Array(objects[min(start, objects.count)..<min(start + size, objects.count)])
            let more = start + size < objects.count
            var pagination: [String: JSONValue] = ["per_page": .int(Int64(size)), "has_more": .bool(more), "estimated_total": .int(Int64(objects.count))]
            pagination["next"] = .string(baseURL + path + "?after=" + (page.last?["id"]?.stringValue ?? ""))
            return json(.ok, ["data": .array(page), "meta": ["request_id": "req_fake", "pagination": .object(pagination)]])

        case .chargebee:
            guard path.hasPrefix("/api/v2/") else { return json(.notFound, ["message": "not found"]) }
            let name = String(path.dropFirst("/api/v2/".count))
            var objects = list(name)
            if let after = query["updated_at[after]"].flatMap(Double.init) {
                let kind = String(name.dropLast())
                objects = objects.filter { ($0[kind]?["updated_at"]?.doubleValue ?? 0) > after }
            }
            let start = Int(query["offset"] ?? "0") ?? 0
            let page = Array(objects[min(start, objects.count)..<min(start + size, objects.count)])
            var body: [String: JSONValue] = ["list": .array(page)]
            if start + size < objects.count { body["next_offset"] = .string(String(start + size)) }
            return json(.ok, .object(body))

        case .lemonsqueezy:
            let name = String(path.dropFirst("/v1/".count))
            let objects = list(name)
            let number = Int(query["page[number]"] ?? "1") ?? 1
            let start = (number - 1) * size
            let page = Array(objects[min(start, objects.count)..<min(start + size, objects.count)])
            let last = max(1, (objects.count + size - 1) / size)
            return json(.ok, [
                "meta": ["page": ["currentPage": .int(Int64(number)), "from": .int(Int64(start + 1)), "lastPage": .int(Int64(last)),
                                  "perPage": .int(Int64(size)), "to": .int(Int64(start + page.count)), "total": .int(Int64(objects.count))]],
                "jsonapi": ["version": "1.0"],
                "links": ["first": .string(baseURL + path + "?page[number]=1"), "last": .string(baseURL + path + "?page[number]=\(last)")],
                "data": .array(page),
            ])

        case .clerk:
            if path == "/v1/users/count" { return json(.ok, ["object": "total_count", "total_count": .int(Int64(list("users").count))]) }
            let offset = Int(query["offset"] ?? "0") ?? 0
            func slice(_ objects: [JSONValue]) -> [JSONValue] { Array(objects[min(offset, objects.count)..<min(offset + size, objects.count)]) }
            if path == "/v1/users" { return json(.ok, .array(slice(list("users")))) }
            let parts = path.split(separator: "/").map(String.init)
            if path == "/v1/organizations" {
                return json(.ok, ["data": .array(slice(list("organizations"))), "total_count": .int(Int64(list("organizations").count))])
            }
            if parts.count == 4, parts[1] == "organizations" {
                let objects = list("\(parts[3]):\(parts[2])")
                return json(.ok, ["data": .array(slice(objects)), "total_count": .int(Int64(objects.count))])
            }
            return json(.notFound, ["errors": [["code": "resource_not_found"]]])

        case .workos:
            var name: String
            switch path {
            case "/user_management/users": name = "users"
            case "/organizations": name = "organizations"
            case "/user_management/organization_memberships":
                guard let organization = query["organization_id"] else { return json(.unprocessableContent, ["code": "organization_id or user_id required"]) }
                name = "memberships:\(organization)"
            default: return json(.notFound, ["message": "Not Found"])
            }
            let objects = list(name)
            let start = index(after: query["after"], in: objects)
            let page = Array(objects[min(start, objects.count)..<min(start + size, objects.count)])
            let after: JSONValue = start + size < objects.count ? (page.last?["id"] ?? .null) : .null
            return json(.ok, ["object": "list", "data": .array(page), "list_metadata": ["before": .null, "after": after]])
        }
    }
}

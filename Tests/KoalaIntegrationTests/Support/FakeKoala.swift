import Foundation
import HTTPTypes
import Hummingbird
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// A strict stand-in for Koala's server-side API on loopback. It rejects (400, and records a violation)
/// anything Koala's docs forbid: no User-Agent, no JSON content type, no person (or account), more than 30
/// items of a type, items of another person, an item without `message_id`. It records what it accepted.
final class FakeKoala: Sendable {
    struct Received: Sendable {
        let endpoint: KoalaEndpoint
        let body: JSONValue
        let userAgent: String
        /// When the fake answered it.
        var at = Date()
        var email: String? { body["email"]?.stringValue }
        var domain: String? { body["domain"]?.stringValue }
        var events: [JSONValue] { if case .array(let a)? = body["events"] { a } else { [] } }
        var identifies: [JSONValue] { if case .array(let a)? = body["identifies"] { a } else { [] } }
        var messageIDs: [String] { (events + identifies).compactMap { $0["message_id"]?.stringValue } }
    }

    /// How to answer one request.
    enum Reply: Sendable {
        case ok
        case status(Int, body: String = "", retryAfter: String? = nil)
        case delay(seconds: Double)
    }

    struct State {
        var received: [Received] = []
        var violations: [String] = []
        var script: [Reply] = []
        var whileDown: Reply?
        var attempts = 0
        var attemptTimes: [Date] = []
        var inFlightByPerson: [String: Int] = [:]
        var concurrentPersonViolations = 0
        /// Messages Koala finds fault with: a request holding any of them is answered with this reply.
        var faulty: (ids: Set<String>, reply: Reply)?
        /// How many requests held each message id (accepted or not).
        var sightings: [String: Int] = [:]
    }

    let key: String
    private let state = Mutex(State())
    private let group: ServiceGroup
    let port: Int

    var baseURL: String { "http://127.0.0.1:\(port)" }

    var received: [Received] { state.withLock { $0.received } }
    var violations: [String] { state.withLock { $0.violations } }
    var attempts: Int { state.withLock { $0.attempts } }
    var attemptTimes: [Date] { state.withLock { $0.attemptTimes } }
    var deliveredMessageIDs: [String] { received.flatMap(\.messageIDs) }
    var concurrentPersonViolations: Int { state.withLock { $0.concurrentPersonViolations } }

    /// Answers the next requests with `replies`, in order, then OK.
    func script(_ replies: [Reply]) { state.withLock { $0.script = replies } }
    /// Answers every request with `reply` until `up()`.
    func down(_ reply: Reply = .status(503)) { state.withLock { $0.whileDown = reply } }
    func up() { state.withLock { $0.whileDown = nil } }
    /// Answers every request that holds one of `ids` with `reply` (a 400 naming a bad property, say).
    func rejectRequests(holding ids: Set<String>, with reply: Reply) { state.withLock { $0.faulty = (ids, reply) } }
    /// Ends `rejectRequests`: every message is accepted again.
    func stopRejecting() { state.withLock { $0.faulty = nil } }
    /// How many requests held each message id.
    var sightings: [String: Int] { state.withLock { $0.sightings } }

    static func start(key: String = "pk_test_koala") async throws -> FakeKoala {
        let portStream = AsyncStream<Int>.makeStream()
        let holder = Holder()
        let router = Router()
        router.post("/web/projects/:key/batch") { request, context in
            try await holder.get().handle(.person, request: request, context: context)
        }
        router.post("/web/projects/:key/accounts/batch") { request, context in
            try await holder.get().handle(.account, request: request, context: context)
        }
        let app = Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in portStream.continuation.yield(channel.localAddress?.port ?? 0) },
            logger: Logger(label: "fake-koala", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        // Stopped by a graceful shutdown, not by cancelling its task: cancelling tore connections down
        // mid-write (NIO traps on an unfinished writer).
        let group = ServiceGroup(configuration: .init(services: [app], logger: Logger(label: "fake-koala", factory: { _ in SwiftLogNoOpLogHandler() })))
        Task { try await group.run() }
        var port = 0
        for await p in portStream.stream {
            port = p
            break
        }
        let fake = FakeKoala(key: key, port: port, group: group)
        holder.fake.withLock { $0 = fake }
        return fake
    }

    private init(key: String, port: Int, group: ServiceGroup) {
        self.key = key
        self.port = port
        self.group = group
    }

    /// Stops accepting and closes its connections once their requests are answered; returns at once.
    func stop() {
        let group = self.group
        Task { await group.triggerGracefulShutdown() }
    }

    final class Holder: Sendable {
        let fake = Mutex<FakeKoala?>(nil)
        func get() -> FakeKoala { fake.withLock { $0! } }
    }

    private func handle(_ endpoint: KoalaEndpoint, request: Request, context: BasicRequestContext) async throws -> Response {
        let bytes = try await request.body.collect(upTo: 4 << 20)
        let reply: Reply = state.withLock { state in
            state.attempts += 1
            state.attemptTimes.append(Date())
            if let down = state.whileDown { return down }
            return state.script.isEmpty ? .ok : state.script.removeFirst()
        }
        var problems: [String] = []
        if context.parameters.get("key") != key { problems.append("wrong project key in the URL") }
        let userAgent = request.headers[.userAgent] ?? ""
        if userAgent.isEmpty { problems.append("missing User-Agent") }
        if request.headers[.contentType]?.hasPrefix("application/json") != true { problems.append("Content-Type is not application/json") }
        let body = try? JSONValue.parse(Array(buffer: bytes))
        if let body {
            problems += Self.validate(endpoint, body)
        } else {
            problems.append("body is not JSON")
        }
        let person = body.map { "\(endpoint)|\($0["email"]?.stringValue ?? "")|\($0["profile_id"]?.stringValue ?? "")|\($0["domain"]?.stringValue ?? "")" } ?? ""
        if !problems.isEmpty {
            state.withLock { $0.violations += problems }
            return Response(status: .badRequest, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(string: #"{"error":"Invalid request","message":"\#(problems.joined(separator: "; "))"}"#)))
        }
        let ids = Set(body.map { Received(endpoint: endpoint, body: $0, userAgent: userAgent).messageIDs } ?? [])
        let faulty = state.withLock { state -> Reply? in
            for id in ids { state.sightings[id, default: 0] += 1 }
            guard let faulty = state.faulty, !faulty.ids.isDisjoint(with: ids) else { return nil }
            return faulty.reply
        }
        if case .status(let code, let text, _)? = faulty {
            return Response(status: .init(code: code), headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        state.withLock { state in
            state.inFlightByPerson[person, default: 0] += 1
            if state.inFlightByPerson[person]! > 1 { state.concurrentPersonViolations += 1 }
        }
        defer { state.withLock { $0.inFlightByPerson[person, default: 1] -= 1 } }
        switch reply {
        case .ok:
            break
        case .delay(let seconds):
            try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
        case .status(let code, let text, let retryAfter):
            var headers: HTTPFields = [.contentType: "application/json"]
            if let retryAfter { headers[.retryAfter] = retryAfter }
            return Response(status: .init(code: code), headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        state.withLock { $0.received.append(Received(endpoint: endpoint, body: body!, userAgent: userAgent)) }
        return Response(status: .ok, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(string: #"{"status":"success"}"#)))
    }

    /// Koala's documented rules for a request body.
    static func validate(_ endpoint: KoalaEndpoint, _ body: JSONValue) -> [String] {
        guard case .object(let top) = body else { return ["body is not a JSON object"] }
        var problems: [String] = []
        let email = top["email"]?.stringValue
        switch endpoint {
        case .person:
            if email == nil && top["profile_id"]?.stringValue == nil { problems.append("no top-level email or profile_id") }
            if top["domain"] != nil { problems.append("domain sent to /batch") }
        case .account:
            if top["domain"]?.stringValue == nil && top["account_id"]?.stringValue == nil { problems.append("no top-level domain or account_id") }
            if top["events"] != nil { problems.append("events sent to /accounts/batch") }
        }
        for key in top.keys where !["email", "profile_id", "domain", "account_id", "events", "identifies", "page_views", "ip"].contains(key) {
            problems.append("unknown top-level key \(key)")
        }
        var seen = Set<String>()
        for (name, type) in [("events", "track"), ("identifies", "identify"), ("page_views", "page")] {
            guard let value = top[name] else { continue }
            guard case .array(let items) = value else { problems.append("\(name) is not an array"); continue }
            if items.isEmpty { problems.append("\(name) is empty") }
            if items.count > 30 { problems.append("\(items.count) \(name) in one request (max 30)") }
            for item in items {
                guard let id = item["message_id"]?.stringValue, !id.isEmpty else { problems.append("an item of \(name) has no message_id"); continue }
                if !seen.insert(id).inserted { problems.append("message_id \(id) twice in one request") }
                if item["type"]?.stringValue != type { problems.append("an item of \(name) has type \(item["type"]?.stringValue ?? "none")") }
                guard let sentAt = item["sent_at"]?.stringValue, Timestamps.parseISO(sentAt) != nil else {
                    problems.append("an item of \(name) has no ISO sent_at"); continue
                }
                if name == "events", item["event"]?.stringValue?.isEmpty != false { problems.append("an event has no name") }
                for field in ["properties", "traits"] { problems += Self.blanks(item[field], at: "\(name) \(field)") }
                if let traitEmail = item["traits"]?["email"]?.stringValue, let email, (Identity.normalizeEmail(traitEmail) ?? traitEmail) != email {
                    problems.append("an identify for \(traitEmail) in a request for \(email) (mixed people)")
                }
            }
        }
        return problems
    }

    /// A `null` or blank value in properties or traits would overwrite a good value in Koala: the router never
    /// sends one (a rule may clear a trait only with a literal `null`, which no test route does).
    static func blanks(_ value: JSONValue?, at place: String) -> [String] {
        switch value {
        case .null?: return ["null in \(place)"]
        case .string(let text)? where text.allSatisfy(\.isWhitespace): return ["blank string in \(place)"]
        case .object(let members)?: return members.sorted { $0.key < $1.key }.flatMap { blanks($0.value, at: "\(place).\($0.key)") }
        case .array(let elements)?: return elements.flatMap { blanks($0, at: place) }
        default: return []
        }
    }
}

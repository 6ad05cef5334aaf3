import Foundation
import HTTPTypes
import Hummingbird
@testable import KoalaCore
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// A strict stand-in for a Segment-compatible `/v1/batch` (Segment's HTTP Tracking API, RudderStack's HTTP
/// API) on loopback. It answers 401 to a wrong or missing write key (Basic auth, key as the user name) and
/// 400 (recording a violation) to anything those APIs forbid: no `batch` array, a call without `type`,
/// `messageId`, an ISO `timestamp` or one of `userId` / `anonymousId`, a track without `event`, a group
/// without `groupId`, a call over 32 KB, a request over 500 KB; and to a `null` or blank property or trait,
/// which the router never sends. It records the calls it accepted.
final class FakeSegment: Sendable {
    struct State {
        var calls: [JSONValue] = []
        var violations: [String] = []
        var requests = 0
        var script: [(status: Int, body: String)] = []
    }

    let writeKey: String
    let port: Int
    private let state = Mutex(State())
    private let group: ServiceGroup

    var baseURL: String { "http://127.0.0.1:\(port)" }
    var calls: [JSONValue] { state.withLock { $0.calls } }
    var violations: [String] { state.withLock { $0.violations } }
    var requests: Int { state.withLock { $0.requests } }
    /// Answers the next requests with these statuses (and bodies), in order, then as usual.
    func script(_ replies: [(status: Int, body: String)]) { state.withLock { $0.script = replies } }

    static let maxCallBytes = 32 * 1024
    static let maxRequestBytes = 500 * 1024

    static func start(writeKey: String = "wk_test_segment") async throws -> FakeSegment {
        let portStream = AsyncStream<Int>.makeStream()
        let holder = Mutex<FakeSegment?>(nil)
        let router = Router()
        router.post("/v1/batch") { request, _ in
            try await holder.withLock { $0! }.handle(request)
        }
        let quiet = Logger(label: "fake-segment", factory: { _ in SwiftLogNoOpLogHandler() })
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { channel in portStream.continuation.yield(channel.localAddress?.port ?? 0) }, logger: quiet)
        let group = ServiceGroup(configuration: .init(services: [app], logger: quiet))
        Task { try await group.run() }
        var port = 0
        for await p in portStream.stream {
            port = p
            break
        }
        let fake = FakeSegment(writeKey: writeKey, port: port, group: group)
        holder.withLock { $0 = fake }
        return fake
    }

    private init(writeKey: String, port: Int, group: ServiceGroup) {
        self.writeKey = writeKey
        self.port = port
        self.group = group
    }

    /// Stops accepting once answered requests are done; returns at once.
    func stop() {
        let group = self.group
        Task { await group.triggerGracefulShutdown() }
    }

    private func answer(_ status: Int, _ text: String) -> Response {
        Response(status: .init(code: status), headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    private func handle(_ request: Request) async throws -> Response {
        let bytes = try await request.body.collect(upTo: 4 << 20)
        let scripted = state.withLock { state -> (status: Int, body: String)? in
            state.requests += 1
            return state.script.isEmpty ? nil : state.script.removeFirst()
        }
        if let scripted { return answer(scripted.status, scripted.body) }
        let expected = "Basic " + Base64.encode(Array((writeKey + ":").utf8))
        guard request.headers[.authorization] == expected else {
            return answer(401, #"{"success":false,"message":"invalid write key"}"#)
        }
        var problems: [String] = []
        if (request.headers[.userAgent] ?? "").isEmpty { problems.append("missing User-Agent") }
        if request.headers[.contentType]?.hasPrefix("application/json") != true { problems.append("Content-Type is not application/json") }
        if bytes.readableBytes > Self.maxRequestBytes { problems.append("request of \(bytes.readableBytes) bytes (max 500 KB)") }
        var accepted: [JSONValue] = []
        if case .array(let calls)? = (try? JSONValue.parse(Array(buffer: bytes)))?["batch"] {
            if calls.isEmpty { problems.append("empty batch") }
            for call in calls {
                problems += Self.validate(call)
                accepted.append(call)
            }
        } else {
            problems.append("no batch array")
        }
        if !problems.isEmpty {
            state.withLock { $0.violations += problems }
            return answer(400, #"{"success":false,"message":"\#(problems.joined(separator: "; "))"}"#)
        }
        state.withLock { $0.calls += accepted }
        return answer(200, #"{"success":true}"#)
    }

    /// The documented rules for one call.
    static func validate(_ call: JSONValue) -> [String] {
        var problems: [String] = []
        if call.encoded().utf8.count > maxCallBytes { problems.append("a call over 32 KB") }
        let type = call["type"]?.stringValue ?? ""
        if !["track", "identify", "group", "page", "screen", "alias"].contains(type) { problems.append("a call with type '\(type)'") }
        if call["messageId"]?.stringValue?.isEmpty != false { problems.append("a call without messageId") }
        if call["timestamp"]?.stringValue.flatMap(Timestamps.parseISO) == nil { problems.append("a call without an ISO timestamp") }
        if call["userId"]?.stringValue == nil && call["anonymousId"]?.stringValue == nil { problems.append("a call without userId or anonymousId") }
        if type == "track", call["event"]?.stringValue?.isEmpty != false { problems.append("a track without event") }
        if type == "group", call["groupId"]?.stringValue?.isEmpty != false { problems.append("a group without groupId") }
        for field in ["properties", "traits"] { problems += FakeKoala.blanks(call[field], at: "\(type) \(field)") }
        return problems
    }
}

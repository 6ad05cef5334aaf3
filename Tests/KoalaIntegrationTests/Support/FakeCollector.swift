import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// A loopback OpenTelemetry collector: takes OTLP/HTTP JSON trace exports (`POST /v1/traces`) and keeps their spans.
final class FakeCollector: Sendable {
    /// One span as exported.
    struct Span: Sendable, CustomStringConvertible {
        let name: String
        let traceID: String
        let spanID: String
        let parentSpanID: String?
        let kind: Int
        let start: UInt64
        let end: UInt64
        /// Every attribute as text (arrays joined with ",").
        let attributes: [String: String]
        let statusCode: Int
        let statusMessage: String?
        let links: [String]

        var milliseconds: Double { Double(end &- start) / 1_000_000 }

        var description: String {
            let attributes = self.attributes.keys.sorted().map { "\($0)=\(self.attributes[$0]!)" }.joined(separator: " ")
            return "\(name) \(String(format: "%.2f", milliseconds)) ms span=\(spanID) parent=\(parentSpanID ?? "-") \(attributes)"
                + (statusCode == 2 ? " ERROR(\(statusMessage ?? ""))" : "") + (links.isEmpty ? "" : " links=\(links.joined(separator: ","))")
        }
    }

    let port: Int
    private let group: ServiceGroup
    private let state = Mutex<(spans: [Span], requests: Int, contentTypes: Set<String>)>(([], 0, []))

    var spans: [Span] { state.withLock { $0.spans } }
    var requests: Int { state.withLock { $0.requests } }
    var contentTypes: Set<String> { state.withLock { $0.contentTypes } }
    var url: String { "http://127.0.0.1:\(port)" }

    static func start() async throws -> FakeCollector {
        let portStream = AsyncStream<Int>.makeStream()
        let holder = Mutex<FakeCollector?>(nil)
        let router = Router()
        router.post("/v1/traces") { request, _ -> Response in
            let bytes = try await request.body.collect(upTo: 16 << 20)
            holder.withLock { $0 }?.take(Data(buffer: bytes), contentType: request.headers[.contentType] ?? "")
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{}")))
        }
        let quiet = Logger(label: "fake-collector", factory: { _ in SwiftLogNoOpLogHandler() })
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { channel in portStream.continuation.yield(channel.localAddress?.port ?? 0) }, logger: quiet)
        let group = ServiceGroup(configuration: .init(services: [app], logger: quiet))
        Task { try await group.run() }
        var port = 0
        for await p in portStream.stream {
            port = p
            break
        }
        let collector = FakeCollector(port: port, group: group)
        holder.withLock { $0 = collector }
        return collector
    }

    private init(port: Int, group: ServiceGroup) {
        self.port = port
        self.group = group
    }

    func stop() {
        let group = self.group
        Task { await group.triggerGracefulShutdown() }
    }

    /// OTLP JSON ids are hex; swift-otel's JSON encoder writes protobuf's base64 for them. Either reads as hex here.
    static func hex(_ text: String?) -> String? {
        guard let text, !text.isEmpty else { return nil }
        if text.count == 32 || text.count == 16, text.allSatisfy(\.isHexDigit) { return text.lowercased() }
        return Data(base64Encoded: text).map { $0.map { String(format: "%02x", $0) }.joined() }
    }

    static func text(_ value: Any?) -> String {
        guard let object = value as? [String: Any], let (kind, inner) = object.first else { return "" }
        if kind == "arrayValue" { return ((inner as? [String: Any])?["values"] as? [Any] ?? []).map { text($0) }.joined(separator: ",") }
        return "\(inner)"
    }

    private func take(_ body: Data, contentType: String) {
        var found: [Span] = []
        let root = (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:]
        for resource in root["resourceSpans"] as? [[String: Any]] ?? [] {
            for scope in resource["scopeSpans"] as? [[String: Any]] ?? [] {
                for span in scope["spans"] as? [[String: Any]] ?? [] {
                    var attributes: [String: String] = [:]
                    for attribute in span["attributes"] as? [[String: Any]] ?? [] {
                        attributes[attribute["key"] as? String ?? ""] = Self.text(attribute["value"])
                    }
                    let status = span["status"] as? [String: Any]
                    found.append(Span(
                        name: span["name"] as? String ?? "", traceID: Self.hex(span["traceId"] as? String) ?? "",
                        spanID: Self.hex(span["spanId"] as? String) ?? "", parentSpanID: Self.hex(span["parentSpanId"] as? String),
                        kind: (span["kind"] as? Int) ?? Self.kinds[span["kind"] as? String ?? ""] ?? 0,
                        start: UInt64(span["startTimeUnixNano"] as? String ?? "") ?? 0, end: UInt64(span["endTimeUnixNano"] as? String ?? "") ?? 0,
                        attributes: attributes, statusCode: (status?["code"] as? Int) ?? Self.statusCodes[status?["code"] as? String ?? ""] ?? 0,
                        statusMessage: status?["message"] as? String,
                        links: (span["links"] as? [[String: Any]] ?? []).compactMap { Self.hex($0["spanId"] as? String) }))
                }
            }
        }
        state.withLock {
            $0.spans += found
            $0.requests += 1
            $0.contentTypes.insert(contentType)
        }
    }

    static let kinds = ["SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5]
    static let statusCodes = ["STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2]
}

import AsyncHTTPClient
import Foundation
import Hummingbird
import KoalaCore
import Logging
import NIOCore
import Synchronization

/// `koala-router-bench latency KOALA_PORT ROUTER_PORT HOOKS.tsv RATE SECONDS`: the webhook-to-Koala latency at a
/// fixed rate. It serves a fast fake Koala on KOALA_PORT that notes when each message id arrives, waits for a router
/// at ROUTER_PORT (started by the caller, delivering to that Koala), sends the webhooks of HOOKS.tsv at RATE per
/// second for SECONDS on a fixed schedule (so a slow answer delays nothing that follows: no coordinated omission),
/// then waits up to 60 s for every accepted webhook's message. Latency runs from a webhook's scheduled send to
/// Koala's receipt of its message (Koala answers at once); the webhook's own answer time is measured too.
/// Prints one line of `name=value` pairs.
func latencyRun(koalaPort: Int, routerPort: Int, hooksFile: String, rate: Double, seconds: Double, logger: Logger) async throws {
    let seenAt = Recorder()
    let marker = Array(#""message_id":""#.utf8)
    let koala = Router()
    let record: @Sendable (Request, BasicRequestContext) async throws -> Response = { request, _ in
        let body = Array(buffer: try await request.body.collect(upTo: 4 << 20))
        let now = ContinuousClock.now
        var ids: [String] = [], i = 0
        while i + marker.count <= body.count {
            if body[i] == marker[0], body[i..<i + marker.count].elementsEqual(marker) {
                i += marker.count
                let start = i
                while i < body.count, body[i] != UInt8(ascii: "\"") { i += 1 }
                ids.append(String(decoding: body[start..<i], as: UTF8.self))
            } else {
                i += 1
            }
        }
        seenAt.arrived.withLock { for id in ids where $0[id] == nil { $0[id] = now } }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{}")))
    }
    koala.post("/web/projects/:key/batch", use: record)
    koala.post("/web/projects/:key/accounts/batch", use: record)
    let app = Application(router: koala, configuration: .init(address: .hostname("127.0.0.1", port: koalaPort)), logger: logger)
    let server = Task { try await app.runService() }
    defer { server.cancel() }

    // The webhooks, and the message id each is expected to produce (the shipped stripe rules' payment-succeeded track).
    struct Hook: Sendable {
        let signature: String
        let body: ByteBuffer
        let messageID: String
    }
    let text = try String(contentsOfFile: hooksFile, encoding: .utf8)
    let all: [Hook] = text.split(separator: "\n").compactMap { line in
        let parts = line.split(separator: "\t", maxSplits: 2)
        guard parts.count == 3, case .object(let event)? = try? JSONValue.parse(Array(parts[2].utf8)), case .string(let id)? = event["id"] else { return nil }
        return Hook(signature: String(parts[0]), body: ByteBuffer(string: String(parts[2])),
                    messageID: MessageID.derive(source: "stripe", webhookID: id, route: "payment-succeeded", output: .track))
    }
    let count = Int(rate * seconds)
    guard all.count >= count else { throw BenchError("\(hooksFile) holds \(all.count) webhooks; \(count) are needed") }
    let hooks = Array(all.prefix(count))

    var configuration = HTTPClient.Configuration()
    configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
    let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    let url = "http://127.0.0.1:\(routerPort)/webhooks/stripe"
    // The router is started by the caller once this Koala listens.
    var ready = false
    for _ in 0..<600 where !ready {
        if let answer = try? await client.execute(HTTPClientRequest(url: "http://127.0.0.1:\(routerPort)/readyz"), timeout: .seconds(1)),
           answer.status == .ok { ready = true } else { try await Task.sleep(for: .milliseconds(50)) }
    }
    guard ready else {
        try await client.shutdown()
        throw BenchError("the router at port \(routerPort) never became ready")
    }

    let clock = ContinuousClock()
    let start = clock.now + .milliseconds(200)
    let interval = Duration.seconds(1 / rate)
    await withTaskGroup(of: Void.self) { group in
        for (index, hook) in hooks.enumerated() {
            let scheduled = start + interval * index
            try? await Task.sleep(until: scheduled, clock: clock)
            group.addTask {
                var request = HTTPClientRequest(url: url)
                request.method = .POST
                request.headers.add(name: "Stripe-Signature", value: hook.signature)
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(hook.body)
                let ok = ((try? await client.execute(request, timeout: .seconds(30)))?.status.code).map { $0 == 200 } ?? false
                let took = clock.now - scheduled
                seenAt.answers.withLock { $0.append((index, ok, took)) }
            }
        }
    }
    let sendSpan = clock.now - start
    try await client.shutdown()
    let accepted = seenAt.answers.withLock { $0.filter(\.ok).map(\.index) }
    let deadline = clock.now + .seconds(60)
    while clock.now < deadline {
        let got = seenAt.arrived.withLock { seen in accepted.filter { seen[hooks[$0].messageID] != nil }.count }
        if got == accepted.count { break }
        try await Task.sleep(for: .milliseconds(50))
    }
    let seen = seenAt.arrived.withLock { $0 }
    let endToEnd = accepted.compactMap { index in seen[hooks[index].messageID].map { $0 - (start + interval * index) } }
    func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }
    func percentile(_ values: [Double], _ p: Double) -> String {
        guard !values.isEmpty else { return "-" }
        let sorted = values.sorted()
        return String(format: "%.1f", sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)])
    }
    let answerTimes = seenAt.answers.withLock { $0.map { ms($0.took) } }
    let latencies = endToEnd.map(ms)
    print("latency rate=\(Int(rate)) achieved=\(String(format: "%.0f", Double(count) / (ms(sendSpan) / 1000))) sent=\(count) accepted=\(accepted.count) "
          + "delivered=\(latencies.count) answer_p50_ms=\(percentile(answerTimes, 0.5)) answer_p99_ms=\(percentile(answerTimes, 0.99)) "
          + "e2e_p50_ms=\(percentile(latencies, 0.5)) e2e_p99_ms=\(percentile(latencies, 0.99)) e2e_max_ms=\(percentile(latencies, 1))")
}

/// What a latency run saw: when each message id reached the fake Koala, and each webhook's answer.
final class Recorder: Sendable {
    let arrived = Mutex<[String: ContinuousClock.Instant]>([:])
    let answers = Mutex<[(index: Int, ok: Bool, took: Duration)]>([])
}

/// A benchmark that cannot run, said why.
struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

import Foundation
import Hummingbird
import KoalaCore
import Logging
import Synchronization

// Helpers for scripts/bench/run, built from this package so the comparison is like for like:
//   koala-router-bench baseline PORT SECRET   the ceiling: a bare Hummingbird route that reads the body and
//                                             checks its Stripe signature (the same verifier), nothing else
//   koala-router-bench fake-koala PORT        a fast Koala stand-in: answers 200 at once, counts message ids
//                                             (GET /count) and requests (GET /requests)

let arguments = CommandLine.arguments
guard arguments.count >= 3, let port = Int(arguments[2]) else {
    FileHandle.standardError.write(Data("usage: koala-router-bench baseline PORT SECRET | fake-koala PORT\n".utf8))
    exit(2)
}
let logger = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })
let router = Router()

switch arguments[1] {
case "baseline":
    guard arguments.count >= 4 else { exit(2) }
    guard let stripe = Schemes.all["stripe"] else { exit(2) }
    let verifier = try stripe.verifier(options: [:], secrets: [WebhookSecret(label: "S", value: arguments[3])],
                                                       tolerance: 300)
    router.post("/webhooks/stripe") { request, _ -> Response in
        let body = try await request.body.collect(upTo: 1 << 20)
        switch verifier.verify(headers: request.headers, body: Array(buffer: body), now: Date()) {
        case .success: return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: #"{"status":"accepted"}"#)))
        case .failure: return Response(status: .unauthorized)
        }
    }
case "fake-koala":
    let received = Atomic<Int>(0), requests = Atomic<Int>(0)
    let marker = Array(#""message_id""#.utf8)
    let count: @Sendable (Request, BasicRequestContext) async throws -> Response = { request, _ in
        let body = Array(buffer: try await request.body.collect(upTo: 4 << 20))
        var n = 0, i = 0
        while i + marker.count <= body.count {
            if body[i] == marker[0] && Array(body[i..<i + marker.count]) == marker { n += 1; i += marker.count } else { i += 1 }
        }
        received.add(n, ordering: .relaxed)
        requests.add(1, ordering: .relaxed)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{}")))
    }
    router.post("/web/projects/:key/batch", use: count)
    router.post("/web/projects/:key/accounts/batch", use: count)
    router.get("/count") { _, _ in "\(received.load(ordering: .relaxed))" }
    router.get("/requests") { _, _ in "\(requests.load(ordering: .relaxed))" }
default:
    FileHandle.standardError.write(Data("unknown mode \(arguments[1])\n".utf8))
    exit(2)
}

let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger)
try await app.runService()

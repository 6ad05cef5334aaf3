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
//   koala-router-bench latency KOALA_PORT ROUTER_PORT HOOKS.tsv RATE SECONDS
//                                             webhook-to-Koala latency at a fixed rate (Latency.swift)
//   koala-router-bench fake-stripe PORT N     Stripe's list API over N customers, each with one subscription
//                                             (every fifth with a 20 % coupon, every seventh trialing), 100 a page

let arguments = CommandLine.arguments
guard arguments.count >= 3, let port = Int(arguments[2]) else {
    FileHandle.standardError.write(Data("usage: koala-router-bench baseline PORT SECRET | fake-koala PORT | fake-stripe PORT N | latency KOALA_PORT ROUTER_PORT HOOKS RATE SECONDS\n".utf8))
    exit(2)
}
let logger = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })
let router = Router()

switch arguments[1] {
case "latency":
    guard arguments.count >= 7, let routerPort = Int(arguments[3]), let rate = Double(arguments[5]), let seconds = Double(arguments[6]) else { exit(2) }
    do {
        try await latencyRun(koalaPort: port, routerPort: routerPort, hooksFile: arguments[4], rate: rate, seconds: seconds, logger: logger)
        exit(0)
    } catch {
        FileHandle.standardError.write(Data("koala-router-bench latency: \(error)\n".utf8))
        exit(1)
    }
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
case "fake-stripe":
    let total = arguments.count >= 4 ? Int(arguments[3]) ?? 10_000 : 10_000
    let customer: @Sendable (Int) -> JSONValue = { i in
        ["id": .string(String(format: "cus_%07d", i)), "object": "customer", "email": .string("owner\(i)@company\(i).io"),
         "name": .string("Owner \(i)"), "created": .int(Int64(1_600_000_000 + i)), "currency": "usd", "livemode": false, "metadata": [:]]
    }
    let subscription: @Sendable (Int) -> JSONValue = { i in
        let id = String(format: "sub_%07d", i)
        var discounts: [JSONValue] = []
        if i % 5 == 0 {
            discounts = [["id": .string("di_\(i)"), "object": "discount", "start": 1_600_000_000, "end": .null,
                          "coupon": ["id": "SAVE20", "object": "coupon", "percent_off": 20, "duration": "forever", "valid": true]]]
        }
        let trial = i % 7 == 0
        return ["id": .string(id), "object": "subscription", "customer": .string(String(format: "cus_%07d", i)),
                "status": .string(trial ? "trialing" : "active"), "currency": "usd", "created": .int(Int64(1_600_000_100 + i)),
                "start_date": .int(Int64(1_600_000_100 + i)), "current_period_start": 1_733_000_000, "current_period_end": 1_735_600_000,
                "cancel_at_period_end": false, "cancel_at": .null, "canceled_at": .null, "pause_collection": .null, "discount": .null,
                "discounts": .array(discounts), "trial_end": trial ? 1_900_000_000 : .null, "ended_at": .null, "livemode": false,
                "items": ["object": "list", "has_more": false, "data": [[
                    "id": .string("si_\(i)"), "object": "subscription_item", "quantity": .int(Int64(1 + i % 4)),
                    "price": ["id": "price_team", "object": "price", "nickname": "Team", "currency": "usd", "type": "recurring",
                              "billing_scheme": "per_unit", "unit_amount": .int(Int64(1000 * (1 + i % 9))),
                              "recurring": ["interval": i % 3 == 0 ? "year" : "month", "interval_count": 1, "usage_type": "licensed"]],
                ]]]]
    }
    let page: @Sendable (Request, BasicRequestContext, @Sendable (Int) -> JSONValue, String) -> Response = { request, _, make, prefix in
        var after: String?
        for (name, value) in request.uri.queryParameters where name == "starting_after" { after = String(value) }
        let start = after.flatMap { Int($0.dropFirst(prefix.count)) }.map { $0 + 1 } ?? 0
        let end = min(total, start + 100)
        let data = (start..<end).map(make)
        let body = JSONValue.object(["object": "list", "has_more": .bool(end < total), "url": "/v1/list", "data": .array(data)])
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body.encoded())))
    }
    router.get("/v1/customers") { request, context in page(request, context, customer, "cus_") }
    router.get("/v1/subscriptions") { request, context in page(request, context, subscription, "sub_") }
default:
    FileHandle.standardError.write(Data("unknown mode \(arguments[1])\n".utf8))
    exit(2)
}

let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger)
try await app.runService()

import Benchmark
import Foundation
import HTTPTypes
import KoalaCore
import KoalaDelivery
import KoalaStore

/// The per-webhook work after verification: parsing the body, routing it through each shipped route (with
/// its sample payload from routes/samples), and assembling and encoding the Koala requests for a round.
let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()
let table = try! RuleLoader(environment: [:]).load(directory: repository.appendingPathComponent("routes").path)

/// (name, source, body) for every sample payload.
let samples: [(String, SourceDefinition, [UInt8])] = {
    var out: [(String, SourceDefinition, [UInt8])] = []
    let folder = repository.appendingPathComponent("routes/samples")
    for source in (try? FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()) ?? [] {
        guard let definition = table.sources[source] else { continue }
        let dir = folder.appendingPathComponent(source)
        for file in (try? FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()) ?? [] where file.hasSuffix(".json") {
            let body = [UInt8](FileManager.default.contents(atPath: dir.appendingPathComponent(file).path)!)
            out.append(("\(source)/\(file.dropLast(5))", definition, body))
        }
    }
    return out
}()

/// A round's worth of leased messages: `people` people with `each` messages.
func outbox(people: Int, each: Int) -> [OutboxMessage] {
    var out: [OutboxMessage] = []
    var seq: Int64 = 0
    for n in 0..<each {
        for p in 0..<people {
            seq += 1
            let id = MessageID.derive(source: "stripe", webhookID: "evt_\(p)_\(n)", route: "invoice-paid", output: "track")
            let item = #"{"message_id":"\#(id)","type":"track","event":"Invoice Paid","properties":{"amount":49,"currency":"usd","plan":"pro"},"sent_at":"2026-11-29T10:00:00.000Z"}"#
            out.append(OutboxMessage(seq: seq, messageID: id, source: "stripe", route: "invoice-paid", endpoint: .person, kind: .track,
                                     identity: KoalaIdentity(email: "person\(p)@acme.io"), itemJSON: item,
                                     eventTime: Date(timeIntervalSince1970: 1_700_000_000 + Double(seq)), createdAt: Date(), attempts: 0))
        }
    }
    return out
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .cpuTotal, .mallocCountTotal], maxDuration: .seconds(2), maxIterations: 100_000)

    let invoice = samples.first { $0.0 == "stripe/invoice.paid" }!.2
    Benchmark("parse: JSON body of stripe/invoice.paid (\(invoice.count) B)") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(try? JSONValue.parse(invoice)) }
    }

    // Sources whose webhook id travels in a header (Standard Webhooks / Svix) get one.
    var headers = HTTPFields()
    for name in ["webhook-id", "svix-id"] { headers[HTTPField.Name(name)!] = "msg_benchmark_0001" }
    for name in ["webhook-timestamp", "svix-timestamp"] { headers[HTTPField.Name(name)!] = String(Int(Date().timeIntervalSince1970)) }
    for (name, definition, body) in samples {
        let json = try! JSONValue.parse(body)
        guard case .success = definition.webhook(body: body, json: json, headers: headers, receivedAt: Date(), secretLabel: "S",
                                                 rulesVersion: table.version) else {
            fatalError("sample \(name) does not identify as a webhook of its source")
        }
        let router = WebhookRouter(source: definition)
        Benchmark("route: \(name) (identify + every route)") { benchmark in
            for _ in benchmark.scaledIterations {
                if case .success(let webhook) = definition.webhook(body: body, json: json, headers: headers, receivedAt: Date(),
                                                                   secretLabel: "S", rulesVersion: table.version) {
                    blackHole(router.route(webhook))
                }
            }
        }
    }

    let onePerson = outbox(people: 1, each: 30)
    Benchmark("batch: plan + encode 30 events of one person") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(Batcher.plan(onePerson)) }
    }
    let round = outbox(people: 100, each: 5)
    Benchmark("batch: plan + encode a 500-message round for 100 people") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(Batcher.plan(round)) }
    }
}

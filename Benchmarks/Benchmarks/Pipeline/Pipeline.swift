import AsyncHTTPClient
import Benchmark
import Foundation
import HTTPTypes
import Hummingbird
import KoalaCore
import KoalaDelivery
import KoalaStore
import Logging
import Synchronization

/// Each stage of the pipeline after verification, by name, so a regression in one shows up as that stage:
/// parsing the body, routing it through each shipped route (with its sample payload from routes/samples),
/// storing it (a real SQLite file, synchronous=FULL), assembling and encoding the Koala requests for a round,
/// and sending one to a Koala stand-in on loopback.
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
    for _ in 0..<each {
        for p in 0..<people {
            seq += 1
            let id = UUID().uuidString.lowercased()
            let item = #"{"message_id":"\#(id)","type":"track","event":"Invoice Paid","properties":{"amount":49,"currency":"usd","plan":"pro"},"sent_at":"2026-11-29T10:00:00.000Z"}"#
            out.append(OutboxMessage(seq: seq, messageID: id, source: "stripe", route: "invoice-paid", endpoint: .person, kind: .track,
                                     identity: KoalaIdentity(email: "person\(p)@acme.io"), itemJSON: item,
                                     eventTime: Date(timeIntervalSince1970: 1_700_000_000 + Double(seq)), createdAt: Date(), attempts: 0))
        }
    }
    return out
}

/// The stripe/invoice.paid sample as `count` distinct webhooks (each its own event id), identified and routed.
let invoiceSample = samples.first { $0.0 == "stripe/invoice.paid" }!
let invoiceRouter = WebhookRouter(source: invoiceSample.1)
let invoiceID = (try! JSONValue.parse(invoiceSample.2))["id"]?.stringValue ?? "evt_1"
let webhookCounter = Atomic<Int>(0)
func routedInvoices(_ count: Int) -> [(VerifiedWebhook, [KoalaMessage])] {
    let text = String(decoding: invoiceSample.2, as: UTF8.self)
    return (0..<count).map { _ in
        let n = webhookCounter.add(1, ordering: .relaxed).newValue
        let body = Array(text.replacingOccurrences(of: "\"\(invoiceID)\"", with: "\"evt_bench_\(n)\"").utf8)
        guard case .success(let webhook) = invoiceSample.1.webhook(body: body, json: try! JSONTape.parse(body), headers: [:],
                                                                   receivedAt: Date(), secretLabel: "S", rulesVersion: table.version)
        else { fatalError("the invoice sample does not identify as a stripe webhook") }
        return (webhook, invoiceRouter.route(webhook))
    }
}

/// A fresh SQLite store in the temporary folder, its writer running until the process ends.
let benchStore = Task<SQLiteStore, any Error> {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("koala-router-benchmark-store")
    try? FileManager.default.removeItem(at: folder)
    let store = try await SQLiteStore(path: folder.appendingPathComponent("store.sqlite").path)
    Task { try await store.run() }
    return store
}

/// A Koala stand-in on loopback answering 200 at once, and a client for it (once one request got through).
let loopbackKoala = Task<KoalaClient, any Error> {
    let koala = Router()
    koala.post("/web/projects/:key/batch") { _, _ in
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{}")))
    }
    let port = 18_299
    let app = Application(router: koala, configuration: .init(address: .hostname("127.0.0.1", port: port)),
                          logger: Logger(label: "fake-koala", factory: { _ in SwiftLogNoOpLogHandler() }))
    Task { try await app.runService() }
    let client = KoalaClient(http: .shared, baseURL: "http://127.0.0.1:\(port)", publicKey: "pk_bench", timeout: 5,
                             logger: Logger(label: "bench"))
    let probe = Batcher.plan(outbox(people: 1, each: 1))[0][0]
    for _ in 0..<250 {
        if case .delivered = await client.send(probe) { return client }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw CancellationError()
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .cpuTotal, .mallocCountTotal], maxDuration: .seconds(2), maxIterations: 100_000)

    let invoice = samples.first { $0.0 == "stripe/invoice.paid" }!.2
    Benchmark("parse: JSON body of stripe/invoice.paid (\(invoice.count) B) into a tape, as ingest") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(try? JSONTape.parse(invoice)) }
    }
    Benchmark("parse: JSON body of stripe/invoice.paid (\(invoice.count) B) into a tree of JSONValues") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(try? JSONValue.parse(invoice)) }
    }

    // Sources whose webhook id travels in a header (Standard Webhooks / Svix) get one.
    var headers = HTTPFields()
    for name in ["webhook-id", "svix-id"] { headers[HTTPField.Name(name)!] = "msg_benchmark_0001" }
    for name in ["webhook-timestamp", "svix-timestamp"] { headers[HTTPField.Name(name)!] = String(Int(Date().timeIntervalSince1970)) }
    for (name, definition, body) in samples {
        let json = try! JSONTape.parse(body)
        guard case .success = definition.webhook(body: body, json: json, headers: headers, receivedAt: Date(), secretLabel: "S",
                                                 rulesVersion: table.version) else {
            fatalError("sample \(name) does not identify as a webhook of its source")
        }
        let router = WebhookRouter(source: definition)
        // What ingest does with a verified, parsed body: identify it, work out the memory keys its routes read
        // and the states they remember, and route it without building the 'why not' sentences.
        Benchmark("route: \(name) (identify + memory keys + every route, as ingest)") { benchmark in
            for _ in benchmark.scaledIterations {
                if case .success(let webhook) = definition.webhook(body: body, json: json, headers: headers, receivedAt: Date(),
                                                                   secretLabel: "S", rulesVersion: table.version) {
                    blackHole(router.recallKeys(webhook))
                    blackHole(router.stateKeys(webhook))
                    blackHole(router.routing(webhook, explaining: false))
                }
            }
        }
    }

    // Store accept: unique stripe/invoice.paid webhooks, routed before the measurement, so only the store is
    // measured; one store for the process, its group-commit writer running throughout.
    let stored = Benchmark.Configuration(metrics: [.wallClock, .cpuTotal, .mallocCountTotal], maxDuration: .seconds(2), maxIterations: 5_000)
    Benchmark("store: accept one webhook and its message (SQLite, synchronous=FULL: one commit each)", configuration: stored) { benchmark in
        let store = try await benchStore.value
        let prepared = routedInvoices(benchmark.scaledIterations.count)
        benchmark.startMeasurement()
        for (webhook, messages) in prepared {
            blackHole(try await store.accept(webhook, messages: messages, remembers: [], linger: 0, identityWait: 900))
        }
        benchmark.stopMeasurement()
    }
    Benchmark("store: accept 32 webhooks at once (group commit), time per 32", configuration: stored) { benchmark in
        let store = try await benchStore.value
        for _ in benchmark.scaledIterations {
            let prepared = routedInvoices(32)
            benchmark.startMeasurement()
            try await withThrowingTaskGroup(of: AcceptOutcome.self) { group in
                for (webhook, messages) in prepared {
                    group.addTask { try await store.accept(webhook, messages: messages, remembers: [], linger: 0, identityWait: 900) }
                }
                for try await outcome in group { blackHole(outcome) }
            }
            benchmark.stopMeasurement()
        }
    }

    // Send: one person's /batch request to a Koala stand-in on loopback that answers 200 at once, over a
    // kept-alive connection (AsyncHTTPClient, as the sender uses it).
    let batch = Batcher.plan(outbox(people: 1, each: 30))[0][0]
    Benchmark("send: one /batch request of 30 events to a loopback Koala (keep-alive)",
              configuration: .init(metrics: [.wallClock, .cpuTotal, .mallocCountTotal], maxDuration: .seconds(2), maxIterations: 20_000)) { benchmark in
        let client = try await loopbackKoala.value
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { blackHole(await client.send(batch)) }
        benchmark.stopMeasurement()
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

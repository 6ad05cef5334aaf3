import Foundation
import HTTPTypes
import KoalaCore
import MallocInterposerSwift

// Allocations per webhook on ingest's pure path, for scripts/bench/run (issue 30): the same steps as
// `Ingest.handle` between the body and the store — verify the signature, parse the JSON, identify the webhook,
// route it with the shipped rules, encode each message as the store writes it — counted by ordo-one's malloc
// interposer. Run with the interposer preloaded:
//   LD_PRELOAD=.build/release/libMallocInterposerSwift.so koala-router-allocations HOOKS.tsv SECRET [ROUTES]
// HOOKS.tsv is scripts/bench/make-webhooks.py's output (the load benchmark's webhooks). Prints one line per step,
// cumulative and alone, as allocations and bytes per webhook, and `total` as the last line.

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("koala-router-allocations: \(message)\n".utf8))
    exit(2)
}

let arguments = CommandLine.arguments
guard arguments.count >= 3 else { fail("usage: koala-router-allocations HOOKS.tsv SECRET [ROUTES]") }
let routesDirectory = arguments.count >= 4 ? arguments[3] : "routes"
let table: RuleTable
do {
    table = try RuleLoader(environment: ["STRIPE_WEBHOOK_SECRET": arguments[2]]).load(directory: routesDirectory)
} catch {
    fail("the rules in \(routesDirectory) do not load: \(error)")
}
guard let source = table.sources["stripe"], case .enabled(let verifier) = source.state else { fail("the stripe source is not enabled") }

/// One webhook as the load benchmark sends it.
struct Sample {
    let headers: HTTPFields
    let body: [UInt8]
}

guard let text = try? String(contentsOfFile: arguments[1], encoding: .utf8) else { fail("cannot read \(arguments[1])") }
let samples: [Sample] = text.split(separator: "\n").compactMap { line in
    let parts = line.split(separator: "\t", maxSplits: 2)
    guard parts.count == 3 else { return nil }
    return Sample(headers: [HTTPField.Name("Stripe-Signature")!: String(parts[0]), .contentType: "application/json"], body: Array(parts[2].utf8))
}
guard samples.count >= 200 else { fail("\(arguments[1]) holds \(samples.count) webhooks; at least 200 are needed") }

/// The steps, in order; a run does the first `steps` of them for every sample.
let stepNames = ["verify", "parse", "identify", "route", "encode"]
let router = WebhookRouter(source: source)
let now = Date()

/// Runs the first `steps` steps over `batch`; returns how many messages were encoded (so nothing is optimised away).
@inline(never)
func run(_ batch: ArraySlice<Sample>, steps: Int) -> Int {
    var produced = 0
    for sample in batch {
        guard case .success(let verification) = verifier.verify(headers: sample.headers, body: sample.body, now: now) else { fail("a webhook did not verify") }
        if steps < 2 { continue }
        guard let json = try? JSONTape.parse(sample.body) else { fail("a webhook is not JSON") }
        if steps < 3 { continue }
        guard case .success(let webhook) = source.webhook(body: sample.body, json: json, headers: sample.headers, receivedAt: now,
                                                          secretLabel: verification.secretLabel, rulesVersion: table.version) else {
            fail("a webhook was refused")
        }
        if steps < 4 { continue }
        let routing = router.routing(webhook, memory: [:], destinations: [.koala], explaining: false)
        if steps < 5 { produced += routing.messages.count; continue }
        for message in routing.messages { produced += message.item.encoded().utf8.count > 0 ? 1 : 0 }
    }
    return produced
}

// The interposer must be preloaded, or nothing is counted.
MallocInterposerSwift.hook()
let probe = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 8)
MallocInterposerSwift.unhook()
probe.deallocate()
guard MallocInterposerSwift.getStatistics().mallocCount > 0 else {
    fail("no allocation was counted: run with LD_PRELOAD=<bin>/libMallocInterposerSwift.so")
}

let warmup = samples.prefix(100), measured = samples.dropFirst(100)
var previous = (count: 0.0, bytes: 0.0)
var messages = 0
func padded(_ text: String) -> String { text + String(repeating: " ", count: max(0, 9 - text.count)) }
for steps in 1...stepNames.count {
    _ = run(warmup, steps: steps)   // caches, lazy statics and the first use of each code path
    MallocInterposerSwift.reset()
    MallocInterposerSwift.hook()
    messages = run(measured, steps: steps)
    MallocInterposerSwift.unhook()
    let stats = MallocInterposerSwift.getStatistics()
    let count = Double(stats.mallocCount) / Double(measured.count), bytes = Double(stats.mallocBytesCount) / Double(measured.count)
    print(padded(stepNames[steps - 1]) + String(format: "%8.1f allocations %8.0f bytes per webhook, cumulative; this step alone %6.1f allocations %7.0f bytes",
                                               count, bytes, count - previous.count, bytes - previous.bytes))
    previous = (count, bytes)
}
print(padded("total") + String(format: "%8.1f allocations %8.0f bytes per webhook, over %d webhooks that made %d messages",
                               previous.count, previous.bytes, measured.count, messages))

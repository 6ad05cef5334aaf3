import Benchmark
import Foundation
import HTTPTypes
import KoalaCore

/// Cost of verifying one 2 KB webhook, per scheme, with the bare HMAC-SHA256 of the same bytes as baseline.
let body: [UInt8] = {
    var text = #"{"id":"evt_bench","type":"invoice.paid","data":{"object":{"customer_email":"ada@acme.io","note":""#
    text += String(repeating: "x", count: 2048 - text.utf8.count - 5) + #""}}}"#
    return Array(text.utf8)
}()

let now = Date()
let seconds = Int64(now.timeIntervalSince1970)
let secret = Array("whsec_benchmark_secret_value".utf8)

func fields(_ pairs: [String: String]) -> HTTPFields {
    var f = HTTPFields()
    for (k, v) in pairs { f[HTTPField.Name(k)!] = v }
    return f
}

func hexHMAC(_ data: [UInt8], _ algorithm: Crypto.Algorithm = .sha256) -> String { Hex.encode(Crypto.hmac(algorithm, key: secret, data: data)) }

/// (scheme, options, headers) for a valid request of each scheme.
let cases: [(String, Schemes.Options, HTTPFields)] = {
    let swKey = StandardWebhooksVerifier.decodeSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")!
    let iso = Timestamps.iso(now)
    return [
        ("stripe", [:], fields(["Stripe-Signature": "t=\(seconds),v1=\(hexHMAC(Array("\(seconds).".utf8) + body))"])),
        ("paddle", [:], fields(["Paddle-Signature": "ts=\(seconds);h1=\(hexHMAC(Array("\(seconds):".utf8) + body))"])),
        ("workos", [:], fields(["WorkOS-Signature": "t=\(seconds * 1000), v1=\(hexHMAC(Array("\(seconds * 1000).".utf8) + body))"])),
        ("recurly", [:], fields(["recurly-signature": "\(seconds * 1000),\(hexHMAC(Array("\(seconds * 1000).".utf8) + body))"])),
        ("standard-webhooks", [:], fields(["webhook-id": "msg_1", "webhook-timestamp": String(seconds),
                                          "webhook-signature": StandardWebhooksVerifier.sign(id: "msg_1", timestamp: seconds, body: body, key: swKey)])),
        ("orb", [:], fields(["X-Orb-Timestamp": iso, "X-Orb-Signature": "v1=\(hexHMAC(Array("v1:\(iso):".utf8) + body))"])),
        ("github", [:], fields(["X-Hub-Signature-256": "sha256=\(hexHMAC(body))"])),
        ("shopify", [:], fields(["X-Shopify-Hmac-Sha256": Base64.encode(Crypto.hmac(.sha256, key: secret, data: body))])),
        ("lemon-squeezy", [:], fields(["X-Signature": hexHMAC(body)])),
        ("hmac", ["header": "X-Sig", "algorithm": "sha512", "encoding": "base64"],
         fields(["X-Sig": Base64.encode(Crypto.hmac(.sha512, key: secret, data: body))])),
        ("basic-auth", ["username": "user"], fields(["Authorization": "Basic " + Base64.encode(Array("user:".utf8) + secret)])),
        ("bearer-token", [:], fields(["Authorization": "Bearer " + String(decoding: secret, as: UTF8.self)])),
    ]
}()

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .cpuTotal, .mallocCountTotal], maxDuration: .seconds(2), maxIterations: 200_000)

    Benchmark("baseline: HMAC-SHA256 of 2 KB") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(Crypto.hmac(.sha256, key: secret, data: body))
        }
    }

    for (scheme, options, headers) in cases {
        let definition = Schemes.all[scheme]!
        let key = scheme == "standard-webhooks" ? StandardWebhooksVerifier.decodeSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")! : secret
        let verifier = try! definition.verifier(options: options, secrets: [WebhookSecret(label: "S", key: key)],
                                                tolerance: definition.defaultTolerance ?? 0)
        guard case .success = verifier.verify(headers: headers, body: body, now: now) else {
            fatalError("benchmark case \(scheme) does not verify")
        }
        Benchmark("verify \(scheme), 2 KB") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(verifier.verify(headers: headers, body: body, now: now))
            }
        }
    }
}

import Foundation
import KoalaApp
import KoalaCore
import KoalaStore

/// Signs a body the way each provider does, so fuzzed bodies get past verification and reach the code behind it.
public enum FuzzSigner {
    /// The headers that authenticate `body` for `scheme` with `key` (the decoded secret) at `now`.
    /// `options` are the `hmac` scheme's (see `FuzzHarness.hmacOptions`); `id` is the webhook id to sign where the scheme has one.
    public static func headers(scheme: String, key: [UInt8], username: String = "koala", body: [UInt8], now: Date,
                               id: String) -> [(String, String)] {
        let seconds = Int64(now.timeIntervalSince1970)
        let millis = Int64(now.timeIntervalSince1970 * 1000)
        func hex(_ data: [UInt8], _ algorithm: Crypto.Algorithm = .sha256) -> String { Hex.encode(Crypto.hmac(algorithm, key: key, data: data)) }
        switch scheme {
        case "stripe":
            return [("Stripe-Signature", "t=\(seconds),v1=\(hex(Array("\(seconds).".utf8) + body))")]
        case "paddle":
            return [("Paddle-Signature", "ts=\(seconds);h1=\(hex(Array("\(seconds):".utf8) + body))")]
        case "workos":
            return [("WorkOS-Signature", "t=\(millis), v1=\(hex(Array("\(millis).".utf8) + body))")]
        case "recurly":
            return [("Recurly-Signature", "\(millis),\(hex(Array("\(millis).".utf8) + body))")]
        case "standard-webhooks":
            return [("webhook-id", id), ("webhook-timestamp", String(seconds)),
                    ("webhook-signature", StandardWebhooksVerifier.sign(id: id, timestamp: seconds, body: body, key: key))]
        case "github":
            return [("X-Hub-Signature-256", "sha256=\(hex(body))")]
        case "shopify":
            return [("X-Shopify-Hmac-Sha256", Base64.encode(Crypto.hmac(.sha256, key: key, data: body)))]
        case "lemon-squeezy":
            return [("X-Signature", hex(body))]
        case "orb":
            let timestamp = Timestamps.iso(now)
            return [("X-Orb-Timestamp", timestamp), ("X-Orb-Signature", "v1=\(hex(Array("v1:\(timestamp):".utf8) + body))")]
        case "hmac":
            // FuzzHarness.hmacOptions: sha512, base64, prefix sha512=, signed "{timestamp}:{id}:{body}".
            let signature = Base64.encode(Crypto.hmac(.sha512, key: key, data: Array("\(seconds):\(id):".utf8) + body))
            return [("X-Sig", "sha512=" + signature), ("X-Ts", String(seconds)), ("X-Delivery", id)]
        case "basic-auth":
            return [("Authorization", "Basic " + Base64.encode(Array(username.utf8) + [UInt8(ascii: ":")] + key))]
        case "bearer-token":
            return [("Authorization", "Bearer " + String(decoding: key, as: UTF8.self))]
        default:
            return []
        }
    }

    /// Header names a scheme's signing sets, and their alternative spellings, lower-cased.
    static func names(_ headers: [(String, String)], scheme: String) -> Set<String> {
        var names = Set(headers.map { $0.0.lowercased() })
        if scheme == "standard-webhooks" { names.formUnion(["svix-id", "svix-timestamp", "svix-signature"]) }
        return names
    }
}

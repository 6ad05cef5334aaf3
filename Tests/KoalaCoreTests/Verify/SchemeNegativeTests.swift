import Foundation
import HTTPTypes
import Testing
@testable import KoalaCore
import KoalaTestSupport

/// The same attacks against every scheme: a flipped byte, the wrong secret, stale and future timestamps,
/// a missing and a malformed header, and a rotated secret that must still verify.
@Suite("Every scheme refuses the usual attacks")
struct SchemeNegativeTests {
    static let key = Array("k3y-for-every-scheme".utf8)
    static let body = Array(#"{"id":"evt_neg","type":"x","data":{"email":"a@acme.io"}}"#.utf8)

    struct Case: Sendable, CustomTestStringConvertible {
        let scheme: String
        let options: Schemes.Options
        /// The header that carries the proof.
        let header: String
        let timestamped: Bool
        let sign: @Sendable (_ key: [UInt8], _ body: [UInt8], _ at: Date) -> HTTPFields
        var testDescription: String { scheme }
    }

    static func hex(_ key: [UInt8], _ data: [UInt8]) -> String { Hex.encode(Crypto.hmac(.sha256, key: key, data: data)) }

    static let cases: [Case] = [
        Case(scheme: "stripe", options: [:], header: "Stripe-Signature", timestamped: true) { k, b, t in
            let s = Int64(t.timeIntervalSince1970)
            return fields(["Stripe-Signature": "t=\(s),v1=\(hex(k, Array("\(s).".utf8) + b))"])
        },
        Case(scheme: "paddle", options: [:], header: "Paddle-Signature", timestamped: true) { k, b, t in
            let s = Int64(t.timeIntervalSince1970)
            return fields(["Paddle-Signature": "ts=\(s);h1=\(hex(k, Array("\(s):".utf8) + b))"])
        },
        Case(scheme: "workos", options: [:], header: "WorkOS-Signature", timestamped: true) { k, b, t in
            let ms = Int64(t.timeIntervalSince1970 * 1000)
            return fields(["WorkOS-Signature": "t=\(ms), v1=\(hex(k, Array("\(ms).".utf8) + b))"])
        },
        Case(scheme: "recurly", options: [:], header: "Recurly-Signature", timestamped: true) { k, b, t in
            let ms = Int64(t.timeIntervalSince1970 * 1000)
            return fields(["recurly-signature": "\(ms),\(hex(k, Array("\(ms).".utf8) + b))"])
        },
        Case(scheme: "standard-webhooks", options: [:], header: "webhook-signature", timestamped: true) { k, b, t in
            let s = Int64(t.timeIntervalSince1970)
            return fields(["webhook-id": "msg_1", "webhook-timestamp": String(s),
                           "webhook-signature": StandardWebhooksVerifier.sign(id: "msg_1", timestamp: s, body: b, key: k)])
        },
        Case(scheme: "orb", options: [:], header: "X-Orb-Signature", timestamped: true) { k, b, t in
            let iso = Timestamps.iso(t)
            return fields(["X-Orb-Timestamp": iso, "X-Orb-Signature": "v1=\(hex(k, Array("v1:\(iso):".utf8) + b))"])
        },
        Case(scheme: "hmac", options: ["header": "X-Sig", "timestamp_header": "X-Ts", "prefix": "v1="], header: "X-Sig", timestamped: true) { k, b, t in
            let s = Int64(t.timeIntervalSince1970)
            return fields(["X-Ts": String(s), "X-Sig": "v1=\(hex(k, Array("\(s).".utf8) + b))"])
        },
        Case(scheme: "github", options: [:], header: "X-Hub-Signature-256", timestamped: false) { k, b, _ in
            fields(["X-Hub-Signature-256": "sha256=\(hex(k, b))"])
        },
        Case(scheme: "shopify", options: [:], header: "X-Shopify-Hmac-Sha256", timestamped: false) { k, b, _ in
            fields(["X-Shopify-Hmac-Sha256": Base64.encode(Crypto.hmac(.sha256, key: k, data: b))])
        },
        Case(scheme: "lemon-squeezy", options: [:], header: "X-Signature", timestamped: false) { k, b, _ in
            fields(["X-Signature": hex(k, b)])
        },
        Case(scheme: "basic-auth", options: ["username": "user"], header: "Authorization", timestamped: false) { k, _, _ in
            fields(["Authorization": "Basic " + Base64.encode(Array("user:".utf8) + k)])
        },
        Case(scheme: "bearer-token", options: [:], header: "Authorization", timestamped: false) { k, _, _ in
            fields(["Authorization": "Bearer " + String(decoding: k, as: UTF8.self)])
        },
    ]

    func make(_ c: Case, _ keys: [[UInt8]]) throws -> any SignatureVerifier {
        try verifier(c.scheme, secrets: keys, options: c.options)
    }

    @Test(arguments: cases)
    func attacks(_ c: Case) throws {
        let now = Date()
        let v = try make(c, [Self.key])
        let good = c.sign(Self.key, Self.body, now)
        #expect(v.verify(headers: good, body: Self.body, now: now) == ok0)

        // Rotation: the old secret still verifies, reported by its label.
        let rotated = try make(c, [Array("the-new-secret".utf8), Self.key])
        #expect(rotated.verify(headers: good, body: Self.body, now: now) == ok1)

        // The wrong secret.
        #expect(v.verify(headers: c.sign(Array("not-the-secret".utf8), Self.body, now), body: Self.body, now: now) == .failure(.signatureMismatch))

        // One flipped byte (credential schemes sign nothing, so the body is theirs to change).
        if !["basic-auth", "bearer-token"].contains(c.scheme) {
            var tampered = Self.body
            tampered[7] ^= 0x01
            #expect(v.verify(headers: good, body: tampered, now: now) == .failure(.signatureMismatch))
        }

        // The header is missing, then garbage.
        var missing = good
        missing[HTTPField.Name(c.header)!] = nil
        #expect(v.verify(headers: missing, body: Self.body, now: now) == .failure(.missingHeader(c.header)) ||
                v.verify(headers: missing, body: Self.body, now: now) == .failure(.missingHeader("webhook-id")))
        var garbage = good
        garbage[HTTPField.Name(c.header)!] = "zz!!not a signature"
        let garbled = v.verify(headers: garbage, body: Self.body, now: now)
        #expect(garbled == .failure(.malformedHeader(c.header)) || (c.scheme == "bearer-token" && garbled == .failure(.signatureMismatch)))

        // Stale and future timestamps, signed correctly.
        if c.timestamped {
            let tolerance = Schemes.all[c.scheme]!.defaultTolerance!
            let stale = c.sign(Self.key, Self.body, now.addingTimeInterval(-tolerance - 5))
            let future = c.sign(Self.key, Self.body, now.addingTimeInterval(tolerance + 5))
            #expect(v.verify(headers: stale, body: Self.body, now: now) == .failure(.timestampOutsideTolerance))
            #expect(v.verify(headers: future, body: Self.body, now: now) == .failure(.timestampOutsideTolerance))
            let recent = c.sign(Self.key, Self.body, now.addingTimeInterval(-tolerance + 5))
            #expect(v.verify(headers: recent, body: Self.body, now: now) == ok0)
        }
    }

    /// `koala-router send` signs with the source's own verifier: its headers are the ones the provider would
    /// send (the independent signers above), and they verify.
    @Test(arguments: cases)
    func aVerifierSignsAsTheProviderDoes(_ c: Case) throws {
        let now = Date(timeIntervalSince1970: 1_732_871_520.25)
        let v = try make(c, [Self.key])
        let signed = try #require(v.sign(body: Self.body, id: "msg_1", now: now))
        for field in c.sign(Self.key, Self.body, now) {
            #expect(signed.contains { $0.name.lowercased() == field.name.canonicalName && $0.value == field.value },
                    "\(c.scheme): \(field.name) should be \(field.value), signed: \(signed)")
        }
        var fields = HTTPFields()
        for (name, value) in signed { fields.append(HTTPField(name: try #require(HTTPField.Name(name)), value: value)) }
        #expect(v.verify(headers: fields, body: Self.body, now: now) == ok0)
        #expect(try make(c, []).sign(body: Self.body, id: "msg_1", now: now) == nil)
    }

    @Test func everySchemeIsCovered() {
        #expect(Set(Self.cases.map(\.scheme)) == Set(Schemes.all.keys))
    }
}

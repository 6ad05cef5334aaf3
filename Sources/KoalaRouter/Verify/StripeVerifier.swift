import Foundation
import HTTPTypes

/// Stripe: `Stripe-Signature: t=<unix s>,v1=<hex>[,v1=<hex>…]`, HMAC-SHA256 over `"{t}.{body}"` keyed with
/// the secret string's bytes (`whsec_` prefix included). Any `v1` may match; other schemes (`v0`) are ignored.
public struct StripeVerifier: SignatureVerifier {
    public static let defaultTolerance: Double = 300
    public static let header = "Stripe-Signature"

    public let secrets: [WebhookSecret]
    public let tolerance: Double
    public var scheme: String { "stripe" }

    public init(secrets: [WebhookSecret], tolerance: Double = StripeVerifier.defaultTolerance) {
        self.secrets = secrets
        self.tolerance = tolerance
    }

    public func verify(headers: HTTPFields, body: [UInt8], now: Date) -> Result<Verification, VerificationFailure> {
        guard let header = headers.value(named: Self.header) else {
            return .failure(.missingHeader(Self.header))
        }
        var timestampText: Substring?
        var signatures: [[UInt8]] = []
        for item in header.split(separator: ",") {
            let pair = item.split(separator: "=", maxSplits: 1)
            guard pair.count == 2 else { continue }
            let key = pair[0].trimmingCharacters(in: .whitespaces)
            let value = pair[1].trimmingCharacters(in: .whitespaces)
            if key == "t" {
                timestampText = Substring(value)
            } else if key == "v1", let bytes = Hex.decode(value) {
                signatures.append(bytes)
            }
        }
        guard let timestampText, let timestamp = Int64(timestampText), !signatures.isEmpty else {
            return .failure(.malformedHeader(Self.header))
        }
        var signed = Array(timestampText.utf8)
        signed.append(UInt8(ascii: "."))
        signed.append(contentsOf: body)
        guard let label = SignatureCheck.match(.sha256, secrets: secrets, signed: signed, candidates: signatures) else {
            return .failure(.signatureMismatch)
        }
        // The timestamp is checked only after the signature, so an attacker cannot probe the tolerance.
        guard SignatureCheck.withinTolerance(Double(timestamp), now: now, tolerance: tolerance) else {
            return .failure(.timestampOutsideTolerance)
        }
        return .success(Verification(secretLabel: label))
    }

    /// Builds a header for `body` the way Stripe does. Used by tests, `simulate` and the load benchmark.
    public static func sign(body: [UInt8], secret: String, timestamp: Int64) -> String {
        var signed = Array(String(timestamp).utf8)
        signed.append(UInt8(ascii: "."))
        signed.append(contentsOf: body)
        return "t=\(timestamp),v1=\(Hex.encode(Crypto.hmac(.sha256, key: Array(secret.utf8), data: signed)))"
    }
}

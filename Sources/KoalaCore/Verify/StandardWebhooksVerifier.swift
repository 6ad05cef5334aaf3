package import Foundation
package import HTTPTypes

/// Standard Webhooks (and Svix, which wrote it): `webhook-id`, `webhook-timestamp`, `webhook-signature`
/// (or the `svix-*` spellings); signs `"{id}.{timestamp}.{body}"` with HMAC-SHA256; the signature header is a
/// space-separated list of `v1,<base64>` entries, any of which may match; other versions are skipped.
package struct StandardWebhooksVerifier: SignatureVerifier {
    static let defaultTolerance: Double = 300

    let secrets: [WebhookSecret]
    let tolerance: Double
    package var scheme: String { "standard-webhooks" }
    package var credentialHeaders: [String] { ["webhook-signature", "svix-signature"] }
    /// Whichever spelling is verified, both must agree where both are sent (see `verify`).
    package var signedHeaders: [String] { ["webhook-id", "webhook-timestamp", "svix-id", "svix-timestamp"] }

    init(secrets: [WebhookSecret], tolerance: Double = StandardWebhooksVerifier.defaultTolerance) {
        self.secrets = secrets
        self.tolerance = tolerance
    }

    /// Both spellings, as Svix (Clerk) sends `svix-*` and a rule may read the id from either.
    package func sign(body: [UInt8], id: String, now: Date) -> [(name: String, value: String)]? {
        guard let key = secrets.first?.key else { return nil }
        let timestamp = Int64(now.timeIntervalSince1970)
        let signature = Self.sign(id: id, timestamp: timestamp, body: body, key: key)
        return ["webhook", "svix"].flatMap { prefix in
            [("\(prefix)-id", id), ("\(prefix)-timestamp", String(timestamp)), ("\(prefix)-signature", signature)]
        }
    }

    /// `whsec_<base64>` → the decoded key bytes. Also accepts the bare base64, missing padding, and Supabase's
    /// `v1,whsec_<base64>` display form. Nil if the text is not base64.
    package static func decodeSecret(_ text: String) -> [UInt8]? {
        var s = text.trimmingWhitespace
        if s.hasPrefix("v1,") { s.removeFirst(3) }
        if s.hasPrefix("whsec_") { s.removeFirst(6) }
        return Base64.decode(s)
    }

    /// The id, timestamp and well-formed `v1` signatures of the spelling that is verified, or why there are none.
    private func parsed(_ headers: HTTPFields) -> Result<(id: String, timestampText: String, timestamp: Int64, candidates: [[UInt8]]), VerificationFailure> {
        // A request may carry both spellings (Svix sends svix-*, some relays add webhook-*). Only one set is
        // verified, and rules may read the id or time from either: where both are sent they must agree, or an
        // extra unsigned `webhook-id` would make a captured request pass dedupe as a new webhook.
        for field in ["id", "timestamp"] {
            if let a = headers.value(named: "webhook-" + field), let b = headers.value(named: "svix-" + field),
               a.trimmingSpaces != b.trimmingSpaces {
                return .failure(.conflictingHeaders("webhook-" + field, "svix-" + field))
            }
        }
        let svix = headers.value(named: "webhook-signature") == nil && headers.value(named: "svix-signature") != nil
        let prefix = svix ? "svix-" : "webhook-"
        guard let id = headers.value(named: prefix + "id") else { return .failure(.missingHeader(prefix + "id")) }
        guard let timestampText = headers.value(named: prefix + "timestamp") else { return .failure(.missingHeader(prefix + "timestamp")) }
        guard let signatureHeader = headers.value(named: prefix + "signature") else { return .failure(.missingHeader(prefix + "signature")) }
        guard let timestamp = Int64(timestampText.trimmingSpaces) else {
            return .failure(.malformedHeader(prefix + "timestamp"))
        }
        var candidates: [[UInt8]] = []
        for entry in signatureHeader.split(separator: " ") {
            let parts = entry.split(separator: ",", maxSplits: 1)
            guard parts.count == 2, parts[0] == "v1", let bytes = Base64.decode(parts[1]), bytes.count == Crypto.Algorithm.sha256.digestLength else { continue }
            candidates.append(bytes)
        }
        guard !candidates.isEmpty else { return .failure(.malformedHeader(prefix + "signature")) }
        return .success((id, timestampText.trimmingSpaces, timestamp, candidates))
    }

    package func precheck(headers: HTTPFields, now: Date) -> VerificationFailure? {
        switch parsed(headers) {
        case .failure(let failure): return failure
        case .success(let p): return SignatureCheck.withinTolerance(Double(p.timestamp), now: now, tolerance: tolerance) ? nil : .timestampOutsideTolerance
        }
    }

    package func verify(headers: HTTPFields, body: [UInt8], now: Date) -> Result<Verification, VerificationFailure> {
        let p: (id: String, timestampText: String, timestamp: Int64, candidates: [[UInt8]])
        switch parsed(headers) {
        case .failure(let failure): return .failure(failure)
        case .success(let parsed): p = parsed
        }
        var signed = Array(p.id.utf8)
        signed.append(UInt8(ascii: "."))
        signed += Array(p.timestampText.utf8)
        signed.append(UInt8(ascii: "."))
        signed += body
        guard let label = SignatureCheck.match(.sha256, secrets: secrets, signed: signed, candidates: p.candidates) else {
            return .failure(.signatureMismatch)
        }
        guard SignatureCheck.withinTolerance(Double(p.timestamp), now: now, tolerance: tolerance) else {
            return .failure(.timestampOutsideTolerance)
        }
        return .success(Verification(secretLabel: label))
    }

    /// `v1,<base64>` for the given key bytes.
    package static func sign(id: String, timestamp: Int64, body: [UInt8], key: [UInt8]) -> String {
        let signed = Array("\(id).\(timestamp).".utf8) + body
        return "v1," + Base64.encode(Crypto.hmac(.sha256, key: key, data: signed))
    }
}

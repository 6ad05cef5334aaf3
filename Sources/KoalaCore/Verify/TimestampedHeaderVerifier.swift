package import Foundation
package import HTTPTypes

/// Schemes whose one header carries both a timestamp and one or more hex HMAC-SHA256 signatures over
/// `"{timestamp}{separator}{body}"`: Stripe, Paddle Billing, WorkOS, Recurly.
package struct TimestampedHeaderVerifier: SignatureVerifier {
    /// The header layout: which header, the timestamp and signature prefixes, what is signed.
    package struct Format: Sendable {
        let scheme: String
        let header: String
        /// Between the timestamp text and the body in the signed bytes.
        let separator: String
        /// Timestamp unit: 1 for seconds, 1000 for milliseconds.
        let unitsPerSecond: Double
        /// Writes the header from the timestamp text and one hex signature, as the provider does.
        let write: @Sendable (_ timestamp: String, _ signature: String) -> String
        /// Splits the header into (timestamp text, hex signatures); nil when malformed.
        let parse: @Sendable (String) -> (timestamp: Substring, signatures: [Substring])?
    }

    let format: Format
    let secrets: [WebhookSecret]
    let tolerance: Double
    package var scheme: String { format.scheme }
    package var credentialHeaders: [String] { [format.header] }

    init(format: Format, secrets: [WebhookSecret], tolerance: Double) {
        self.format = format
        self.secrets = secrets
        self.tolerance = tolerance
    }

    package func sign(body: [UInt8], id: String, now: Date) -> [(name: String, value: String)]? {
        guard let key = secrets.first?.key else { return nil }
        let timestamp = String(Int64(now.timeIntervalSince1970 * format.unitsPerSecond))
        let signature = Hex.encode(Crypto.hmac(.sha256, key: key, data: Array((timestamp + format.separator).utf8) + body))
        return [(format.header, format.write(timestamp, signature))]
    }

    /// The header's timestamp and its well-formed signatures (32 bytes each), or why there are none.
    private func parsed(_ headers: HTTPFields) -> Result<(timestampText: Substring, timestamp: Double, candidates: [[UInt8]]), VerificationFailure> {
        guard let header = headers.value(named: format.header) else { return .failure(.missingHeader(format.header)) }
        guard let parsed = format.parse(header), let timestamp = Double(parsed.timestamp), timestamp.isFinite else {
            return .failure(.malformedHeader(format.header))
        }
        let candidates = parsed.signatures.compactMap { Hex.decode($0) }.filter { $0.count == Crypto.Algorithm.sha256.digestLength }
        guard !candidates.isEmpty else { return .failure(.malformedHeader(format.header)) }
        return .success((parsed.timestamp, timestamp, candidates))
    }

    package func precheck(headers: HTTPFields, now: Date) -> VerificationFailure? {
        switch parsed(headers) {
        case .failure(let failure): return failure
        case .success(let p):
            // The window is public (each provider documents it), so saying it before the body costs nothing.
            return SignatureCheck.withinTolerance(p.timestamp / format.unitsPerSecond, now: now, tolerance: tolerance) ? nil : .timestampOutsideTolerance
        }
    }

    package func verify(headers: HTTPFields, body: [UInt8], now: Date) -> Result<Verification, VerificationFailure> {
        let parsed: (timestampText: Substring, timestamp: Double, candidates: [[UInt8]])
        switch self.parsed(headers) {
        case .failure(let failure): return .failure(failure)
        case .success(let p): parsed = p
        }
        let timestamp = parsed.timestamp, candidates = parsed.candidates
        var signed = Array(parsed.timestampText.utf8) + Array(format.separator.utf8)
        signed.append(contentsOf: body)
        guard let label = SignatureCheck.match(.sha256, secrets: secrets, signed: signed, candidates: candidates) else {
            return .failure(.signatureMismatch)
        }
        // Checked after the signature so an unsigned request cannot probe the tolerance.
        guard SignatureCheck.withinTolerance(timestamp / format.unitsPerSecond, now: now, tolerance: tolerance) else {
            return .failure(.timestampOutsideTolerance)
        }
        return .success(Verification(secretLabel: label))
    }

    /// Splits `k=v` items on `itemSeparator`, returning the value of `timestampKey` and all values of `signatureKey`.
    static func keyValues(_ header: String, itemSeparator: Character, timestampKey: String, signatureKey: String)
        -> (timestamp: Substring, signatures: [Substring])?
    {
        var timestamp: Substring?
        var signatures: [Substring] = []
        // ASCII headers (every real one) are split by byte; any other text by character, as before.
        if let separator = itemSeparator.asciiValue, header.utf8.allSatisfy({ $0 < 0x80 }) {
            func take(_ item: Substring) {
                // A key (before the first '=') and a value, both non-empty before trimming.
                guard let equals = item.utf8.firstIndex(of: UInt8(ascii: "=")), equals != item.startIndex else { return }
                let rest = item[item.utf8.index(after: equals)...]
                guard !rest.isEmpty else { return }
                let key = trimmed(item[..<equals]), value = trimmed(rest)
                if key == timestampKey { timestamp = value } else if key == signatureKey { signatures.append(value) }
            }
            var start = header.startIndex, index = header.startIndex
            while index != header.endIndex {
                if header.utf8[index] == separator {
                    take(header[start..<index])
                    start = header.utf8.index(after: index)
                }
                index = header.utf8.index(after: index)
            }
            take(header[start...])
            guard let timestamp, !signatures.isEmpty else { return nil }
            return (timestamp, signatures)
        }
        return keyValuesByCharacter(header, itemSeparator: itemSeparator, timestampKey: timestampKey, signatureKey: signatureKey)
    }

    /// `keyValues` by `Character` (grapheme clusters): for headers that are not ASCII, and as the reference a test
    /// holds the byte path to.
    static func keyValuesByCharacter(_ header: String, itemSeparator: Character, timestampKey: String, signatureKey: String)
        -> (timestamp: Substring, signatures: [Substring])?
    {
        var timestamp: Substring?
        var signatures: [Substring] = []
        for item in header.split(separator: itemSeparator) {
            // The key is what comes before the first '=' ("=t=1" has an empty key, not the key t), as the byte path reads it.
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard pair.count == 2, !pair[0].isEmpty, !pair[1].isEmpty else { continue }
            let key = trimmed(pair[0])
            let value = trimmed(pair[1])
            if key == timestampKey { timestamp = value } else if key == signatureKey { signatures.append(value) }
        }
        guard let timestamp, !signatures.isEmpty else { return nil }
        return (timestamp, signatures)
    }

    /// Stripe: `Stripe-Signature: t=<s>,v1=<hex>[,v1=…]`; other schemes such as `v0` are ignored.
    static let stripe = Format(scheme: "stripe", header: "Stripe-Signature", separator: ".", unitsPerSecond: 1, write: { "t=\($0),v1=\($1)" }) {
        keyValues($0, itemSeparator: ",", timestampKey: "t", signatureKey: "v1")
    }

    /// Paddle Billing: `Paddle-Signature: ts=<s>;h1=<hex>[;h1=…]`, signed `"{ts}:{body}"`.
    static let paddle = Format(scheme: "paddle", header: "Paddle-Signature", separator: ":", unitsPerSecond: 1, write: { "ts=\($0);h1=\($1)" }) {
        keyValues($0, itemSeparator: ";", timestampKey: "ts", signatureKey: "h1")
    }

    /// WorkOS: `WorkOS-Signature: t=<ms>, v1=<hex>`.
    static let workos = Format(scheme: "workos", header: "WorkOS-Signature", separator: ".", unitsPerSecond: 1000, write: { "t=\($0), v1=\($1)" }) {
        keyValues($0, itemSeparator: ",", timestampKey: "t", signatureKey: "v1")
    }

    /// Recurly: `recurly-signature: <ms>,<hex>[,<hex>…]`.
    static let recurly = Format(scheme: "recurly", header: "Recurly-Signature", separator: ".", unitsPerSecond: 1000, write: { "\($0),\($1)" }) { header in
        let parts = header.split(separator: ",").map { trimmed($0) }
        guard parts.count >= 2 else { return nil }
        return (parts[0], Array(parts.dropFirst()))
    }
}

/// Spaces and tabs removed from both ends (without Foundation's CharacterSet machinery on the hot path).
func trimmed(_ s: Substring) -> Substring {
    var s = s
    while let c = s.first, c == " " || c == "\t" { s = s.dropFirst() }
    while let c = s.last, c == " " || c == "\t" { s = s.dropLast() }
    return s
}

/// Builds the `Stripe-Signature` header for a body, the way Stripe signs. Used by tests, `sign` and benchmarks.
package enum StripeVerifier {
    static let defaultTolerance: Double = 300

    /// Signs `body` the way Stripe does (for `koala-router sign` and tests).
    package static func sign(body: [UInt8], secret: String, timestamp: Int64) -> String {
        var signed = Array(String(timestamp).utf8)
        signed.append(UInt8(ascii: "."))
        signed.append(contentsOf: body)
        return "t=\(timestamp),v1=\(Hex.encode(Crypto.hmac(.sha256, key: Array(secret.utf8), data: signed)))"
    }
}

package import Foundation
package import HTTPTypes

/// A signature in one header over a template of the body and optionally a timestamp and id from other
/// headers. Presets cover GitHub, Shopify, Lemon Squeezy and Orb; the `hmac` scheme exposes every knob.
package struct HMACVerifier: SignatureVerifier {
    /// How a signature is written in its header.
    package enum Encoding: String, Sendable, CaseIterable {
        case hex, base64
    }

    /// How a signature's timestamp is written.
    package enum TimestampFormat: String, Sendable, CaseIterable {
        case seconds, milliseconds, iso8601
    }

    /// A piece of the signed bytes.
    package enum Part: Sendable, Equatable {
        case text(String)
        case body
        case timestamp
        case id
    }

    /// Where the signature sits and what is signed, as a rule file's `verify:` options describe it.
    package struct Format: Sendable {
        var scheme: String
        var header: String
        var algorithm: Crypto.Algorithm = .sha256
        var encoding: Encoding = .hex
        /// Stripped from each signature; signatures without it are ignored (e.g. `sha256=`, `v1=`).
        var prefix: String = ""
        /// Separates several signatures in the header (nil: the header holds one).
        var listSeparator: Character?
        var timestampHeader: String?
        var timestampFormat: TimestampFormat = .seconds
        var idHeader: String?
        var signed: [Part] = [.body]

        init(scheme: String, header: String) {
            self.scheme = scheme
            self.header = header
        }

        /// Parses a template such as `{timestamp}.{body}` or `v1:{timestamp}:{body}`.
        static func parseTemplate(_ text: String) -> [Part]? {
            var parts: [Part] = []
            var rest = Substring(text)
            while let open = rest.firstIndex(of: "{") {
                if open > rest.startIndex { parts.append(.text(String(rest[rest.startIndex..<open]))) }
                guard let close = rest[open...].firstIndex(of: "}") else { return nil }
                switch rest[rest.index(after: open)..<close] {
                case "body": parts.append(.body)
                case "timestamp": parts.append(.timestamp)
                case "id": parts.append(.id)
                default: return nil
                }
                rest = rest[rest.index(after: close)...]
            }
            if !rest.isEmpty { parts.append(.text(String(rest))) }
            return parts.contains(.body) ? parts : nil
        }

        /// The bytes the signature is computed over, from the body and the timestamp and id texts.
        func signedBytes(body: [UInt8], timestamp: String, id: String) -> [UInt8] {
            var signed: [UInt8] = []
            signed.reserveCapacity(body.count + 64)
            for part in self.signed {
                switch part {
                case .text(let t): signed += Array(t.utf8)
                case .body: signed += body
                case .timestamp: signed += Array(timestamp.utf8)
                case .id: signed += Array(id.utf8)
                }
            }
            return signed
        }
    }

    let format: Format
    let secrets: [WebhookSecret]
    let tolerance: Double
    package var scheme: String { format.scheme }
    package var credentialHeaders: [String] { [format.header] }
    package var signedHeaders: [String] {
        [format.signed.contains(.timestamp) ? format.timestampHeader : nil, format.signed.contains(.id) ? format.idHeader : nil].compactMap { $0 }
    }

    init(format: Format, secrets: [WebhookSecret], tolerance: Double) {
        self.format = format
        self.secrets = secrets
        self.tolerance = tolerance
    }

    package func sign(body: [UInt8], id: String, now: Date) -> [(name: String, value: String)]? {
        guard let key = secrets.first?.key else { return nil }
        var headers: [(name: String, value: String)] = []
        var timestamp = ""
        if let name = format.timestampHeader {
            switch format.timestampFormat {
            case .seconds: timestamp = String(Int64(now.timeIntervalSince1970))
            case .milliseconds: timestamp = String(Int64(now.timeIntervalSince1970 * 1000))
            case .iso8601: timestamp = Timestamps.iso(now)
            }
            headers.append((name, timestamp))
        }
        if let name = format.idHeader { headers.append((name, id)) }
        let mac = Crypto.hmac(format.algorithm, key: key, data: format.signedBytes(body: body, timestamp: timestamp, id: id))
        headers.append((format.header, format.prefix + (format.encoding == .hex ? Hex.encode(mac) : Base64.encode(mac))))
        return headers
    }

    /// What the headers carry: the timestamp and id texts, the timestamp, and the well-formed signatures.
    private func parsed(_ headers: HTTPFields) -> Result<(timestampText: String, timestamp: Double?, id: String, candidates: [[UInt8]]), VerificationFailure> {
        guard let header = headers.value(named: format.header) else { return .failure(.missingHeader(format.header)) }
        var timestampText = ""
        var timestamp: Double?
        if let name = format.timestampHeader {
            guard let text = headers.value(named: name)?.trimmingSpaces else { return .failure(.missingHeader(name)) }
            switch format.timestampFormat {
            case .seconds: timestamp = Double(text)
            case .milliseconds: timestamp = Double(text).map { $0 / 1000 }
            case .iso8601: timestamp = Timestamps.parseISO(text)?.timeIntervalSince1970
            }
            guard let t = timestamp, t.isFinite else { return .failure(.malformedHeader(name)) }
            timestampText = text
        }
        var idText = ""
        if let name = format.idHeader {
            guard let text = headers.value(named: name) else { return .failure(.missingHeader(name)) }
            idText = text
        }
        let entries = format.listSeparator.map { header.split(separator: $0).map(String.init) } ?? [header]
        var candidates: [[UInt8]] = []
        for entry in entries {
            let trimmed = entry.trimmingSpaces
            guard trimmed.hasPrefix(format.prefix) else { continue }
            let value = trimmed.dropFirst(format.prefix.count)
            let decoded = format.encoding == .hex ? Hex.decode(value) : Base64.decode(value)
            if let decoded, decoded.count == format.algorithm.digestLength { candidates.append(decoded) }
        }
        guard !candidates.isEmpty else { return .failure(.malformedHeader(format.header)) }
        return .success((timestampText, timestamp, idText, candidates))
    }

    package func precheck(headers: HTTPFields, now: Date) -> VerificationFailure? {
        switch parsed(headers) {
        case .failure(let failure): return failure
        case .success(let p):
            if let timestamp = p.timestamp, !SignatureCheck.withinTolerance(timestamp, now: now, tolerance: tolerance) { return .timestampOutsideTolerance }
            return nil
        }
    }

    package func verify(headers: HTTPFields, body: [UInt8], now: Date) -> Result<Verification, VerificationFailure> {
        let p: (timestampText: String, timestamp: Double?, id: String, candidates: [[UInt8]])
        switch parsed(headers) {
        case .failure(let failure): return .failure(failure)
        case .success(let parsed): p = parsed
        }
        let signed = format.signedBytes(body: body, timestamp: p.timestampText, id: p.id)
        guard let label = SignatureCheck.match(format.algorithm, secrets: secrets, signed: signed, candidates: p.candidates) else {
            return .failure(.signatureMismatch)
        }
        if let timestamp = p.timestamp, !SignatureCheck.withinTolerance(timestamp, now: now, tolerance: tolerance) {
            return .failure(.timestampOutsideTolerance)
        }
        return .success(Verification(secretLabel: label))
    }

    /// GitHub (and Outseta): `X-Hub-Signature-256: sha256=<hex>` over the body.
    static var github: Format {
        var f = Format(scheme: "github", header: "X-Hub-Signature-256")
        f.prefix = "sha256="
        return f
    }

    /// Shopify: `X-Shopify-Hmac-Sha256: <base64>` over the body.
    static var shopify: Format {
        var f = Format(scheme: "shopify", header: "X-Shopify-Hmac-Sha256")
        f.encoding = .base64
        return f
    }

    /// Lemon Squeezy: `X-Signature: <hex>` over the body.
    static var lemonSqueezy: Format {
        Format(scheme: "lemon-squeezy", header: "X-Signature")
    }

    /// Orb: `X-Orb-Signature: v1=<hex>[ v1=…]` over `"v1:{X-Orb-Timestamp}:{body}"`.
    static var orb: Format {
        var f = Format(scheme: "orb", header: "X-Orb-Signature")
        f.prefix = "v1="
        f.listSeparator = " "
        f.timestampHeader = "X-Orb-Timestamp"
        f.timestampFormat = .iso8601
        f.signed = [.text("v1:"), .timestamp, .text(":"), .body]
        return f
    }
}

/// Shared-secret schemes without a signature: HTTP Basic auth (Chargebee) and a static token (Auth0 log streams).
package struct CredentialVerifier: SignatureVerifier {
    /// The credential a request must carry.
    package enum Kind: Sendable {
        /// `Authorization: Basic base64(username:password)`; the username must match too.
        case basic(usernames: [WebhookSecret])
        /// `<header>: [Bearer ]<token>`.
        case bearer(header: String)
    }

    let kind: Kind
    /// Passwords or tokens.
    let secrets: [WebhookSecret]

    package var scheme: String {
        if case .basic = kind { return "basic-auth" }
        return "bearer-token"
    }

    package var credentialHeaders: [String] {
        switch kind {
        case .basic: ["Authorization"]
        case .bearer(let header): [header]
        }
    }

    /// A credential authenticates the sender, not the bytes: nothing is signed.
    package var signsBody: Bool { false }

    init(kind: Kind, secrets: [WebhookSecret]) {
        self.kind = kind
        self.secrets = secrets
    }

    package func sign(body: [UInt8], id: String, now: Date) -> [(name: String, value: String)]? {
        guard let secret = secrets.first?.key else { return nil }
        switch kind {
        case .basic(let usernames):
            guard let user = usernames.first?.key else { return nil }
            return [("Authorization", "Basic " + Base64.encode(user + [UInt8(ascii: ":")] + secret))]
        case .bearer(let header):
            let token = String(decoding: secret, as: UTF8.self)
            return [(header, header.lowercased() == "authorization" ? "Bearer " + token : token)]
        }
    }

    /// A credential needs no body: it is checked in full before the body is read.
    package func precheck(headers: HTTPFields, now: Date) -> VerificationFailure? {
        if case .failure(let failure) = verify(headers: headers, body: [], now: now) { return failure }
        return nil
    }

    package func verify(headers: HTTPFields, body: [UInt8], now: Date) -> Result<Verification, VerificationFailure> {
        switch kind {
        case .basic(let usernames):
            guard let value = headers.value(named: "Authorization") else { return .failure(.missingHeader("Authorization")) }
            let parts = value.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "basic", let decoded = Base64.decode(parts[1]),
                  let colon = decoded.firstIndex(of: UInt8(ascii: ":")) else {
                return .failure(.malformedHeader("Authorization"))
            }
            let user = Array(decoded[..<colon]), password = Array(decoded[(colon + 1)...])
            var userOK = false
            for expected in usernames where Crypto.constantTimeEquals(Crypto.digest(.sha256, expected.key), Crypto.digest(.sha256, user)) {
                userOK = true
            }
            // Compare digests so neither the length nor the content of a secret leaks through timing.
            let given = Crypto.digest(.sha256, password)
            for secret in secrets where Crypto.constantTimeEquals(Crypto.digest(.sha256, secret.key), given) {
                if userOK { return .success(Verification(secretLabel: secret.label)) }
            }
            return .failure(.signatureMismatch)
        case .bearer(let header):
            guard let value = headers.value(named: header) else { return .failure(.missingHeader(header)) }
            var token = Substring(value.trimmingSpaces)
            if token.lowercased().hasPrefix("bearer ") { token = token.dropFirst(7) }
            let given = Crypto.digest(.sha256, Array(token.utf8))
            for secret in secrets where Crypto.constantTimeEquals(Crypto.digest(.sha256, secret.key), given) {
                return .success(Verification(secretLabel: secret.label))
            }
            return .failure(.signatureMismatch)
        }
    }
}

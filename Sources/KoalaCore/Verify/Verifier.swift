package import Foundation
package import HTTPTypes

/// One webhook secret. The label (the environment variable it came from) may be logged and exported;
/// the key never is.
package struct WebhookSecret: Sendable, CustomStringConvertible {
    let label: String
    let key: [UInt8]

    package init(label: String, key: [UInt8]) {
        self.label = label
        self.key = key
    }

    package init(label: String, value: String) {
        self.init(label: label, key: Array(value.utf8))
    }

    package var description: String { "WebhookSecret(\(label), <redacted>)" }
}

/// Why a webhook failed verification. `reason` is short and safe to send back to the provider;
/// it never contains a secret, a signature or a header value.
package enum VerificationFailure: Error, Equatable, Sendable {
    case missingHeader(String)
    case malformedHeader(String)
    /// Two spellings of one signed value disagree (`webhook-id` and `svix-id`).
    case conflictingHeaders(String, String)
    case timestampOutsideTolerance
    case signatureMismatch

    /// The refusal as said in the 401 answer and the log (never the secret or the signature).
    package var reason: String {
        switch self {
        case .missingHeader(let name): "missing header \(name)"
        case .malformedHeader(let name): "malformed header \(name)"
        case .conflictingHeaders(let a, let b): "headers \(a) and \(b) disagree"
        case .timestampOutsideTolerance: "timestamp outside tolerance"
        case .signatureMismatch: "signature mismatch"
        }
    }

    /// The webhook outcome it stands for, in metrics and logs.
    package var outcome: WebhookOutcome {
        switch self {
        case .missingHeader: .missingHeader
        case .malformedHeader, .conflictingHeaders: .malformedHeader
        case .timestampOutsideTolerance: .staleTimestamp
        case .signatureMismatch: .signatureMismatch
        }
    }
}

/// What a verifier learned from a webhook it accepted.
package struct Verification: Sendable, Equatable {
    /// Label of the secret that matched.
    package let secretLabel: String
}

/// A signature scheme bound to a source's secrets and tolerance.
package protocol SignatureVerifier: Sendable {
    /// Name of the scheme, as written in a rule file.
    var scheme: String { get }
    /// The headers a signature or credential is read from, as the scheme spells them (any one may carry it).
    /// They are never stored, and a request carrying none of them is refused before its body is read.
    var credentialHeaders: [String] { get }
    /// The headers besides the body whose values the signature covers (a signed id or timestamp header), as the
    /// scheme spells them. A webhook id may be read from these, the body, or the body's digest: anything else
    /// could be changed by whoever replays a captured request.
    var signedHeaders: [String] { get }
    /// Whether the signature covers the body (false for a shared credential such as Basic auth or a token,
    /// which authenticates the sender but not what it sent).
    var signsBody: Bool { get }
    /// What the headers alone can refuse, before the body is read: a missing or malformed signature header, a
    /// timestamp outside the tolerance, a wrong credential (Basic auth and tokens need no body). Nil when only
    /// the body can tell. Cheap, and never a reason to read the body: a client without a well-formed, fresh
    /// signature cannot make the router hold its body.
    func precheck(headers: HTTPFields, now: Date) -> VerificationFailure?
    /// Checks the request's signature (or credential) against every configured secret in constant time;
    /// on success says which secret matched, on failure why, never revealing the secret.
    func verify(headers: HTTPFields, body: [UInt8], now: Date) -> Result<Verification, VerificationFailure>
    /// The headers that authenticate `body` as the provider would send them, with the first secret, at `now`,
    /// for the webhook `id` where the scheme signs one (`koala-router send`); nil without a secret.
    func sign(body: [UInt8], id: String, now: Date) -> [(name: String, value: String)]?
}

extension SignatureVerifier {
    /// Most schemes sign the body and keep their timestamp inside the signature header: no other header is signed.
    package var signedHeaders: [String] { [] }
    /// Every HMAC scheme signs the body; a shared credential says otherwise.
    package var signsBody: Bool { true }
    /// Only the body can tell, unless the scheme says otherwise.
    package func precheck(headers: HTTPFields, now: Date) -> VerificationFailure? { nil }
}

extension HTTPFields {
    /// The value of a header by case-insensitive name, nil if absent or if the name is not a valid field name.
    package func value(named name: String) -> String? {
        guard let fieldName = HTTPField.Name(name) else { return nil }
        return self[fieldName]
    }
}

/// Shared helpers for the HMAC family of schemes.
enum SignatureCheck {
    /// Returns the label of the first secret whose HMAC over `signed` equals one of `candidates`.
    static func match(
        _ algorithm: Crypto.Algorithm,
        secrets: [WebhookSecret],
        signed: [UInt8],
        candidates: [[UInt8]]
    ) -> String? {
        var matched: String?
        for secret in secrets {
            let expected = Crypto.hmac(algorithm, key: secret.key, data: signed)
            for candidate in candidates where Crypto.constantTimeEquals(expected, candidate) {
                // Keep looping over the remaining candidates would leak nothing useful; stop at the first.
                matched = secret.label
                break
            }
            if matched != nil { break }
        }
        return matched
    }

    /// Checks a timestamp (seconds) against `now` within `tolerance`, in both directions.
    static func withinTolerance(_ timestamp: Double, now: Date, tolerance: Double) -> Bool {
        guard tolerance > 0 else { return true }
        return abs(now.timeIntervalSince1970 - timestamp) <= tolerance
    }
}

import Foundation
import HTTPTypes

/// Why a verified body could not become a webhook.
public struct IdentificationProblem: Error, Sendable {
    /// `missingID`, `missingType`, `invalidID` or `invalidType`.
    public let outcome: WebhookOutcome
    /// Why, as said in the 400 answer.
    public let message: String
}

extension SourceDefinition {
    /// The longest webhook id or event type taken, in UTF-8 bytes (provider ids are a few dozen).
    static let maxIdentifierBytes = 255

    /// Reads the webhook id, type and time where the rule file says they are. Used by ingest, `test` and `simulate`.
    public func webhook(body: [UInt8], json: JSONValue, headers: HTTPFields, receivedAt: Date, secretLabel: String,
                        rulesVersion: String) -> Result<VerifiedWebhook, IdentificationProblem> {
        var headerMap: [String: String] = [:]
        for field in headers {
            let key = field.name.canonicalName
            headerMap[key] = headerMap[key].map { $0 + ", " + field.value } ?? field.value
        }
        // Rules see only what may be stored: a credential can never be copied into a message.
        headerMap = StoredHeaders.keepable(headerMap, credentialHeaders: credentialHeaders)
        let digest = Hex.encode(Crypto.digest(.sha256, body))
        let context = EvaluationContext(body: json, headers: headerMap, webhook: ["body_sha256": .string(digest)])
        guard let webhookID = webhookID.evaluate(in: context)?.textValue, !webhookID.isEmpty else {
            return .failure(IdentificationProblem(outcome: .missingID, message: "webhook id not found at \(self.webhookID)"))
        }
        if let problem = Self.identifierProblem(webhookID) {
            return .failure(IdentificationProblem(outcome: .invalidID, message: "webhook id at \(self.webhookID) \(problem)"))
        }
        guard let eventType = eventType.evaluate(in: context)?.textValue, !eventType.isEmpty else {
            return .failure(IdentificationProblem(outcome: .missingType, message: "event type not found at \(self.eventType)"))
        }
        if let problem = Self.identifierProblem(eventType) {
            return .failure(IdentificationProblem(outcome: .invalidType, message: "event type at \(self.eventType) \(problem)"))
        }
        // The provider's time when the rules say where it is and it is a time we can write; otherwise the
        // time of receipt, and the webhook says why (ingest logs it).
        var time = receivedAt
        var timeProblem: String?
        if let expression = self.eventTime, let raw = expression.evaluate(in: context), !raw.isNull {
            if let date = Timestamps.date(from: raw) {
                time = date
            } else {
                timeProblem = "event time at \(expression) is not a time in years 1-9999: \(LogText.preview(raw))"
            }
        }
        var webhook = VerifiedWebhook(
            source: name, webhookID: webhookID, eventType: eventType, eventTime: time, receivedAt: receivedAt,
            headers: headerMap, body: body, json: json, secretLabel: secretLabel, rulesVersion: rulesVersion, bodySHA256: digest)
        webhook.eventTimeProblem = timeProblem
        return .success(webhook)
    }

    /// Why text cannot identify a webhook: too long, or holding a control character (a NUL would cut it
    /// short in C APIs and make two different events one).
    static func identifierProblem(_ text: String) -> String? {
        if text.utf8.count > maxIdentifierBytes {
            return "is \(text.utf8.count) bytes long; at most \(maxIdentifierBytes) are taken"
        }
        // Printable ASCII, the usual id, needs no look at Unicode's tables.
        if text.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) { return nil }
        if let bad = text.unicodeScalars.first(where: { $0.properties.generalCategory == .control }) {
            return "contains the control character U+\(String(bad.value, radix: 16, uppercase: true).leftPadded(to: 4)); ids must be printable text"
        }
        return nil
    }
}

extension String {
    /// Padded with leading zeros to `width` characters.
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

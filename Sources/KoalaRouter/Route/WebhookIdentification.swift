import Foundation
import HTTPTypes

/// Why a verified body could not become a webhook.
public struct IdentificationProblem: Error, Sendable {
    /// Metric outcome: `missing_id` or `missing_type`.
    public let outcome: String
    public let message: String
}

extension SourceDefinition {
    /// Reads the webhook id, type and time where the rule file says they are. Used by ingest, `test` and `simulate`.
    public func webhook(body: [UInt8], json: JSONValue, headers: HTTPFields, receivedAt: Date, secretLabel: String,
                        rulesVersion: String) -> Result<VerifiedWebhook, IdentificationProblem> {
        var headerMap: [String: String] = [:]
        for field in headers {
            let key = field.name.canonicalName
            headerMap[key] = headerMap[key].map { $0 + ", " + field.value } ?? field.value
        }
        let digest = Hex.encode(Crypto.digest(.sha256, body))
        let context = EvaluationContext(body: json, headers: headerMap, webhook: ["body_sha256": .string(digest)])
        guard let webhookID = webhookID.evaluate(in: context)?.textValue, !webhookID.isEmpty else {
            return .failure(IdentificationProblem(outcome: "missing_id", message: "webhook id not found at \(self.webhookID)"))
        }
        guard let eventType = eventType.evaluate(in: context)?.textValue, !eventType.isEmpty else {
            return .failure(IdentificationProblem(outcome: "missing_type", message: "event type not found at \(self.eventType)"))
        }
        let eventTime = eventTime.flatMap { Timestamps.date(from: $0.evaluate(in: context)) } ?? receivedAt
        return .success(VerifiedWebhook(
            source: name, webhookID: webhookID, eventType: eventType, eventTime: eventTime, receivedAt: receivedAt,
            headers: headerMap.filter { !Ingest.isSensitive($0.key) }, body: body, json: json,
            secretLabel: secretLabel, rulesVersion: rulesVersion, bodySHA256: digest))
    }
}

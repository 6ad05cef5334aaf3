package import Foundation
package import HTTPTypes

/// Why a verified body could not become a webhook.
package struct IdentificationProblem: Error, Sendable {
    /// `missingID`, `missingType`, `invalidID` or `invalidType`.
    package let outcome: WebhookOutcome
    /// Why, as said in the 400 answer.
    package let message: String
}

extension SourceDefinition {
    /// The longest webhook id or event type taken, in UTF-8 bytes (provider ids are a few dozen).
    static let maxIdentifierBytes = 255

    /// Reads the webhook id, type and time where the rule file says they are. Used by ingest, `test` and `simulate`.
    package func webhook(body: [UInt8], json: JSONTape, headers: HTTPFields, receivedAt: Date, secretLabel: String,
                        rulesVersion: String) -> Result<VerifiedWebhook, IdentificationProblem> {
        // Rules see only what may be stored (an allow-list): a credential can never be copied into a message.
        var headerMap: [String: String] = [:]
        for field in headers {
            let key = field.name.canonicalName
            guard keptHeaders.contains(key) else { continue }
            headerMap[key] = headerMap[key].map { $0 + ", " + field.value } ?? field.value
        }
        let digest = Crypto.withDigest(.sha256, body) { Hex.encode($0) }
        let context = EvaluationContext(body: json, headers: headerMap, webhook: ["body_sha256": .string(digest)])
        guard let webhookID = Self.identifier(self.webhookID, in: context, body: body), !webhookID.isEmpty else {
            return .failure(IdentificationProblem(outcome: .missingID, message: "webhook id not found at \(self.webhookID)"))
        }
        if let problem = Self.identifierProblem(webhookID) {
            return .failure(IdentificationProblem(outcome: .invalidID, message: "webhook id at \(self.webhookID) \(problem)"))
        }
        guard let eventType = Self.identifier(self.eventType, in: context, body: body), !eventType.isEmpty else {
            return .failure(IdentificationProblem(outcome: .missingType, message: "event type not found at \(self.eventType)"))
        }
        if let problem = Self.identifierProblem(eventType) {
            return .failure(IdentificationProblem(outcome: .invalidType, message: "event type at \(self.eventType) \(problem)"))
        }
        // The provider's time when the rules say where it is and it is a time we can write; otherwise the
        // time of receipt, and the webhook says why (ingest logs it).
        var time = receivedAt
        var timeProblem: String?
        if let expression = self.eventTime {
            let raw = expression.evaluate(in: context)
            if let raw, !raw.isNull {
                if let date = Timestamps.date(from: raw) {
                    time = date
                } else {
                    timeProblem = "event time at \(expression) is not a time in years 1-9999: \(Self.describeTime(raw))"
                }
            } else if raw == nil, case .piped(let base, _) = expression, let input = base.evaluate(in: context), !input.isNull {
                // The payload has a value there, but the filter (`unix_seconds`, `iso8601` …) found no time in it:
                // `1e999`, `10000000000000000`, text that is no date. Said like any other unusable time.
                timeProblem = "event time at \(expression) is not a time in years 1-9999: \(base) is \(Self.describeTime(input))"
            }
        }
        var webhook = VerifiedWebhook(
            source: name, webhookID: webhookID, eventType: eventType, eventTime: time, receivedAt: receivedAt,
            headers: headerMap, body: body, json: json, secretLabel: secretLabel, rulesVersion: rulesVersion, bodySHA256: digest)
        webhook.eventTimeProblem = timeProblem
        return .success(webhook)
    }

    /// The text of an identifier (the webhook id, the event type). A JSON number that is not an integer within
    /// Int64 would be written from a double — `99999999999999999990` and `…991` both as `1e+20`, `2e2` and
    /// `200.0` both as `200` — and two webhooks would be one. So when the expression reads such a number, it is
    /// evaluated again over the body parsed with numbers as written, and the id is the number's own text.
    static func identifier(_ expression: Expression, in context: EvaluationContext, body: [UInt8]) -> String? {
        guard let value = expression.evaluate(in: context) else { return nil }
        let readsFraction = expression.paths.contains { path in
            guard path.root == .body, case .double? = path.resolve(in: context) else { return false }
            return true
        }
        guard readsFraction else { return value.textValue }
        let asWritten: EvaluationContext.Body
        switch context.body {
        case .tape(let tape): asWritten = .tape(tape.readingNumbersAsWritten())
        case .tree:
            guard let tree = try? JSONValue.parse(body, numbersAsWritten: true) else { return value.textValue }
            asWritten = .tree(tree)
        }
        return expression.evaluate(in: EvaluationContext(body: asWritten, headers: context.headers, webhook: context.webhook,
                                                         person: context.person, memory: context.memory))?.textValue
    }

    /// A value that should have been a time, for the warning: a number beyond a double is said as such (JSON
    /// would print it as null).
    static func describeTime(_ value: JSONValue) -> String {
        if case .double(let d) = value, !d.isFinite { return "a number too large for any time" }
        return LogText.preview(value)
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

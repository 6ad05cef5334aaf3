import Foundation

/// The signature schemes a rule file can name in `verify.scheme`, with each scheme's defaults.
public enum Schemes {
    public struct Definition: Sendable {
        public let name: String
        /// Default replay tolerance in seconds; nil for schemes that sign no timestamp.
        public let defaultTolerance: Double?
        /// Where the webhook id, type and time live unless the rule file says otherwise.
        public let defaultID: String
        public let defaultType: String
        public let defaultTime: String?
        let make: @Sendable (_ secrets: [WebhookSecret], _ tolerance: Double) -> any SignatureVerifier
    }

    public static let all: [String: Definition] = [
        "stripe": Definition(
            name: "stripe",
            defaultTolerance: StripeVerifier.defaultTolerance,
            defaultID: "body.id",
            defaultType: "body.type",
            defaultTime: "body.created | unix_seconds",
            make: { StripeVerifier(secrets: $0, tolerance: $1) }
        ),
    ]
}

/// What became of one webhook request: the `outcome` label of `koala_router_webhooks_received_total` and the
/// `reason` in logs. The one list of these words.
package enum WebhookOutcome: String, Sendable, CaseIterable {
    case accepted, duplicate
    // Refused before or by verification (401, 404, 413, 503).
    case unknownSource = "unknown_source"
    case sourceDisabled = "source_disabled"
    case missingHeader = "missing_header"
    case malformedHeader = "malformed_header"
    case signatureMismatch = "signature_mismatch"
    case staleTimestamp = "stale_timestamp"
    case tooLarge = "too_large"
    /// Body bytes in flight over the limit, or over the client's share of it (503).
    case overloaded
    /// The client failed verification too often for this source; refused before anything was read (429).
    case rateLimited = "rate_limited"
    // Verified, but not a webhook we can take (400).
    case invalidJSON = "invalid_json"
    case missingID = "missing_id"
    case missingType = "missing_type"
    case invalidID = "invalid_id"
    case invalidType = "invalid_type"
    /// The store could not take it (503); the provider retries.
    case storeUnavailable = "store_unavailable"
    /// Other replicas kept changing a state its routes compare against (503); the provider retries.
    case stateContended = "state_contended"
}

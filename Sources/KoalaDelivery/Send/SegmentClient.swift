package import AsyncHTTPClient
package import Foundation
import KoalaCore

/// Sends `/v1/batch` requests to a Segment-compatible API: Segment's HTTP Tracking API, RudderStack's HTTP
/// API, or another service that accepts the same calls. Authenticates with HTTP Basic auth, the write key
/// as the user name and no password, as those APIs document. Answers mean what they mean for Koala: 2xx
/// delivered; 408, 429 and 5xx worth retrying (with `Retry-After`); any other 4xx a rejection (a 401 or 403
/// is a revoked or wrong write key).
package struct SegmentClient: Sendable {
    /// Segment's default endpoint (US workspaces).
    package static let segmentURL = "https://api.segment.io"
    /// Segment's endpoint for EU workspaces.
    package static let segmentEUURL = "https://events.eu1.segmentapis.com"

    let http: HTTPClient
    let batchURL: String
    let authorization: String
    let timeout: TimeInterval

    /// `baseURL` without `/v1/batch` (e.g. `https://api.segment.io`, or a RudderStack data plane URL).
    package init(http: HTTPClient, baseURL: String, writeKey: String, timeout: TimeInterval) {
        self.http = http
        self.batchURL = (baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL) + "/v1/batch"
        self.authorization = "Basic " + Base64.encode(Array((writeKey + ":").utf8))
        self.timeout = timeout
    }

    /// Posts one batch and says what the answer means.
    package func send(_ batch: SegmentMapping.Batch) async -> DeliveryResult {
        await KoalaClient.post(http: http, url: batchURL, headers: [("Authorization", authorization)], body: batch.body, timeout: timeout)
    }
}

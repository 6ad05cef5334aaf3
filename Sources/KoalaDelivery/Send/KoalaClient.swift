package import AsyncHTTPClient
package import Foundation
import KoalaCore
import KoalaStore
package import Logging
import NIOCore
import NIOHTTP1

/// Why a request to Koala is worth trying again.
package enum RetryCause: Sendable, Equatable, CustomStringConvertible {
    /// Koala answered 408, 429 or 5xx.
    case status(Int)
    /// No answer within the request timeout (seconds).
    case timeout(TimeInterval)
    /// The connection failed; the error, escaped and bounded.
    case connection(String)

    /// Koala asked us to slow down: a 429 says nothing about Koala's health, so it never opens the circuit.
    var isRateLimit: Bool { self == .status(429) }

    /// For logs and `last_error`.
    package var description: String {
        switch self {
        case .status(let status): "Koala answered \(status)"
        case .timeout(let seconds): "timeout after \(seconds)s"
        case .connection(let error): "connection error: \(error)"
        }
    }
}

/// What Koala's answer means for a batch.
package enum DeliveryResult: Sendable, Equatable {
    case delivered(status: Int)
    /// Dry run (no project key): the request was logged, not sent.
    case dryRun
    /// Try again later. `retryAfter` from the response, if any.
    case retry(RetryCause, retryAfter: TimeInterval?)
    /// Koala refused the request for good (other 4xx); the body is kept with the dead letter.
    case rejected(status: Int, body: String)
}

extension DeliveryResult {
    /// Low-cardinality label for `koala_router_koala_responses_total`.
    var metricLabel: String {
        switch self {
        case .delivered(let status): String(status)
        case .dryRun: "dry_run"
        case .rejected(let status, _): String(status)
        case .retry(.status(let status), _): String(status)
        case .retry(.timeout, _): "timeout"
        case .retry(.connection, _): "connection_error"
        }
    }
}

/// Sends batches to Koala's server-side API, or, without a project key, logs them (dry run).
package struct KoalaClient: Sendable {
    static var userAgent: String { "koala-router/\(KoalaRouterVersion.string)" }

    let http: HTTPClient
    let baseURL: String
    let publicKey: String?
    let timeout: TimeInterval
    let logger: Logger

    package init(http: HTTPClient, baseURL: String, publicKey: String?, timeout: TimeInterval, logger: Logger) {
        self.http = http
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.publicKey = publicKey
        self.timeout = timeout
        self.logger = logger
    }

    var isDryRun: Bool { publicKey == nil }

    /// POSTs one batch to its Koala endpoint and says what the answer means; in dry run (no public key) it
    /// only logs the request.
    package func send(_ batch: KoalaBatch) async -> DeliveryResult {
        guard let publicKey else {
            logger.notice("dry run: would POST", metadata: [
                "endpoint": "/web/projects/<key>/\(batch.endpoint.path)",
                "body": "\(batch.body)",
                "message_ids": "\(batch.messageIDs.joined(separator: ","))",
            ])
            return .dryRun
        }
        let key = publicKey.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? publicKey
        return await Self.post(http: http, url: "\(baseURL)/web/projects/\(key)/\(batch.endpoint.path)", body: batch.body, timeout: timeout)
    }

    /// POSTs a JSON body with our User-Agent (and `headers`) and says what the answer means: the one HTTP
    /// exchange every destination uses.
    static func post(http: HTTPClient, url: String, headers: [(String, String)] = [], body: String, timeout: TimeInterval) async -> DeliveryResult {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: Self.userAgent)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(string: body))
        do {
            let response = try await http.execute(request, timeout: .milliseconds(Int64(timeout * 1000)))
            let status = Int(response.status.code)
            let body = (try? await response.body.collect(upTo: 64 * 1024)).map { String(buffer: $0) } ?? ""
            return Self.classify(status: status, body: body, retryAfter: response.headers.first(name: "Retry-After"))
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
            return .retry(.timeout(timeout), retryAfter: nil)
        } catch {
            return .retry(.connection(Self.describe(error)), retryAfter: nil)
        }
    }

    static func describe(_ error: any Error) -> String {
        LogText.bounded(LogText.escaped(String(describing: error)), limit: 200)
    }

    static func classify(status: Int, body: String, retryAfter: String?) -> DeliveryResult {
        switch status {
        case 200..<300:
            return .delivered(status: status)
        case 408, 429, 500..<600:
            return .retry(.status(status), retryAfter: retryAfter.flatMap(parseRetryAfter))
        default:
            // Kept with the dead letter: escaped (a NUL would cut stored text short) and bounded in bytes.
            return .rejected(status: status, body: LogText.bounded(LogText.escaped(body), limit: 4096))
        }
    }

    /// The longest `Retry-After` honoured: a day.
    static let maxRetryAfter: TimeInterval = 86400

    /// `Retry-After` as delta-seconds or an HTTP date, at most `maxRetryAfter`.
    static func parseRetryAfter(_ value: String) -> TimeInterval? {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        // Bounded: an absurd or infinite value must not park a message beyond every retry.
        if let seconds = Double(trimmed), seconds.isFinite, seconds >= 0 { return min(seconds, maxRetryAfter) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        if let date = formatter.date(from: trimmed) { return min(max(0, date.timeIntervalSinceNow), maxRetryAfter) }
        return nil
    }
}

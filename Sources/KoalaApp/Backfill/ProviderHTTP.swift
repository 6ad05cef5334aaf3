import AsyncHTTPClient
import Foundation
import KoalaCore
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// Reads a provider's list API politely: at most `requestsPerSecond` requests (a token bucket shared by every
/// task of the run), 429 answered by waiting what `Retry-After` says, 5xx, timeouts and dropped connections
/// retried with growing pauses, any other answer an error that says what to fix.
package final class ProviderHTTP: Sendable {
    let client: HTTPClient
    let baseURL: String
    let headers: [(String, String)]
    let requestsPerSecond: Double
    let timeout: TimeAmount
    let attempts: Int
    let logger: Logger
    /// When the next request may start (the token bucket, one request per slot).
    private let nextSlot = Mutex<ContinuousClock.Instant>(.now)
    /// Requests made, 429s waited for and retries, for the summary.
    private let counters = Mutex<(requests: Int, limited: Int, retried: Int)>((0, 0, 0))

    init(client: HTTPClient, baseURL: String, headers: [(String, String)], requestsPerSecond: Double,
         timeout: TimeInterval = 60, attempts: Int = 8, logger: Logger) {
        self.client = client
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.headers = headers
        self.requestsPerSecond = max(0.1, requestsPerSecond)
        self.timeout = .milliseconds(Int64(timeout * 1000))
        self.attempts = attempts
        self.logger = logger
    }

    /// Requests made, 429 answers and retries so far.
    var stats: (requests: Int, limited: Int, retried: Int) { counters.withLock { $0 } }

    /// Waits for the next request slot.
    private func pace() async throws {
        let interval = Duration.milliseconds(Int64(1000 / requestsPerSecond))
        let start = nextSlot.withLock { slot -> ContinuousClock.Instant in
            let now = ContinuousClock.now
            let start = max(slot, now)
            slot = start + interval
            return start
        }
        if start > .now { try await Task.sleep(until: start, clock: .continuous) }
    }

    /// GET `path` with `query` (already decoded; encoded here), as JSON.
    func get(_ path: String, query: [(String, String)] = []) async throws -> JSONValue {
        var url = path.hasPrefix("http://") || path.hasPrefix("https://") ? path : baseURL + path
        if !query.isEmpty {
            url += (url.contains("?") ? "&" : "?") + query.map { "\(Self.encode($0.0))=\(Self.encode($0.1))" }.joined(separator: "&")
        }
        var pause = 1.0
        for attempt in 1...attempts {
            try await pace()
            counters.withLock { $0.requests += 1 }
            var request = HTTPClientRequest(url: url)
            request.method = .GET
            request.headers.add(name: "User-Agent", value: "koala-router/\(KoalaRouterVersion.string) (backfill)")
            request.headers.add(name: "Accept", value: "application/json")
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            let last = attempt == attempts
            do {
                let response = try await client.execute(request, timeout: timeout)
                let body = try await response.body.collect(upTo: 64 << 20)
                let status = Int(response.status.code)
                if (200..<300).contains(status) {
                    do {
                        return try JSONValue.parse(Array(body.readableBytesView))
                    } catch {
                        throw KoalaRouterError(.provider, "GET \(Self.redacted(url)): the answer is not JSON (\(error))")
                    }
                }
                let text = LogText.bounded(LogText.escaped(String(decoding: body.readableBytesView, as: UTF8.self)), limit: 300)
                if status == 429 || status >= 500 {
                    if last { throw KoalaRouterError(.provider, "GET \(Self.redacted(url)) answered \(status) \(attempts) times; last: \(text)") }
                    var wait = pause
                    if status == 429 {
                        counters.withLock { $0.limited += 1 }
                        wait = Self.retryAfter(response.headers.first(name: "Retry-After")) ?? pause
                    } else {
                        counters.withLock { $0.retried += 1 }
                    }
                    logger.warning("provider API asks to wait", metadata: ["status": "\(status)", "wait_s": "\(wait)", "url": "\(Self.redacted(url))"])
                    try await Task.sleep(for: .milliseconds(Int64(min(wait, 120) * 1000)))
                    pause = min(pause * 2, 30)
                    continue
                }
                let hint = status == 401 || status == 403
                    ? "the API key was refused: check it is set and may read this list (a read-only key is enough)"
                    : "the provider refused the request"
                throw KoalaRouterError(.provider, "GET \(Self.redacted(url)) answered \(status): \(hint); the provider said: \(text)")
            } catch let failure as KoalaRouterError {
                throw failure
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                if last { throw KoalaRouterError(.provider, "GET \(Self.redacted(url)) failed \(attempts) times; last: \(error)") }
                counters.withLock { $0.retried += 1 }
                logger.warning("provider API unreachable; retrying", metadata: ["error": "\(error)", "wait_s": "\(pause)"])
                try await Task.sleep(for: .milliseconds(Int64(pause * 1000)))
                pause = min(pause * 2, 30)
            }
        }
        throw KoalaRouterError(.provider, "GET \(Self.redacted(url)) gave up")
    }

    /// Seconds to wait from `Retry-After`: a number of seconds or an HTTP date.
    static func retryAfter(_ value: String?) -> Double? {
        guard let value = value?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        if let seconds = Double(value), seconds.isFinite, seconds >= 0 { return seconds }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: value).map { max(0, $0.timeIntervalSinceNow) }
    }

    static func encode(_ text: String) -> String {
        var allowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    /// A URL as logged: escaped and bounded (keys travel in headers, never in URLs, so nothing needs hiding).
    static func redacted(_ url: String) -> String { LogText.bounded(LogText.escaped(url), limit: 200) }
}

import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Connections open per client address, so one client cannot hold the whole connection limit. A trusted
/// proxy's connections are its clients' and are not counted (see `ClientAddress`).
final class ClientConnections: Sendable {
    let limit: Int
    private let open = Mutex<[String: Int]>([:])

    init(limit: Int) {
        self.limit = limit
    }

    /// Counts a new connection from `client`; false (and nothing counted) when it already holds `limit`.
    func opened(_ client: String) -> Bool {
        open.withLock { open in
            let count = open[client, default: 0]
            guard count < limit else { return false }
            open[client] = count + 1
            return true
        }
    }

    func closed(_ client: String) {
        open.withLock { open in
            guard let count = open[client] else { return }
            open[client] = count > 1 ? count - 1 : nil
        }
    }

    /// How many connections `client` holds now.
    func count(_ client: String) -> Int { open.withLock { $0[client, default: 0] } }
}

/// The memory all requests together may hold in bodies not yet checked, and each client's share of it. Bytes
/// are charged as they arrive, never from what a `Content-Length` promises: a client that declares a megabyte
/// and sends nothing holds nothing.
package final class BodyBudget: Sendable {
    let limit: Int
    /// What one client address may hold at once (its fair share); `limit` when not limited per client.
    let perClient: Int
    private let state = Mutex<(used: Int, byClient: [String: Int])>((0, [:]))

    init(limit: Int, perClient: Int? = nil) {
        self.limit = limit
        self.perClient = min(perClient ?? limit, limit)
    }

    /// Why bytes could not be taken.
    enum Refusal: Equatable {
        /// Every request together holds the limit.
        case full
        /// This client holds its share.
        case clientShare
    }

    /// Takes `bytes` for `client`; the refusal (and nothing taken) when that would pass the client's share or the limit.
    func reserve(_ bytes: Int, client: String = "") -> Refusal? {
        state.withLock { state in
            let mine = state.byClient[client, default: 0]
            guard bytes <= perClient - mine else { return .clientShare }
            guard bytes <= limit - state.used else { return .full }
            state.used += bytes
            state.byClient[client] = mine + bytes
            return nil
        }
    }

    func release(_ bytes: Int, client: String = "") {
        guard bytes > 0 else { return }
        state.withLock { state in
            state.used -= bytes
            let left = state.byClient[client, default: 0] - bytes
            state.byClient[client] = left > 0 ? left : nil
        }
    }

    var inUse: Int { state.withLock { $0.used } }
}

/// Failures per client, as token buckets: each client (or client and source) may fail `perMinute` times in a
/// burst, and one more each `60 / perMinute` seconds after; past that its requests of that kind are answered
/// 429 with `Retry-After` before any work is done, until the bucket refills. Successes cost nothing.
final class FailureLimiter: Sendable {
    let perMinute: Double
    private let buckets = Mutex<[String: (tokens: Double, at: Double)]>([:])
    /// Buckets kept at most; past it the full ones (clients that stopped failing) are forgotten.
    static let maxClients = 100_000

    init(perMinute: Int) {
        self.perMinute = Double(perMinute)
    }

    /// Seconds until `key` may try again, or nil when it may now.
    func retryAfter(_ key: String, now: Date = Date()) -> Int? {
        buckets.withLock { buckets in
            guard let bucket = buckets[key] else { return nil }
            let tokens = refilled(bucket, now: now.timeIntervalSince1970)
            guard tokens < 1 else { return nil }
            return max(1, Int(((1 - tokens) * 60 / perMinute - 1e-9).rounded(.up)))
        }
    }

    /// Charges one failure to `key`.
    func failed(_ key: String, now: Date = Date()) {
        let t = now.timeIntervalSince1970
        buckets.withLock { buckets in
            let tokens = buckets[key].map { refilled($0, now: t) } ?? perMinute
            buckets[key] = (max(0, tokens - 1), t)
            if buckets.count > Self.maxClients {
                buckets = buckets.filter { refilled($0.value, now: t) < perMinute }
                if buckets.count > Self.maxClients { buckets.removeAll() }
            }
        }
    }

    private func refilled(_ bucket: (tokens: Double, at: Double), now: Double) -> Double {
        min(perMinute, bucket.tokens + max(0, now - bucket.at) * perMinute / 60)
    }
}

/// Logs refusals without letting a client flood the log: the first refusal of a kind (per source and reason)
/// in each interval is logged in full; the rest are counted, and one summary line per kind says how many
/// more came and from how many clients, at the end of the interval.
final class RejectionLog: Service, Sendable {
    let interval: TimeInterval
    let logger: Logger
    private struct Tally {
        var level: Logger.Level
        var message: Logger.Message
        var metadata: Logger.Metadata
        var more = 0
        var clients: Set<String> = []
    }
    private let tallies = Mutex<[String: Tally]>([:])

    init(interval: TimeInterval, logger: Logger) {
        self.interval = interval
        self.logger = logger
    }

    /// A refusal: logged now at warning level if it is the first of `key` in this interval, else counted.
    func warning(_ message: Logger.Message, key: String, client: ClientAddress, metadata: Logger.Metadata) {
        note(.warning, message, key: key, client: client, metadata: metadata)
    }

    /// The same at error level (the service's own failure, such as a store refusing writes).
    func error(_ message: Logger.Message, key: String, client: ClientAddress, metadata: Logger.Metadata) {
        note(.error, message, key: key, client: client, metadata: metadata)
    }

    private func note(_ level: Logger.Level, _ message: Logger.Message, key: String, client: ClientAddress, metadata: Logger.Metadata) {
        let first = tallies.withLock { tallies -> Bool in
            if var tally = tallies[key] {
                tally.more += 1
                if tally.clients.count < 10_000 { tally.clients.insert(client.text) }
                tallies[key] = tally
                return false
            }
            tallies[key] = Tally(level: level, message: message, metadata: metadata)
            return true
        }
        if first {
            var metadata = metadata
            metadata["client"] = "\(client.text)"
            logger.log(level: level, message, metadata: metadata)
        }
    }

    /// Logs one summary line per kind that came more than once, and starts a new interval.
    func flush() {
        let done = tallies.withLock { tallies -> [String: Tally] in
            defer { tallies.removeAll() }
            return tallies
        }
        for (_, tally) in done.sorted(by: { $0.key < $1.key }) where tally.more > 0 {
            var metadata = tally.metadata
            metadata["more"] = "\(tally.more)"
            metadata["clients"] = "\(tally.clients.count)"
            metadata["interval_s"] = "\(Int(interval))"
            logger.log(level: tally.level, "\(tally.message): \(tally.more) more in the last \(Int(interval)) s, not logged one by one", metadata: metadata)
        }
    }

    /// Sums up every interval until shutdown, then once more.
    func run() async throws {
        try? await cancelWhenGracefulShutdown { [self] in
            while !Task.isCancelled {
                try await Task.sleep(nanoseconds: UInt64(interval * 1_000_000_000))
                flush()
            }
        }
        flush()
    }
}

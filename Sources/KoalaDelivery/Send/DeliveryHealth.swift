import Foundation
import KoalaCore
import KoalaStore
import Synchronization

/// How Koala is answering, shared by the sender (which updates it) and `/readyz` (which shows it).
/// Also the circuit breaker: after a streak of failures the sender stops sending and probes at a low,
/// growing rate until Koala answers again, while ingest keeps accepting and storing.
public final class DeliveryHealth: Sendable {
    /// Delivery health at one moment, for `/readyz` and metrics.
    public struct Snapshot: Sendable, Equatable {
        var consecutiveFailures = 0
        var circuitOpen = false
        var nextProbe: Date?
        var probeInterval: TimeInterval = 0
        var lastError: String?
        /// Koala answering 4xx in a way that means "not for any request" (wrong key, ingest suspended).
        var refusing: String?
        var lastSuccess: Date?
    }

    let failureThreshold: Int
    let firstProbeInterval: TimeInterval
    let maxProbeInterval: TimeInterval
    private let state = Mutex(Snapshot())

    public init(failureThreshold: Int = 5, firstProbeInterval: TimeInterval = 1, maxProbeInterval: TimeInterval = 60) {
        self.failureThreshold = failureThreshold
        self.firstProbeInterval = firstProbeInterval
        self.maxProbeInterval = maxProbeInterval
    }

    var snapshot: Snapshot { state.withLock { $0 } }

    /// Whether the sender may send now; when the circuit is open, only one probe round per interval.
    func mayProceed(now: Date) -> (proceed: Bool, probe: Bool) {
        state.withLock { s in
            guard s.circuitOpen else { return (true, false) }
            guard let next = s.nextProbe, now >= next else { return (false, false) }
            s.nextProbe = now.addingTimeInterval(s.probeInterval)  // one probe per interval
            return (true, true)
        }
    }

    func recordSuccess(now: Date) {
        state.withLock { s in
            s.consecutiveFailures = 0
            s.circuitOpen = false
            s.nextProbe = nil
            s.probeInterval = 0
            s.refusing = nil
            s.lastSuccess = now
        }
    }

    /// A failure that says nothing about the request itself (5xx, timeout, connection error). Returns true
    /// when this failure opened the circuit (so the opening is logged once, not for every request of the
    /// round that was already in flight).
    /// A failed probe doubles the wait before the next one.
    @discardableResult
    func recordFailure(_ reason: String, now: Date, probe: Bool = false) -> Bool {
        state.withLock { s in
            s.consecutiveFailures += 1
            s.lastError = reason
            if s.circuitOpen {
                if probe {
                    s.probeInterval = min(maxProbeInterval, max(firstProbeInterval, s.probeInterval * 2))
                    s.nextProbe = now.addingTimeInterval(s.probeInterval)
                }
                return false
            }
            guard s.consecutiveFailures >= failureThreshold else { return false }
            s.probeInterval = firstProbeInterval
            s.circuitOpen = true
            s.nextProbe = now.addingTimeInterval(s.probeInterval)
            return true
        }
    }

    func recordRefusal(_ description: String) {
        state.withLock { $0.refusing = description }
    }

    /// For `/readyz`.
    public var json: JSONValue {
        let s = snapshot
        var object: [String: JSONValue] = [
            "circuit": .string(s.circuitOpen ? "open" : "closed"),
            "consecutive_failures": .int(Int64(s.consecutiveFailures)),
        ]
        if let e = s.lastError { object["last_error"] = .string(e) }
        if let r = s.refusing { object["refusing"] = .string(r) }
        if let next = s.nextProbe { object["next_probe"] = .string(Timestamps.iso(next)) }
        if let ok = s.lastSuccess { object["last_success"] = .string(Timestamps.iso(ok)) }
        return .object(object)
    }

    /// A 4xx that no retry can fix for any message: a wrong project key or suspended ingest.
    static func isRefusal(status: Int, body: String) -> Bool {
        status == 401 || status == 403 || status == 404 || body.lowercased().contains("ingest suspended")
    }
}

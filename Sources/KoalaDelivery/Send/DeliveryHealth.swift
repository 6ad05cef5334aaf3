package import Foundation
package import KoalaCore
import KoalaStore
import Synchronization

/// How a destination is answering, shared by the sender (which updates it) and `/readyz` and the console (which show
/// it): a `CircuitBreaker` behind a lock.
package final class DeliveryHealth: Sendable {
    private let breaker: Mutex<CircuitBreaker>

    package init(failureThreshold: Int = 5, firstProbeInterval: TimeInterval = 1, maxProbeInterval: TimeInterval = 60) {
        breaker = Mutex(CircuitBreaker(policy: .init(failureThreshold: failureThreshold, firstProbeInterval: firstProbeInterval,
                                                     maxProbeInterval: maxProbeInterval)))
    }

    /// The circuit and what the destination last answered, at one moment: for the console, `/readyz` and tests.
    package var snapshot: CircuitBreaker { breaker.withLock { $0 } }

    /// See `CircuitBreaker.gate(now:)`.
    func gate(now: Date) -> CircuitBreaker.Gate { breaker.withLock { $0.gate(now: now) } }

    /// See `CircuitBreaker.success(at:)`.
    @discardableResult
    func recordSuccess(now: Date) -> CircuitBreaker.Change { breaker.withLock { $0.success(at: now) } }

    /// Runs `body` with the breaker held: for a decision that reads and changes it in one step.
    func update<Result>(_ body: (inout CircuitBreaker) -> Result) -> Result {
        breaker.withLock { body(&$0) }
    }

    /// For `/readyz`.
    package var json: JSONValue {
        let s = snapshot
        var object: [String: JSONValue] = [
            "circuit": .string(s.isOpen ? "open" : "closed"),
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

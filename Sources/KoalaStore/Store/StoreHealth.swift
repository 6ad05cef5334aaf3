import Foundation
import Synchronization

/// Whether a store can take webhooks: the one answer `/readyz` gives, with why not.
package enum StoreHealth: Sendable, Equatable {
    /// It answers and takes writes.
    case ok
    /// It does not answer (not started, unreachable).
    case unavailable
    /// It answers but refuses writes, and why (a full disk, a read-only database): accepts get 503 until it heals.
    case refusingWrites(String)

    /// Whether webhooks can be taken.
    package var isReady: Bool { self == .ok }

    /// As `/readyz` says it.
    package var description: String {
        switch self {
        case .ok: "ok"
        case .unavailable: "unavailable"
        case .refusingWrites(let why): "refusing writes: \(why)"
        }
    }
}

/// What the last writes said about the database's room to write: set when one fails because the database refuses
/// writes (disk full, read-only), cleared when one succeeds. Both stores keep one.
final class WriteRefusals: Sendable {
    private let state = Mutex<String?>(nil)

    /// Why writes are refused now, if the last write said so.
    var current: String? { state.withLock { $0 } }

    /// Notes a failed write: remembered when `classify` says the database refuses writes.
    func failed(_ error: any Error, classify: (any Error) -> String?) {
        guard let why = classify(error) else { return }
        state.withLock { $0 = why }
    }

    func succeeded() {
        state.withLock { $0 = nil }
    }

    /// Runs one write, noting what it says.
    func observing<T>(_ classify: (any Error) -> String?, _ write: () async throws -> T) async throws -> T {
        do {
            let result = try await write()
            succeeded()
            return result
        } catch {
            failed(error, classify: classify)
            throw error
        }
    }
}

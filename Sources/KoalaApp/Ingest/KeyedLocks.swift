/// Mutual exclusion per key, for ingest: webhooks that remember the same state (one subscription's updates)
/// are routed and stored one after the other, so each compares against the state the one before it left.
/// Keys are taken in sorted order, so two webhooks sharing several keys never wait on each other in a cycle.
actor KeyedLocks {
    private var held: Set<String> = []
    private var waiters: [String: [CheckedContinuation<Void, Never>]] = [:]

    /// Runs `body` holding every key in `keys`.
    func withLocks<T: Sendable>(_ keys: [String], _ body: @Sendable () async throws -> T) async throws -> T {
        let sorted = Array(Set(keys)).sorted()
        for key in sorted {
            while held.contains(key) {
                await withCheckedContinuation { waiters[key, default: []].append($0) }
            }
            held.insert(key)
        }
        defer {
            for key in sorted {
                held.remove(key)
                if var queue = waiters[key], !queue.isEmpty {
                    queue.removeFirst().resume()
                    waiters[key] = queue.isEmpty ? nil : queue
                }
            }
        }
        return try await body()
    }
}

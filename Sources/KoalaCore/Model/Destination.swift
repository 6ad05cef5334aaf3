/// Where messages are delivered: Koala (the default and first-class destination) and services that accept
/// Segment's HTTP Tracking API. Each has its own outbox entries, retries and dead letters. The one list of
/// these names (settings, the `destinations:` rule key, the `destination` metric label, `--destination`).
package enum Destination: String, Sendable, CaseIterable, Codable, Comparable {
    case koala
    case segment
    case rudderstack
    case segmentCompatible = "segment-compatible"

    /// Koala first, then in declaration order.
    package static func < (a: Destination, b: Destination) -> Bool { a.order < b.order }

    private var order: Int {
        switch self {
        case .koala: 0
        case .segment: 1
        case .rudderstack: 2
        case .segmentCompatible: 3
        }
    }
}

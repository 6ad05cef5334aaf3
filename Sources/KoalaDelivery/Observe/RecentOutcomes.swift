package import Foundation
package import KoalaCore
import Synchronization

/// How many webhooks of each source ended in each outcome over the last day, in one-minute buckets, for the
/// console's overview. Kept in memory by this process (since it started): refusals are never stored. Sources
/// are the rule files' names (unknown paths all count as "unknown"), so the table stays small.
package final class RecentOutcomes: Sendable {
    /// One minute of one source: a count per outcome.
    struct Bucket {
        var minute: Int64
        var counts: [WebhookOutcome: Int]
    }

    static let minutes = 24 * 60
    private let buckets = Mutex<[String: [Bucket]]>([:])

    package init() {}

    package func record(source: String, outcome: WebhookOutcome, at date: Date = Date()) {
        let minute = Int64((date.timeIntervalSince1970 / 60).rounded(.down))
        let slot = Int(minute % Int64(Self.minutes))
        buckets.withLock { all in
            // Changed in place: the ring is never copied on the hot path.
            if all[source] == nil { all[source] = Array(repeating: Bucket(minute: -1, counts: [:]), count: Self.minutes) }
            if all[source]![slot].minute != minute { all[source]![slot] = Bucket(minute: minute, counts: [:]) }
            all[source]![slot].counts[outcome, default: 0] += 1
        }
    }

    /// Each outcome's count for `source` over the `seconds` before `now`, whole minutes.
    package func counts(source: String, within seconds: TimeInterval, now: Date = Date()) -> [WebhookOutcome: Int] {
        let current = Int64((now.timeIntervalSince1970 / 60).rounded(.down))
        let first = current - Int64(max(1, min(Double(Self.minutes), (seconds / 60).rounded(.up)))) + 1
        return buckets.withLock { all in
            var out: [WebhookOutcome: Int] = [:]
            for bucket in all[source] ?? [] where bucket.minute >= first && bucket.minute <= current {
                for (outcome, n) in bucket.counts { out[outcome, default: 0] += n }
            }
            return out
        }
    }
}

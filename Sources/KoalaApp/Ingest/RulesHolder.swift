import Foundation
package import KoalaCore
import Synchronization

/// The current rule table, swapped atomically on reload. A webhook reads it once and is routed
/// entirely by that version.
package final class RulesHolder: Sendable {
    private let current: Mutex<RuleTable>
    private let reloadError: Mutex<String?>
    private let times: Mutex<(loaded: Date, lastAttempt: Date?)>

    package init(_ table: RuleTable) {
        current = Mutex(table)
        reloadError = Mutex(nil)
        times = Mutex((Date(), nil))
    }

    /// When the table in use was loaded, and when a reload was last tried (nil: never since start).
    var loadedAt: Date { times.withLock { $0.loaded } }
    var lastReloadAttempt: Date? { times.withLock { $0.lastAttempt } }

    var table: RuleTable {
        current.withLock { $0 }
    }

    /// Why the last reload was refused (nil once a reload succeeds).
    var lastReloadError: String? {
        reloadError.withLock { $0 }
    }

    func replace(with table: RuleTable) {
        current.withLock { $0 = table }
        reloadError.withLock { $0 = nil }
        let now = Date()
        times.withLock { $0 = (now, now) }
    }

    func recordReloadFailure(_ message: String) {
        reloadError.withLock { $0 = message }
        times.withLock { $0.lastAttempt = Date() }
    }
}

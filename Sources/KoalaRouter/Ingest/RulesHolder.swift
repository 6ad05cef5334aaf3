import Synchronization

/// The current rule table, swapped atomically on reload. A webhook reads it once and is routed
/// entirely by that version.
public final class RulesHolder: Sendable {
    private let current: Mutex<RuleTable>

    public init(_ table: RuleTable) {
        current = Mutex(table)
    }

    public var table: RuleTable {
        current.withLock { $0 }
    }

    public func replace(with table: RuleTable) {
        current.withLock { $0 = table }
    }
}

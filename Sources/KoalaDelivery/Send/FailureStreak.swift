package import Logging

/// Consecutive failed rounds of a background loop (the store unreachable, say). Logs the first failure,
/// every hundredth, and the recovery, rather than every poll.
package struct FailureStreak: Sendable {
    /// Failed rounds in a row; 0 once a round works.
    package private(set) var count = 0
    let loop: String

    /// `loop` names the loop in the log lines: "sender rounds", "identity resolver rounds".
    package init(_ loop: String) {
        self.loop = loop
    }

    /// Records a success; logs the recovery if a streak was running.
    package mutating func succeeded(_ logger: Logger) {
        guard count > 0 else { return }
        logger.notice("\(loop) work again", metadata: ["failed_rounds": "\(count)"])
        count = 0
    }

    /// Records a failure; logs the first and every hundredth.
    package mutating func failed(_ error: any Error, _ logger: Logger) {
        count += 1
        if count == 1 || count.isMultiple(of: 100) {
            logger.error("\(loop) failing; will retry", metadata: ["error": "\(error)", "failed_rounds": "\(count)"])
        }
    }
}

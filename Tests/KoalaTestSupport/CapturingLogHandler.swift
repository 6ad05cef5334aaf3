import Logging
import Synchronization

/// A log handler that keeps every line (`level message key=value …`), for tests that check what is logged.
package final class CapturingLogHandler: LogHandler, @unchecked Sendable {
    package var metadata: Logger.Metadata = [:]
    package var logLevel: Logger.Level = .trace
    private let captured = Mutex<[String]>([])

    package init() {}

    /// The lines so far.
    package var lines: [String] { captured.withLock { $0 } }

    package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    package func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        let fields = all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        captured.withLock { $0.append("\(event.level) \(event.message)" + (fields.isEmpty ? "" : " " + fields)) }
    }
}

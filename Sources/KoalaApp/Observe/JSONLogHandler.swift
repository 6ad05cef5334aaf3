import Foundation
import KoalaCore
import KoalaDelivery
import KoalaStore
package import Logging

/// One JSON object per line on standard error, for log pipelines: `time`, `level`, `message`, `logger`,
/// then the metadata (source, webhook_id, route, message ids, …). `LOG_FORMAT=json` selects it.
package struct JSONLogHandler: LogHandler {
    package var metadata: Logger.Metadata = [:]
    package var logLevel: Logger.Level = .info
    let label: String

    package init(label: String) {
        self.label = label
    }

    /// Metadata attached to this handler.
    package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    package func log(event: LogEvent) {
        var object: [String: JSONValue] = [
            "time": .string(Timestamps.iso(Date())),
            "level": .string(event.level.rawValue),
            "message": .string(LogText.escaped(event.message.description)),
            "logger": .string(label),
        ]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { _, new in new }) {
            object[key] = Self.json(LogText.escaped(value))
        }
        if let error = event.error, object["error"] == nil { object["error"] = .string(LogText.escaped("\(error)")) }
        let line = JSONValue.object(object).encoded() + "\n"
        FileHandle.standardError.write(Data(line.utf8))
    }

    static func json(_ value: Logger.Metadata.Value) -> JSONValue {
        switch value {
        case .string(let s): .string(s)
        case .stringConvertible(let c): .string(c.description)
        case .array(let items): .array(items.map(json))
        case .dictionary(let d): .object(d.mapValues(json))
        }
    }
}

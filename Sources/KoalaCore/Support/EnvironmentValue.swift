import Foundation

/// One way to read a setting or secret from the environment, for the service's settings and the rule files'
/// secrets alike: `NAME` if it is set and not empty, else the contents of the file named by `NAME_FILE`
/// (Docker and Kubernetes secrets), without surrounding whitespace.
package enum EnvironmentValue {
    /// `NAME_FILE` names a file that cannot be read. Never a silent fallback: the caller reports it.
    package struct UnreadableFile: Error, CustomStringConvertible, Equatable {
        /// The setting's name, without `_FILE`.
        let name: String
        /// The path `NAME_FILE` holds.
        let path: String
        package var description: String {
            "\(name)_FILE names '\(path)', which cannot be read; mount the secret there or unset \(name)_FILE"
        }
    }

    /// The value of `name` in `environment`, nil if neither `NAME` nor `NAME_FILE` is set.
    package static func resolve(_ name: String, in environment: [String: String]) throws(UnreadableFile) -> String? {
        if let value = environment[name], !value.isEmpty { return value }
        guard let path = environment[name + "_FILE"], !path.isEmpty else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else { throw UnreadableFile(name: name, path: path) }
        return String(decoding: data, as: UTF8.self).trimmingWhitespace
    }
}

import Foundation
import KoalaCore
import KoalaDelivery
import KoalaStore
import Yams

/// The optional YAML config file: each setting under its prefix, e.g.
///
///     koala_router:
///       port: 8080
///       database: postgres://router@db.internal/koala
///       linger_ms: 50
///     koala:
///       api_url: https://api2.getkoala.com
///     log:
///       level: info
///
/// swift-configuration reads the values; this checks the file first so a typo is an error with a line
/// number instead of a setting silently left at its default.
enum ConfigFile {
    static func check(_ path: String) throws {
        func invalid(_ problem: String) -> KoalaRouterError {
            KoalaRouterError.invalid(setting: "KOALA_ROUTER_CONFIG", problem: problem)
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw invalid("cannot read '\(path)'; point KOALA_ROUTER_CONFIG (or --config) at a readable YAML file")
        }
        let node: Node?
        do {
            node = try Yams.compose(yaml: String(decoding: data, as: UTF8.self))
        } catch {
            throw invalid("\(path): not valid YAML: \(error)")
        }
        guard let node else { return }  // an empty file sets nothing
        guard case .mapping(let top) = node else {
            throw invalid("\(path):\(node.mark?.line ?? 1): expected a mapping of settings (koala_router:, koala:, log:)")
        }
        let known = Dictionary(grouping: RouterConfiguration.entries.map(\.path), by: { $0[0] })
            .mapValues { Set($0.compactMap { $0.count > 1 ? $0[1] : nil }) }
        var problems: [String] = []
        for (keyNode, value) in top {
            let group = keyNode.string ?? ""
            let line = keyNode.mark?.line ?? 0
            guard let names = known[group] else {
                problems.append("\(path):\(line): unknown section '\(group)'; expected one of \(known.keys.sorted().joined(separator: ", "))")
                continue
            }
            guard case .mapping(let entries) = value else {
                problems.append("\(path):\(line): '\(group)' must be a mapping of settings")
                continue
            }
            for (entry, entryValue) in entries {
                let name = entry.string ?? ""
                let entryLine = entry.mark?.line ?? 0
                if !names.contains(name) {
                    let suggestion = Suggest.closest(to: name, in: names.sorted()).map { " (did you mean '\($0)'?)" } ?? ""
                    problems.append("\(path):\(entryLine): unknown setting '\(group).\(name)'\(suggestion)")
                } else if case .scalar = entryValue {
                } else {
                    problems.append("\(path):\(entryLine): '\(group).\(name)' must be a single value")
                }
            }
        }
        if !problems.isEmpty { throw invalid(problems.joined(separator: "\n  ")) }
    }

}

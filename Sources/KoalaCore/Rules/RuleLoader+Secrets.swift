import Foundation
import Yams

/// Resolving `${NAME}` secrets from the environment and `NAME_FILE` files.
extension FileParser {
    mutating func secretReferences(_ node: Node?, parent: Node, source: String) -> [String] {
        guard let node else {
            errors.append(location(parent).error("missing 'secrets'",
                hint: "name the environment variable holding the signing secret, e.g. 'secrets: [\(source.uppercased().replacingOccurrences(of: "-", with: "_"))_WEBHOOK_SECRET]'"))
            return []
        }
        var names: [String] = []
        for (text, at) in stringList(node, what: "verify.secrets") {
            var reference = text
            if reference.hasPrefix("${") && reference.hasSuffix("}") {
                reference = String(reference.dropFirst(2).dropLast())
            }
            guard Self.isEnvironmentName(reference) else {
                errors.append(at.error("secrets are referenced by environment variable name, never written inline",
                    hint: "put the secret in an environment variable (e.g. \(source.uppercased().replacingOccurrences(of: "-", with: "_"))_WEBHOOK_SECRET) and write its name here"))
                continue
            }
            names.append(reference)
        }
        return names
    }

    /// `NAME` from the environment, or the contents of the file named by `NAME_FILE`; an unreadable file is
    /// remembered in `unreadableSecrets` and disables the source with that reason.
    mutating func resolveSecret(_ name: String) -> String? {
        do {
            return try EnvironmentValue.resolve(name, in: environment)
        } catch {
            unreadableSecrets[name] = error.description
            return nil
        }
    }
}

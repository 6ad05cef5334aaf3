import ArgumentParser
import Foundation
import KoalaApp
import KoalaCore
import KoalaStore

/// How every command finds its settings, the same way as `serve`: its flags, then the environment (and
/// `NAME_FILE` secrets), then the config file (`--config` or `KOALA_ROUTER_CONFIG`), then the defaults.
struct SettingsOption: ParsableArguments {
    @Option(name: .long, help: "YAML config file (env KOALA_ROUTER_CONFIG). Flags win over the environment, which wins over the file.")
    var config: String?

    /// The settings, with `flags` (by environment name; nil = not given) on top. A bad setting ends the
    /// command with exit code 2 and a message naming it.
    func resolve(_ flags: [String: String?] = [:]) async throws -> RouterConfiguration {
        do {
            return try await RouterConfiguration.load(flags: flags.compactMapValues { $0 }, configFile: config)
        } catch {
            FileHandle.standardError.write(Data("koala-router: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}

extension RouterConfiguration {
    /// The rule table in the configured routes folder, with secrets resolved like `serve` does; a broken
    /// table prints its errors and ends the command with exit code 1.
    func loadRules(directory: String? = nil) throws -> RuleTable {
        do {
            return try RuleLoader(environment: environment).load(directory: directory ?? routesDirectory)
        } catch {
            FileHandle.standardError.write(Data("\(error)\n".utf8))
            throw ExitCode(1)
        }
    }

    /// Runs `body` with the configured store, opened beside a running service (it leaves leases alone).
    func withStore<T>(_ body: (any WebhookStore) async throws -> T) async throws -> T {
        let store = try await openStore(self, serving: false)
        return try await store.whileRunning { try await body(store) }
    }
}

import Foundation
import Logging
import Testing
@testable import KoalaApp
@testable import KoalaCore
import KoalaTestSupport

@Suite("Configuration and logs")
struct ConfigurationTests {
    @Test func invalidSettingsNameTheSetting() async {
        func problem(_ env: [String: String]) async -> String? {
            do {
                _ = try await RouterConfiguration.load(environment: env)
                return nil
            } catch {
                return "\(error)"
            }
        }
        #expect(await problem(["KOALA_ROUTER_DATABASE": "mysql://koala:hunter2@db/koala"])
                == "invalid setting KOALA_ROUTER_DATABASE: unsupported database 'mysql://koala:REDACTED@db/koala': use a file path, sqlite:PATH or postgres://…")
        #expect(await problem(["KOALA_ROUTER_PORT": "eighty"]) == "invalid setting KOALA_ROUTER_PORT: 'eighty' is not a number in 0...65535")
        #expect(await problem(["KOALA_API_URL": "ftp://x"]) == "invalid setting KOALA_API_URL: 'ftp://x' is not an http(s) URL")
        #expect(await problem(["LOG_FORMAT": "xml"]) == "invalid setting LOG_FORMAT: 'xml' is not json or text")
        #expect(await problem(["KOALA_ROUTER_ADMIN_TOKEN": "short"])?.hasPrefix("invalid setting KOALA_ROUTER_ADMIN_TOKEN: too short") == true)
        #expect(await problem([:]) == nil)
    }

    @Test func secretsAreRedactedAndFilesAreRead() async throws {
        let file = temporaryDirectory() + "/key"
        try "pk_from_file\n".write(toFile: file, atomically: true, encoding: .utf8)
        let config = try await RouterConfiguration.load(environment: ["KOALA_PUBLIC_API_KEY_FILE": file, "KOALA_ROUTER_ADMIN_TOKEN": "a-very-secret-admin-token"])
        #expect(config.koalaPublicKey == "pk_from_file")
        let printed = config.described.map { "\($0.0)=\($0.1)" }.joined(separator: "\n")
        #expect(!printed.contains("pk_from_file") && !printed.contains("a-very-secret-admin-token"))
        #expect(printed.contains("KOALA_PUBLIC_API_KEY=(set, redacted)"))
    }

    @Test func flagsWinOverEnvironmentWhichWinsOverTheFile() async throws {
        let file = temporaryDirectory() + "/koala-router.yaml"
        try """
            koala_router:
              port: 9000
              host: 127.0.0.1
              linger_ms: 250
              lease_s: 90
            koala:
              api_url: https://koala.example
            log:
              level: debug
            """.write(toFile: file, atomically: true, encoding: .utf8)
        let config = try await RouterConfiguration.load(environment: ["KOALA_ROUTER_PORT": "9100", "KOALA_ROUTER_CONFIG": file],
                                                        flags: ["KOALA_ROUTER_HOST": "0.0.0.0"])
        #expect(config.host == "0.0.0.0")                        // flag over file
        #expect(config.port == 9100)                             // environment over file
        #expect(config.delivery.linger == 0.25)                  // file over default
        #expect(config.delivery.lease == 90)
        #expect(config.koalaAPIURL == "https://koala.example")
        #expect(config.logLevel == .debug)
        #expect(config.configFile == file)
        #expect(config.retention == 7 * 86400)                   // default
        // A secret from a *_FILE beats the config file, an environment value beats the *_FILE.
        let secret = temporaryDirectory() + "/admin-token"
        try "token-from-a-mounted-secret\n".write(toFile: secret, atomically: true, encoding: .utf8)
        let fromFile = try await RouterConfiguration.load(environment: ["KOALA_ROUTER_ADMIN_TOKEN_FILE": secret], configFile: file)
        #expect(fromFile.adminToken == "token-from-a-mounted-secret")
        let fromEnv = try await RouterConfiguration.load(environment: ["KOALA_ROUTER_ADMIN_TOKEN_FILE": secret,
                                                                       "KOALA_ROUTER_ADMIN_TOKEN": "token-from-the-environment"])
        #expect(fromEnv.adminToken == "token-from-the-environment")
    }

    @Test func aBadConfigFileNamesTheLineAndTheSetting() async throws {
        let file = temporaryDirectory() + "/koala-router.yaml"
        try """
            koala_router:
              port: 9000
              lingr_ms: 250
            loging:
              level: debug
            """.write(toFile: file, atomically: true, encoding: .utf8)
        do {
            _ = try await RouterConfiguration.load(environment: [:], configFile: file)
            Issue.record("a config file with typos was accepted")
        } catch {
            let text = "\(error)"
            #expect(text.contains("\(file):3: unknown setting 'koala_router.lingr_ms' (did you mean 'linger_ms'?)"))
            #expect(text.contains("\(file):4: unknown section 'loging'"))
        }
        // A value from the file is checked like any other, and named by its setting.
        try "koala_router:\n  port: eighty\n".write(toFile: file, atomically: true, encoding: .utf8)
        await #expect(throws: KoalaRouterError.self) { try await RouterConfiguration.load(environment: [:], configFile: file) }
        await #expect(throws: KoalaRouterError.self) {
            try await RouterConfiguration.load(environment: ["KOALA_ROUTER_CONFIG": "/nonexistent/koala-router.yaml"])
        }
        let unreadable = await #expect(throws: KoalaRouterError.self) {
            try await RouterConfiguration.load(environment: ["KOALA_PUBLIC_API_KEY_FILE": "/nonexistent/key"])
        }
        #expect(unreadable?.code == .invalidSetting && unreadable?.setting == "KOALA_PUBLIC_API_KEY_FILE")
        #expect(unreadable?.description == "invalid setting KOALA_PUBLIC_API_KEY_FILE: KOALA_PUBLIC_API_KEY_FILE names '/nonexistent/key', which cannot be read; mount the secret there or unset KOALA_PUBLIC_API_KEY_FILE")
    }

    /// A program embedding the router catches one error type: a broken rule file and an unusable database come out of
    /// `makeRouterApplication` as `KoalaRouterError`s with their codes and the messages the CLI prints.
    @Test func theLibraryThrowsOneErrorTypeWithCodes() async throws {
        let routes = temporaryDirectory()
        try "source: stripe\nroutes: [\n".write(toFile: routes + "/broken.yaml", atomically: true, encoding: .utf8)
        var configuration = try await RouterConfiguration.load(environment: [:])
        configuration.routesDirectory = routes
        let broken = await #expect(throws: KoalaRouterError.self) {
            _ = try await makeRouterApplication(configuration, logger: Logger(label: "test"))
        }
        #expect(broken?.code == .rules && broken?.setting == nil && broken?.message.contains("broken.yaml") == true)

        configuration.routesDirectory = repositoryRoot + "/routes"
        configuration.database = "mysql://koala:hunter2@db/koala"
        let database = await #expect(throws: KoalaRouterError.self) {
            _ = try await makeRouterApplication(configuration, logger: Logger(label: "test"))
        }
        #expect(database?.code == .storage && database?.description.hasPrefix("KOALA_ROUTER_DATABASE: unsupported database") == true)
        #expect(database?.description.contains("hunter2") == false)
    }

    /// Each setting is declared once, in its component's table; README's table must list exactly those, with
    /// the defaults `koala-router config` prints.
    @Test func readmeDocumentsEverySettingWithItsDefault() throws {
        let readme = try String(contentsOfFile: repositoryRoot + "/README.md", encoding: .utf8)
        var documented: [String: String] = [:]
        for line in readme.split(separator: "\n") where line.hasPrefix("| `") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count > 4 else { continue }
            let name = cells[1].trimmingCharacters(in: CharacterSet(charactersIn: "`"))
            guard name.hasPrefix("KOALA_") || name.hasPrefix("LOG_") || name.hasPrefix("SEGMENT_") || name.hasPrefix("RUDDERSTACK_")
                    || name.hasSuffix("_API_KEY") || name.hasSuffix("_API_URL") else { continue }
            documented[name] = cells[3]
        }
        let defaults = Dictionary(RouterConfiguration(environment: [:]).described, uniquingKeysWith: { a, _ in a })
        for name in RouterConfiguration.settingNames + ["KOALA_ROUTER_CONFIG"] {
            let cell = try #require(documented[name], "README's configuration table does not list \(name)")
            let value = try #require(defaults[name])
            if cell.hasPrefix("`") {
                #expect(cell.hasPrefix("`\(value)`"), "README says \(name) defaults to \(cell); it is \(value)")
            } else {
                #expect(cell.hasPrefix("none") && value.hasPrefix("(not set"), "README says \(name) defaults to \(cell); it is \(value)")
            }
        }
        #expect(Set(documented.keys).subtracting(RouterConfiguration.settingNames + ["KOALA_ROUTER_CONFIG"]).isEmpty)
    }

    @Test func jsonLogLinesCarryMetadata() {
        #expect(JSONLogHandler.json(.dictionary(["a": .string("b"), "n": .array([.stringConvertible(3)])])) == ["a": "b", "n": ["3"]])
    }
}

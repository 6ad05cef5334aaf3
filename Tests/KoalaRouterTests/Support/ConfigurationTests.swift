import Foundation
import Logging
import Testing
@testable import KoalaRouter

@Suite("Configuration and logs")
struct ConfigurationTests {
    @Test func invalidSettingsNameTheSetting() {
        func problem(_ env: [String: String]) -> String? {
            do {
                _ = try RouterConfiguration.fromEnvironment(env)
                return nil
            } catch {
                return "\(error)"
            }
        }
        #expect(problem(["KOALA_ROUTER_PORT": "eighty"]) == "invalid setting KOALA_ROUTER_PORT: 'eighty' is not a number in 0.0...65535.0")
        #expect(problem(["KOALA_API_URL": "ftp://x"]) == "invalid setting KOALA_API_URL: 'ftp://x' is not an http(s) URL")
        #expect(problem(["LOG_FORMAT": "xml"]) == "invalid setting LOG_FORMAT: 'xml' is not json or text")
        #expect(problem(["KOALA_ROUTER_ADMIN_TOKEN": "short"])?.hasPrefix("invalid setting KOALA_ROUTER_ADMIN_TOKEN: too short") == true)
        #expect(problem([:]) == nil)
    }

    @Test func secretsAreRedactedAndFilesAreRead() throws {
        let file = temporaryDirectory() + "/key"
        try "pk_from_file\n".write(toFile: file, atomically: true, encoding: .utf8)
        let config = try RouterConfiguration.fromEnvironment(["KOALA_PUBLIC_API_KEY_FILE": file, "KOALA_ROUTER_ADMIN_TOKEN": "a-very-secret-admin-token"])
        #expect(config.koalaPublicKey == "pk_from_file")
        let printed = config.described.map { "\($0.0)=\($0.1)" }.joined(separator: "\n")
        #expect(!printed.contains("pk_from_file") && !printed.contains("a-very-secret-admin-token"))
        #expect(printed.contains("KOALA_PUBLIC_API_KEY=(set, redacted)"))
    }

    @Test func jsonLogLinesCarryMetadata() {
        #expect(JSONLogHandler.json(.dictionary(["a": .string("b"), "n": .array([.stringConvertible(3)])])) == ["a": "b", "n": ["3"]])
    }
}

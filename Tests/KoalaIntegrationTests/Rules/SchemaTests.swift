import Foundation
import Testing
@testable import KoalaCore
@testable import KoalaRuleTools
import KoalaTestSupport

/// Issue 16, part 5: the editor schemas in schema/ accept every shipped file, refuse the mistakes the
/// loader refuses, and name exactly the keys, schemes, destinations and outputs the loader knows.
@Suite("Editor schema")
struct SchemaTests {
    func schema(_ name: String) throws -> JSONValue {
        try JSONValue.parse(Array(try String(contentsOfFile: repositoryRoot + "/schema/" + name, encoding: .utf8).utf8))
    }

    /// `scripts/validate-schema` with the real jsonschema validator (python3-jsonschema, installed by scripts/test).
    func validate(_ files: [String]) throws -> (status: Int32, output: String) {
        try runProgram("/usr/bin/env", ["python3", repositoryRoot + "/scripts/validate-schema"] + files,
                       environment: ProcessInfo.processInfo.environment)
    }

    func keys(_ object: JSONValue?) -> [String] {
        guard case .object(let members)? = object?["properties"] else { return [] }
        return members.keys.sorted()
    }

    @Test func everyShippedRuleAndTestFileIsValid() throws {
        let result = try validate([])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("validate-schema: 14 file(s), 0 problem(s)"), "\(result.output)")
    }

    @Test func theSchemaRefusesWhatTheLoaderRefuses() throws {
        let dir = temporaryDirectory()
        let stripe = try String(contentsOfFile: repositoryRoot + "/routes/stripe.yaml", encoding: .utf8)
        try stripe.replacingOccurrences(of: "scheme: stripe ", with: "scheme: strpe ")
            .replacingOccurrences(of: "  - name: payment-succeeded\n", with: "  - name: payment-succeeded\n    destinatons: [koala]\n")
            .write(toFile: dir + "/stripe.yaml", atomically: true, encoding: .utf8)
        let tests = try String(contentsOfFile: repositoryRoot + "/routes/tests/stripe.yaml", encoding: .utf8)
        try tests.replacingOccurrences(of: "      - route: payment-succeeded\n        output: track\n", with: "      - route: payment-succeeded\n        output: trak\n        emial: x\n")
            .write(toFile: dir + "/stripe-tests.yaml", atomically: true, encoding: .utf8)
        let result = try validate([dir + "/stripe.yaml", dir + "/stripe-tests.yaml"])
        #expect(result.status == 1)
        #expect(result.output.contains("\(dir)/stripe.yaml:10: verify.scheme: 'strpe' is not one of ['basic-auth', 'bearer-token', 'github', 'hmac', 'lemon-squeezy', 'orb', 'paddle', 'recurly', 'shopify', 'standard-webhooks', 'stripe', 'workos']"), "\(result.output)")
        #expect(result.output.contains("routes.0: Additional properties are not allowed ('destinatons' was unexpected)"), "\(result.output)")
        #expect(result.output.contains("tests.0.expect.0: Additional properties are not allowed ('emial' was unexpected)"), "\(result.output)")
        #expect(result.output.contains("tests.0.expect.0.output: 'trak' is not one of ['track', 'identify', 'account']"), "\(result.output)")
    }

    /// The schema and the loader agree: the same keys at every level, the same schemes, destinations and outputs,
    /// and the value description names every filter and function.
    @Test func theSchemaAndTheLoaderAgree() throws {
        let rules = try schema("rules.schema.json")
        let defs = rules["$defs"]
        #expect(keys(rules) == FileParser.sourceKeys.sorted())
        #expect(keys(rules["properties"]?["verify"]) == FileParser.verifyKeys.sorted())
        let route = defs?["route"]
        #expect(keys(route) == FileParser.routeKeys.sorted())
        #expect(keys(route?["properties"]?["when"]) == FileParser.whenKeys.sorted())
        #expect(keys(route?["properties"]?["person"]) == FileParser.personKeys.sorted())
        #expect(keys(route?["properties"]?["track"]) == FileParser.trackKeys.sorted())
        #expect(keys(route?["properties"]?["identify"]) == FileParser.identifyKeys.sorted())
        #expect(keys(route?["properties"]?["account"]) == FileParser.accountKeys.sorted())
        guard case .array(let forms)? = route?["properties"]?["remember"]?["additionalProperties"]?["anyOf"], forms.count == 2 else {
            Issue.record("remember takes a value or { key, values }")
            return
        }
        #expect(keys(forms[1]) == FileParser.memoryKeys.sorted())
        #expect(rules["properties"]?["verify"]?["properties"]?["scheme"]?["enum"] == .array(Schemes.all.keys.sorted().map { .string($0) }))
        #expect(defs?["destinations"]?["items"]?["enum"] == .array(Destination.allCases.map { .string($0.rawValue) }))
        let described = defs?["value"]?["description"]?.stringValue ?? ""
        for name in Filters.all.keys { #expect(described.contains(name), "filter \(name) is not in the schema's value description") }
        for name in Functions.names.keys { #expect(described.contains(name + "("), "function \(name) is not in the schema's value description") }

        let tests = try schema("rule-tests.schema.json")
        #expect(keys(tests["properties"]?["tests"]?["items"]) == TestFile.testKeys.sorted())
        #expect(keys(tests["$defs"]?["message"]) == TestFile.expectKeys.sorted())
        #expect(tests["$defs"]?["message"]?["properties"]?["output"]?["enum"] == .array(KoalaMessage.Output.allCases.map { .string($0.rawValue) }))
    }

    /// Every shipped file names its schema on the first line, for the YAML language server.
    @Test func everyShippedFileNamesItsSchema() throws {
        let files = FileManager.default
        for name in try files.contentsOfDirectory(atPath: repositoryRoot + "/routes") where name.hasSuffix(".yaml") {
            let first = try String(contentsOfFile: repositoryRoot + "/routes/" + name, encoding: .utf8).split(separator: "\n").first
            #expect(first == "# yaml-language-server: $schema=../schema/rules.schema.json", "routes/\(name)")
        }
        for name in try files.contentsOfDirectory(atPath: repositoryRoot + "/routes/tests") where name.hasSuffix(".yaml") {
            let first = try String(contentsOfFile: repositoryRoot + "/routes/tests/" + name, encoding: .utf8).split(separator: "\n").first
            #expect(first == "# yaml-language-server: $schema=../../schema/rule-tests.schema.json", "routes/tests/\(name)")
        }
    }
}

import Foundation
import FuzzHarness
import Testing
@testable import KoalaCore
import KoalaTestSupport

/// The tape (issue 30) against the tree parser it replaced, kept as the reference in `FuzzHarness`: the same values,
/// the same errors at the same offsets, and every expression of the shipped rules reads the same from either.
@Suite("JSON tape")
struct JSONTapeTests {
    /// Every sample body of the shipped rules.
    static func samples() throws -> [(name: String, body: [UInt8])] {
        var out: [(String, [UInt8])] = []
        let root = repositoryRoot + "/routes/samples"
        for source in try FileManager.default.contentsOfDirectory(atPath: root).sorted() {
            for name in try FileManager.default.contentsOfDirectory(atPath: root + "/" + source).sorted() where name.hasSuffix(".json") {
                out.append(("\(source)/\(name)", [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(root)/\(source)/\(name)")))))
            }
        }
        return out
    }

    /// Documents written to reach every difference a tape could have from a tree: repeated keys, keys equal only as
    /// Swift strings are (the Kelvin sign is K, é is e + U+0301), escapes and surrogates, numbers at and beyond Int64
    /// and Double, depth, and each error the parser names.
    static let edges: [String] = [
        #"{"a":1,"a":2}"#, #"{"a":{"b":1},"a":[1]}"#, #"{"K":1,"\u212a":2}"#, "{\"\u{212A}\":1,\"K\":2}", "{\"caf\u{E9}\":1,\"cafe\u{301}\":2}",
        #"{"a\"b":1,"a\\b":[true,false,null]}"#, #"{"\ud83d\ude00":"\ud83d\ude00","":""}"#, #"["\/","\b\f\n\r\t","\u0000"]"#,
        "9223372036854775807", "-9223372036854775808", "9223372036854775808", "-0", "0.0", "1e999", "-1e999", "2e2", "200.0",
        "99999999999999999990", "1E+2", "1e-400", #"{"n":[1,-1,1.5,-0.0,12345678901234567890]}"#,
        "[" + String(repeating: "[", count: 511) + String(repeating: "]", count: 512), String(repeating: "[", count: 513),
        "", " ", "nul", "tru", "[1,]", "{\"a\":}", "{\"a\" 1}", "{a:1}", "[1 2]", "01", "-", "1.", "1e", "+1", ".5", "\"abc",
        #""\x""#, #""\u12""#, #""\u12g4""#, #""\ud800""#, #""\udc00""#, #""\ud800\u0041""#, "\"a\u{1}b\"", "[1]x", "{\"a\":1,}",
        "\"\u{E9}\"", #"{"a":"x\"y","b":"\u00e9"}"#,
    ]

    @Test func theTapeReadsAndRefusesWhatTheTreeParserDid() throws {
        for text in Self.edges {
            #expect(FuzzHarness.compareWithReference(Array(text.utf8)) == nil)
        }
        // Bytes that are not UTF-8, inside and outside strings.
        for bytes: [UInt8] in [[0x22, 0xC3, 0x22], [0x22, 0xFF, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], [0x22, 0x5C, 0x6E, 0xC3, 0x22], [0xEF, 0xBB, 0xBF, 0x31]] {
            #expect(FuzzHarness.compareWithReference(bytes) == nil)
        }
    }

    /// Each sample, then 300 mutations of it (bytes flipped, dropped or repeated; JSON's own characters put in):
    /// most mutants are not JSON, so this holds the errors to the reference as much as the values.
    @Test func mutatedSamplesParseAsTheTreeParserDid() throws {
        var generator = SeededGenerator(seed: 30)
        let alphabet = Array(#"{}[]:,"\ue0-+.1tfn "#.utf8) + [0x00, 0x1F, 0x80, 0xC3, 0xA9, 0xFF]
        var compared = 0
        for sample in try Self.samples() {
            #expect(FuzzHarness.compareWithReference(sample.body) == nil, "\(sample.name)")
            for _ in 0..<300 {
                var bytes = sample.body
                for _ in 0..<Int.random(in: 1...4, using: &generator) where !bytes.isEmpty {
                    let at = Int.random(in: 0..<bytes.count, using: &generator)
                    switch Int.random(in: 0..<3, using: &generator) {
                    case 0: bytes[at] = alphabet.randomElement(using: &generator)!
                    case 1: bytes.remove(at: at)
                    default: bytes.insert(bytes[at], at: at)
                    }
                }
                if let difference = FuzzHarness.compareWithReference(bytes) {
                    Issue.record("\(sample.name), mutated: \(difference)")
                    return
                }
                compared += 1
            }
        }
        #expect(compared > 10_000)
    }

    /// Every expression and condition of the shipped rules, over every sample: the tape gives what the tree gave.
    @Test func theShippedRulesReadTheSameFromTheTape() throws {
        let table = try RuleLoader(environment: [:]).load(directory: repositoryRoot + "/routes")
        let samples = try Self.samples()
        var evaluated = 0
        for source in table.sources.values {
            for sample in samples where sample.name.hasPrefix(source.name + "/") {
                let tape = try JSONTape.parse(sample.body)
                let webhook: JSONValue = ["id": "evt_1", "type": "t", "source": .string(source.name)]
                let tree = EvaluationContext(body: tape.value, headers: [:], webhook: webhook)
                let onTape = EvaluationContext(body: tape, headers: [:], webhook: webhook)
                for route in source.routes {
                    if let condition = route.condition {
                        #expect(condition.evaluate(in: onTape) == condition.evaluate(in: tree), "\(sample.name): \(route.name): \(condition)")
                    }
                    for site in route.sites {
                        #expect(site.expression.evaluate(in: onTape) == site.expression.evaluate(in: tree), "\(sample.name): \(route.name): \(site.what)")
                        evaluated += 1
                    }
                }
            }
        }
        #expect(evaluated > 1_000)
    }

    /// A path through the tape finds what the path through the tree finds, for keys, indexes, selections and misses.
    @Test func pathsWalkTheTapeAsTheTree() throws {
        let body = #"{"data":{"object":{"id":"in_1","lines":{"data":[{"id":"il_1","price":{"id":"p1"}},{"id":"il_2","price":{"id":"p2"}}]},"#
            + #""n":1.5,"big":99999999999999999990,"a":1,"a":2,"K":"k"}},"list":[1,2,3]}"#
        let tape = try JSONTape.parse(Array(body.utf8))
        let tree = EvaluationContext(body: tape.value, headers: [:], webhook: [:])
        let onTape = EvaluationContext(body: tape, headers: [:], webhook: [:])
        for text in ["body", "body.data.object.id", "body.data.object.a", "body.data.object.lines.data[1].price.id", "body.data.object.lines.data[-1].id",
                     "body.data.object.lines.data[5]", "body.list[-4]", "body.list[0].x", "body.data.object.lines.data[price.id == 'p2'].id",
                     "body.data.object.lines.data[id != 'il_1'].price", "body.data.object.lines.data[price.id == 'p3'].id", "body.data.object.n",
                     "body.data.object.big", "body.data.object.\u{212A}", "body.missing.deeper", "body.data.object.id.x"] {
            var parser = try ExpressionParser(text)
            let expression = try parser.parseComplete()
            #expect(expression.evaluate(in: onTape) == expression.evaluate(in: tree), "\(text)")
        }
        // Numbers as written: the id that is no Int64 keeps its text.
        var parser = try ExpressionParser("body.data.object.big")
        let big = try parser.parseComplete()
        #expect(big.evaluate(in: EvaluationContext(body: tape.readingNumbersAsWritten(), headers: [:], webhook: [:])) == .string("99999999999999999990"))
    }
}

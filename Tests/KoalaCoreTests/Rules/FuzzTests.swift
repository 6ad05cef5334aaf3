import Foundation
import Testing
@testable import KoalaCore
import KoalaTestSupport

/// Random expressions and randomly damaged rule files never crash the loader: each gives a table or
/// positioned errors. Seeded, so a failure reproduces.
@Suite("Fuzzing the rule loader")
struct FuzzTests {
    struct SplitMix64: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let pieces = [
        "body", "headers", "person", "webhook", ".", ".", "[", "]", "(", ")", "'", "\"", "|", ",", " ", " ", "==", "!=", "<", ">=",
        "in", "not", "and", "or", "exists", "missing", "matches", "0", "-1", "42", "1e400", "9223372036854775808", "3.5",
        "data", "object", "email", "items", "id", "lower", "cents", "default", "join", "coalesce", "recall", "email_domain",
        "{{", "}}", "'a'", "\"b\"", "é", "😀", "\\", "\u{0}", "\n", "\t", "$", "_", "-", "[0]", "[x == 1]", "'^a.*'",
    ]

    @Test func randomExpressionsAndConditionsNeverCrash() {
        var rng = SplitMix64(state: 20_261_129)
        let context = EvaluationContext(body: ["data": ["object": ["email": "a@b.io", "items": [["id": 1], ["id": "x"]]]]],
                                        headers: ["a": "b"], webhook: ["id": "w"])
        var parsed = 0
        for _ in 0..<4000 {
            let count = Int.random(in: 1...12, using: &rng)
            let text = (0..<count).map { _ in Self.pieces.randomElement(using: &rng)! }.joined()
            if var parser = try? ExpressionParser(text), let expression = try? parser.parseComplete() {
                _ = expression.evaluate(in: context)
                _ = expression.description
                parsed += 1
            }
            if var parser = try? ExpressionParser(text), let condition = try? parser.parseCompleteCondition() {
                _ = condition.explain(in: context)
                _ = condition.description
            }
            _ = ExpressionParser.looksLikeExpression(text)
        }
        #expect(parsed > 50)  // the generator does reach valid expressions
    }

    @Test func damagedRuleFilesGiveErrorsNotCrashes() throws {
        let original = try String(contentsOfFile: repositoryRoot + "/routes/stripe.yaml", encoding: .utf8)
        var rng = SplitMix64(state: 42)
        let loader = RuleLoader(environment: ["STRIPE_WEBHOOK_SECRET": testSecret])
        var broken = 0
        for _ in 0..<400 {
            var chars = Array(original.unicodeScalars)
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                let position = Int.random(in: 0..<chars.count, using: &rng)
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: chars.remove(at: position)
                case 1: chars.insert(Array(":-[]{}|'\"#&*!%@` \n\t".unicodeScalars).randomElement(using: &rng)!, at: position)
                case 2: chars.insert(contentsOf: Array(Self.pieces.randomElement(using: &rng)!.unicodeScalars), at: position)
                default:
                    let other = Int.random(in: 0..<chars.count, using: &rng)
                    chars.swapAt(position, other)
                }
            }
            let text = String(String.UnicodeScalarView(chars))
            do {
                _ = try loader.load(files: [("routes/stripe.yaml", text)])
            } catch {
                broken += 1
                for e in error.errors {
                    #expect(e.file == "routes/stripe.yaml")
                    #expect(e.line >= 1 && e.column >= 1, "\(e)")
                    #expect(!e.message.isEmpty)
                }
            }
        }
        #expect(broken > 100)
    }

    @Test func arbitraryYAMLDocumentsNeverCrash() {
        var rng = SplitMix64(state: 7)
        let fragments = ["source: x\n", "verify:\n", "  scheme: stripe\n", "  secrets: [A]\n", "routes:\n", "  - name: r\n",
                         "    when: {type: a}\n", "    track: {event: E}\n", "    person: {email: body.e}\n", "- \n", "? \n",
                         "&a [1, *a]\n", "!!binary aGk=\n", "---\n", "{ ]\n", "key: |\n  text\n", "x: 1\nx: 2\n", "\u{FEFF}", "\t\n"]
        let loader = RuleLoader(environment: ["A": "x"])
        for _ in 0..<400 {
            let text = (0..<Int.random(in: 1...10, using: &rng)).map { _ in fragments.randomElement(using: &rng)! }.joined()
            _ = try? loader.load(files: [("f.yaml", text)])
        }
    }
}

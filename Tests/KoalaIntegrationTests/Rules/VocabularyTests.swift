import Foundation
import Testing
@testable import KoalaCore
import KoalaTestSupport

/// Issue 14, part 4: every shipped rule file speaks the one vocabulary README documents, so a growth team
/// can build one audience whichever provider sent the event.
@Suite("Billing vocabulary")
struct VocabularyTests {
    /// The event names in README's vocabulary table (first column, in backticks).
    func documentedEvents() throws -> Set<String> {
        let readme = try String(contentsOfFile: repositoryRoot + "/README.md", encoding: .utf8)
        guard let start = readme.range(of: "| event | the moment |"),
              let end = readme.range(of: "\n\n", range: start.upperBound..<readme.endIndex) else { return [] }
        var names: Set<String> = []
        for line in readme[start.upperBound..<end.lowerBound].split(separator: "\n") {
            let cell = line.split(separator: "|", omittingEmptySubsequences: true).first ?? ""
            for part in cell.split(separator: "`").enumerated() where part.offset % 2 == 1 { names.insert(String(part.element)) }
        }
        return names
    }

    func shippedTable() throws -> RuleTable {
        try RuleLoader(environment: [:]).load(directory: repositoryRoot + "/routes")
    }

    @Test func everyShippedEventIsInTheVocabularyTable() throws {
        let documented = try documentedEvents()
        #expect(documented.count >= 20)
        var undocumented: [String] = []
        for (name, source) in try shippedTable().sources.sorted(by: { $0.key < $1.key }) {
            for route in source.routes {
                guard let event = route.track?.event else { continue }
                guard case .literal(.string(let text)) = event else {
                    undocumented.append("\(name)/\(route.name): computed event name \(event)")
                    continue
                }
                if !documented.contains(text) { undocumented.append("\(name)/\(route.name): \(text)") }
            }
        }
        #expect(undocumented.isEmpty, "\(undocumented)")
    }

    @Test func billingStatusIsOneOfTheSixValues() throws {
        let allowed: Set<String> = ["trialing", "active", "past_due", "paused", "cancelling", "churned"]
        var wrong: [String] = []
        for (name, source) in try shippedTable().sources {
            for route in source.routes {
                for field in route.account?.traits ?? [] where field.name == "billing_status" {
                    if case .literal(.string(let text)) = field.value, !allowed.contains(text) { wrong.append("\(name)/\(route.name): \(text)") }
                }
            }
        }
        #expect(wrong.isEmpty, "\(wrong)")
    }
}

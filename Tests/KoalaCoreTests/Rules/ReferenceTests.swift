import Foundation
import Testing
@testable import KoalaCore
import KoalaTestSupport

/// Issue 28: README's function and filter reference is kept in step with the code.
@Suite("README's function and filter reference")
struct ReferenceTests {
    static func readme() throws -> String { try String(contentsOfFile: repositoryRoot + "/README.md", encoding: .utf8) }

    @Test func theFunctionTableIsTheOneTheCodeRenders() throws {
        let readme = try Self.readme()
        let begin = try #require(readme.range(of: "<!-- functions: generated from Functions.reference -->\n"))
        let end = try #require(readme.range(of: "\n<!-- end of functions -->", range: begin.upperBound..<readme.endIndex))
        let documented = String(readme[begin.upperBound..<end.lowerBound])
        #expect(documented == Functions.referenceTable, "README's function table is out of date; replace it with:\n\(Functions.referenceTable)")
        // Every function the parser knows is in the reference, and nothing else.
        let referenced = Set(Functions.reference.map { String($0.call.prefix { $0 != "(" }) })
        #expect(referenced == Set(Functions.names.keys), "in the code but not the reference: \(Set(Functions.names.keys).subtracting(referenced)); the other way: \(referenced.subtracting(Functions.names.keys))")
    }

    @Test func theFilterTableNamesEveryFilter() throws {
        let readme = try Self.readme()
        let start = try #require(readme.range(of: "| filter | does | example |"))
        let rows = readme[start.upperBound...].split(separator: "\n").drop { $0.hasPrefix("|---") }.prefix { $0.hasPrefix("|") }
        var named = Set<String>()
        for row in rows {
            let first = row.split(separator: "|", omittingEmptySubsequences: true).first ?? ""
            // The names are the code spans of the first cell: `lower`, `money(currency)`, `map('a=b', …)`.
            for (index, piece) in first.split(separator: "`", omittingEmptySubsequences: false).enumerated() where index % 2 == 1 {
                named.insert(String(piece.prefix { $0 != "(" }))
            }
        }
        #expect(named == Set(Filters.all.keys), "filters missing from README: \(Set(Filters.all.keys).subtracting(named)); named but unknown: \(named.subtracting(Filters.all.keys))")
    }
}

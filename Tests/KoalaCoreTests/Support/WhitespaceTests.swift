import Foundation
import Testing
@testable import KoalaCore

@Suite("Trimming white space")
struct WhitespaceTests {
    /// Every scalar Unicode calls White_Space, the zero-width space (Foundation trims it too), scalars that are
    /// not white space (word joiner, BOM, control characters), and plain text: the native trims keep and drop
    /// what Foundation's do. (A scan of every scalar found U+200B the only one Foundation adds to White_Space,
    /// and to the space separators for `.whitespaces`.)
    @Test func trimsWhatFoundationTrims() {
        let edges: [String] = ["", " ", "\t", "\n", "\r\n", "\u{0B}", "\u{0C}", "\u{85}", "\u{A0}", "\u{1680}", "\u{2000}", "\u{200A}",
                               "\u{2028}", "\u{2029}", "\u{202F}", "\u{205F}", "\u{3000}", "\u{200B}", "\u{2060}", "\u{FEFF}", "\u{0}", "\u{7F}"]
        let middles = ["", "ada@acme-corp.io", "a b", "jürgen@müller.de", "\u{3000}x\u{2029}y", "\u{200B}"]
        for head in edges {
            for middle in middles {
                for tail in edges {
                    let text = head + middle + tail
                    let scalars = "\(Array(text.unicodeScalars.map(\.value)))"
                    #expect(text.trimmingWhitespace == text.trimmingCharacters(in: .whitespacesAndNewlines), "\(scalars)")
                    #expect(text.trimmingSpaces == text.trimmingCharacters(in: .whitespaces), "\(scalars)")
                    #expect(text[...].trimmingWhitespace == text.trimmingCharacters(in: .whitespacesAndNewlines), "\(scalars)")
                }
            }
        }
    }

    @Test func anIdOfPrintableTextHasNoProblemAndControlCharactersAnywhereDo() {
        #expect(SourceDefinition.identifierProblem("evt_1NqB8cLkdIwHu7ix2ahjkbDe") == nil)
        #expect(SourceDefinition.identifierProblem("évènement~1") == nil)
        for bad in ["evt\u{0}1", "evt\u{7F}", "evt\u{85}", "\u{1B}[31m", "évt\u{9}"] {
            #expect(SourceDefinition.identifierProblem(bad) != nil, "\(bad.debugDescription)")
        }
    }
}

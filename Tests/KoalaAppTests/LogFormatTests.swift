import Foundation
import Logging
import Testing
@testable import KoalaApp
@testable import KoalaCore
import KoalaTestSupport

@Suite("JSON log lines")
struct LogFormatTests {
    @Test func jsonLogLinesEscapeBidiAndControlCharactersToo() {
        #expect(JSONLogHandler.json(LogText.escaped(.string("a\u{202E}b\u{0}"))) == .string(#"a\u{202E}b\u{0}"#))
    }
}

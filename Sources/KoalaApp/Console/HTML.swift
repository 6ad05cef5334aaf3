import Foundation
import KoalaCore

/// The console's escaping (the templates' content type, `ConsoleTemplates`) and its age wording.
enum HTML {
    /// Text for an element's content or a quoted attribute value: `& < > " '` become entities, and control,
    /// bidi and invisible format characters are shown as `\u{…}` so a payload cannot hide or reorder text.
    static func text(_ value: String) -> String {
        var out = ""
        out.reserveCapacity(value.utf8.count)
        for scalar in value.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            case "\n", "\t": out.unicodeScalars.append(scalar)
            default:
                if LogText.needsEscape(scalar) {
                    out += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }

    /// `just now`, `42 s ago`, `5 min ago`, `3 h ago`, `2 d ago`; a time ahead is `in 5 min`.
    static func age(_ seconds: TimeInterval) -> String {
        let s = abs(seconds)
        let amount: String
        switch s {
        case ..<2: return "just now"
        case ..<60: amount = "\(Int(s)) s"
        case ..<3600: amount = "\(Int(s / 60)) min"
        case ..<86400: amount = "\(Int(s / 3600)) h"
        default: amount = "\(Int(s / 86400)) d"
        }
        return seconds >= 0 ? amount + " ago" : "in " + amount
    }
}

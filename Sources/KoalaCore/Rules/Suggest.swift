import Foundation

/// "Did you mean …?" for names in rule files and configuration files.
package enum Suggest {
    /// The candidate with the smallest edit distance, if it is close enough to be a likely typo; else one the
    /// word begins with or that begins with the word (`uppercase` → `upper`, `trimspace` → `trim`), the nearest
    /// in length, when both have at least 3 characters.
    package static func closest(to word: String, in candidates: [String]) -> String? {
        let lower = word.lowercased()
        let scored = candidates.map { ($0, distance(lower, $0.lowercased())) }
        if let best = scored.min(by: { ($0.1, $0.0) < ($1.1, $1.0) }), best.1 <= max(2, word.count / 3) { return best.0 }
        let related = candidates.filter { candidate in
            let other = candidate.lowercased()
            return min(other.count, lower.count) >= 3 && (lower.hasPrefix(other) || other.hasPrefix(lower))
        }
        return related.min { (abs($0.count - word.count), $0) < (abs($1.count - word.count), $1) }
    }

    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}

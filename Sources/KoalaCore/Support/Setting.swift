import Foundation

/// One setting of a component, declared once beside the component: its key, what it means, how its text
/// becomes the component's value (with the accepted range), and how the effective value is shown by
/// `koala-router config`. The app reads the values (environment, `NAME_FILE`, config file) and turns a
/// problem into an error naming the setting; the component never sees where a value came from.
package struct Setting<Component> {
    /// The key within the component's section, dot-separated: `linger_ms` in section `koala_router` is
    /// `koala_router: { linger_ms: … }` in the config file and `KOALA_ROUTER_LINGER_MS` in the environment.
    package let key: String
    /// What the setting means, for people.
    package let help: String
    /// Never printed, logged or stored.
    package let isSecret: Bool
    /// Sets the value from its text; throws what is wrong with the text.
    package let apply: (inout Component, String) throws(SettingProblem) -> Void
    /// The effective value, as `koala-router config` prints it (secrets say only whether they are set).
    package let show: (Component) -> String

    /// A setting read by its own code.
    package init(_ key: String, help: String, isSecret: Bool = false,
                apply: @escaping (inout Component, String) throws(SettingProblem) -> Void, show: @escaping (Component) -> String) {
        self.key = key
        self.help = help
        self.isSecret = isSecret
        self.apply = apply
        self.show = show
    }

    /// A number in `range` (as written), stored multiplied by `scale` (e.g. milliseconds written, seconds kept).
    package static func number(_ key: String, _ path: WritableKeyPath<Component, Double>, in range: ClosedRange<Double>,
                              scale: Double = 1, help: String) -> Setting {
        Setting(key, help: help, apply: { component, text throws(SettingProblem) in
            component[keyPath: path] = try parse(text, in: range) * scale
        }, show: { component in format(component[keyPath: path] / scale) })
    }

    /// A whole number in `range`.
    package static func integer(_ key: String, _ path: WritableKeyPath<Component, Int>, in range: ClosedRange<Int>,
                               help: String) -> Setting {
        Setting(key, help: help, apply: { component, text throws(SettingProblem) in
            component[keyPath: path] = Int(try parse(text, in: Double(range.lowerBound)...Double(range.upperBound)))
        }, show: { component in String(component[keyPath: path]) })
    }

    /// Text, checked by `check` (nil: fine; otherwise what is wrong).
    package static func text(_ key: String, _ path: WritableKeyPath<Component, String>, help: String,
                            check: @escaping (String) -> String? = { _ in nil }, show: ((String) -> String)? = nil) -> Setting {
        Setting(key, help: help, apply: { component, text throws(SettingProblem) in
            if let problem = check(text) { throw SettingProblem(problem) }
            component[keyPath: path] = text
        }, show: { component in (show ?? { $0 })(component[keyPath: path]) })
    }

    /// Optional text; `unset` says what its absence means. A secret shows only whether it is set.
    package static func optionalText(_ key: String, _ path: WritableKeyPath<Component, String?>, isSecret: Bool = false,
                                    unset: String, help: String, check: @escaping (String) -> String? = { _ in nil }) -> Setting {
        Setting(key, help: help, isSecret: isSecret, apply: { component, text throws(SettingProblem) in
            if let problem = check(text) { throw SettingProblem(problem) }
            component[keyPath: path] = text
        }, show: { component in
            guard let value = component[keyPath: path] else { return "(not set: \(unset))" }
            return isSecret ? "(set, redacted)" : value
        })
    }

    /// A number from text, or the problem with it.
    package static func parse(_ text: String, in range: ClosedRange<Double>) throws(SettingProblem) -> Double {
        guard let value = Double(text), range.contains(value) else {
            throw SettingProblem("'\(text)' is not a number in \(format(range.lowerBound))...\(format(range.upperBound))")
        }
        return value
    }

    /// `60` rather than `60.0`; fractions as they are.
    package static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }
}

/// Why a setting's text was refused, said so a person knows what to write instead.
package struct SettingProblem: Error, Equatable {
    /// What is wrong and what to write instead.
    package let text: String
    package init(_ text: String) { self.text = text }
}

/// A component with settings of its own, read through `init(reader:)` (the app gives it the reader).
package protocol Configurable {
    /// The component with every setting at its default.
    init()
    /// The section its keys sit under (`koala_router`); empty when each key names its own section.
    static var section: String { get }
    /// Every setting, in the order `koala-router config` prints them.
    static var settings: [Setting<Self>] { get }
    /// Checks that span several settings, after all are read; throws the setting to blame and the problem.
    func validate() throws(SettingConflict)
}

/// Two settings that do not fit together: `setting` is the one to change.
package struct SettingConflict: Error, Equatable {
    /// The setting's environment name.
    package let setting: String
    /// What is wrong and what to change.
    package let problem: String
    package init(setting: String, problem: String) {
        self.setting = setting
        self.problem = problem
    }
}

extension Configurable {
    package func validate() throws(SettingConflict) {}

    /// A setting's full key: its section and key, e.g. `["koala_router", "linger_ms"]`.
    package static func path(of setting: Setting<Self>) -> [String] {
        (section.isEmpty ? [] : [section]) + setting.key.split(separator: ".").map(String.init)
    }

    /// A setting's environment name: `KOALA_ROUTER_LINGER_MS`.
    package static func environmentName(of setting: Setting<Self>) -> String {
        path(of: setting).joined(separator: "_").uppercased()
    }

    /// Every setting's environment name and effective value, secrets redacted.
    package var described: [(String, String)] {
        Self.settings.map { (Self.environmentName(of: $0), $0.show(self)) }
    }
}

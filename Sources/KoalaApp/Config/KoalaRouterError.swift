import KoalaCore
import KoalaStore

/// The service's one error, as a program embedding the router sees it: a code to branch on and a message for a
/// person (what is wrong and what to do; never a secret). `RouterConfiguration.load(…)` and
/// `makeRouterApplication(_:logger:)` throw only this: a problem of a lower module (a rule file, the store) is
/// carried with its code and its message.
public struct KoalaRouterError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What kind of problem it is; stable, for code and tests to branch on.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String {
            case invalidSetting = "invalid_setting"
            case rules
            case storage
            case provider
            case backfill
        }

        private let base: Base

        /// A setting (environment, flag, secret file or config file) cannot be used; `setting` names it.
        public static let invalidSetting = Code(base: .invalidSetting)
        /// The rule files do not load; the message lists every mistake with its file, line and column.
        public static let rules = Code(base: .rules)
        /// The store cannot be opened or used (`StoreError`'s message).
        public static let storage = Code(base: .storage)
        /// A provider's API refused or failed a backfill's request.
        public static let provider = Code(base: .provider)
        /// A backfill or reconcile cannot go on.
        public static let backfill = Code(base: .backfill)

        public var description: String { base.rawValue }
    }

    /// What kind of problem it is.
    public let code: Code
    /// The setting at fault, for `invalidSetting`.
    public let setting: String?
    /// What is wrong and what to do.
    public let message: String

    init(_ code: Code, _ message: String, setting: String? = nil) {
        self.code = code
        self.message = message
        self.setting = setting
    }

    /// A setting whose value cannot be used, named as in the environment.
    static func invalid(setting: String, problem: String) -> KoalaRouterError { KoalaRouterError(.invalidSetting, problem, setting: setting) }

    /// `error` as this type, for the public entry points: ours as it is, a lower module's with its code.
    static func wrapping(_ error: any Error) -> any Error {
        switch error {
        case let error as KoalaRouterError: error
        case let error as RuleTableErrors: KoalaRouterError(.rules, error.description)
        case let error as RuleError: KoalaRouterError(.rules, error.description)
        case let error as StoreError: KoalaRouterError(.storage, error.description)
        // Cancellation and the server libraries' own errors pass through as they are.
        default: error
        }
    }

    public var description: String { setting.map { "invalid setting \($0): \(message)" } ?? message }
}

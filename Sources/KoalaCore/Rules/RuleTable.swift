import Foundation

/// The whole validated rule table: one definition per source. Immutable; a reload builds a new one.
package struct RuleTable: Sendable {
    /// Content hash of every loaded file; recorded with each webhook routed by this table.
    package let version: String
    /// The sources by name (the `source:` of their rule file).
    package let sources: [String: SourceDefinition]
    /// Problems that do not stop the table from serving (e.g. a source whose secret is not set).
    package let warnings: [String]
    /// Secrets that are set but unusable (not valid in their encoding, or a key under 16 bytes), each naming
    /// its setting. The table still serves, without them (a source with no usable secret is disabled), but
    /// `check` fails on them and `serve` logs them as errors: the setting is wrong, not merely absent.
    package let secretErrors: [String]

    init(version: String, sources: [String: SourceDefinition], warnings: [String] = [], secretErrors: [String] = []) {
        self.version = version
        self.sources = sources
        self.warnings = warnings
        self.secretErrors = secretErrors
    }
}

/// Whether a source takes webhooks.
package enum SourceState: Sendable {
    case enabled(any SignatureVerifier)
    /// Webhooks are answered 503 with this reason, e.g. the source's secret is not set.
    case disabled(reason: String)
}

/// Everything a rule file says about one source.
package struct SourceDefinition: Sendable {
    /// The source's name, as in `/webhooks/<name>`.
    package let name: String
    /// The rule file that defines it.
    package let file: String
    package let scheme: String
    /// Enabled with its verifier, or disabled and why.
    package let state: SourceState
    /// The headers the scheme reads a signature or credential from, as the scheme spells them, whether or
    /// not the source is enabled. They are never stored, and a request without any is refused before its body is read.
    let credentialHeaders: [String]
    /// The headers stored with a webhook, lower-cased (an allow-list, see `FileParser.keptHeaders`); rules see
    /// only these.
    let keptHeaders: Set<String>
    let webhookID: Expression
    let eventType: Expression
    let eventTime: Expression?
    /// The routes, in file order.
    package let routes: [Route]

    /// The verifier of an enabled source.
    var verifier: (any SignatureVerifier)? {
        if case .enabled(let verifier) = state { return verifier }
        return nil
    }

    /// Why a disabled source is disabled.
    var disabledReason: String? {
        if case .disabled(let reason) = state { return reason }
        return nil
    }
    /// The free-mail list its routing uses (the shipped one, changed by `KOALA_ROUTER_FREE_MAIL_DOMAINS_FILE`).
    package var freeMail = FreeMailDomains.shipped
}

/// One route: when it matches, who the person is, and the messages it produces. A class: every webhook
/// walks its source's routes, and a reference costs one retain where a value of this size costs one per field.
package final class Route: Sendable {
    /// The route's name, unique in its file.
    package let name: String
    /// Where it is written.
    package let location: SourceLocation
    /// The event types it takes.
    package let types: [TypePattern]
    /// The event types it takes, as written (globs included).
    package var typePatterns: [String] { types.map(\.description) }
    /// What it produces: `track`, `identify`, `account`.
    package var outputNames: [String] {
        [track.map { _ in "track" }, identify.map { _ in "identify" }, account.map { _ in "account" }].compactMap { $0 }
    }
    /// `when.where`: must hold too (nil: no condition).
    package let condition: Condition?
    let person: PersonSpec?
    let track: TrackOutput?
    let identify: IdentifyOutput?
    let account: AccountOutput?
    /// `billing`: the subscription state this route feeds the revenue model (README, Revenue semantics).
    let billing: BillingSpec?
    /// `remember`: what this route remembers, and under which provider id.
    let remember: [MemorySpec]
    /// `destinations`: the only destinations this route sends to (nil: every one configured).
    let destinations: [Destination]?
    /// `track.destinations` and the like: an output limited further.
    let outputDestinations: [KoalaMessage.Output: [Destination]]
    /// Every expression of the route with where it is written, for checks that point at the rule.
    package let sites: [ExpressionSite]

    /// Every `recall` used by this route, so ingest can look them up before routing.
    package let recalls: [(namespace: String, key: Expression)]
    /// What routing this route reads from memory: its recalls and the states it remembers (compared with the
    /// state remembered before).
    let memoryReads: [(namespace: String, key: Expression)]
    /// Every memory entry the route reads or remembers: what ingest loads before routing it.
    let memoryLookups: [(namespace: String, key: Expression)]
    /// The `remember` entries that keep values (states), not only an identity.
    let stateRemembers: [MemorySpec]

    /// Whether this route's `when.type` takes webhooks of `type` (no type: every one).
    func takes(type: String) -> Bool {
        types.isEmpty || types.contains { $0.matches(type) }
    }

    /// A route; what it reads from memory is worked out here, once, not for every webhook.
    init(name: String, location: SourceLocation, types: [TypePattern], condition: Condition?, person: PersonSpec?,
         track: TrackOutput?, identify: IdentifyOutput?, account: AccountOutput?, remember: [MemorySpec], billing: BillingSpec? = nil,
         destinations: [Destination]? = nil, outputDestinations: [KoalaMessage.Output: [Destination]] = [:], sites: [ExpressionSite] = []) {
        self.billing = billing
        self.destinations = destinations
        self.outputDestinations = outputDestinations
        self.sites = sites
        self.name = name
        self.location = location
        self.types = types
        self.condition = condition
        self.person = person
        self.track = track
        self.identify = identify
        self.account = account
        self.remember = remember
        var expressions: [Expression] = condition?.expressions ?? []
        if let person { expressions += [person.email, person.profileID, person.userID].compactMap { $0 } }
        if let track { expressions += [track.event] + track.properties.map(\.value) }
        if let identify { expressions += identify.traits.map(\.value) }
        if let account { expressions += [account.domain, account.accountID, account.groupID].compactMap { $0 } + account.traits.map(\.value) }
        let ordered = expressions.flatMap(\.orderedRecalls)
        // A billing block's recalls (remembered discounts) and every latest() are looked up but do not make the
        // route out of order: the revenue model orders each subscription's states itself, and latest() copies
        // the newest value known.
        recalls = expressions.flatMap(\.recalls) + (billing?.fields.flatMap { $0.value.recalls } ?? [])
        stateRemembers = remember.filter { !$0.values.isEmpty }
        memoryReads = ordered + stateRemembers.map { (namespace: $0.name, key: $0.key) }
        memoryLookups = recalls + stateRemembers.map { (namespace: $0.name, key: $0.key) }
    }
}

/// A value expression as written in a rule file: which field (`track.properties.mode`), where, and what.
package struct ExpressionSite: Sendable {
    /// The field it fills, e.g. `track.properties.mode`.
    package let what: String
    /// Where it is written.
    package let location: SourceLocation
    /// The expression.
    package let expression: Expression
}

/// An event type pattern: exact text, or a glob where `*` matches any run of characters.
package struct TypePattern: Sendable, CustomStringConvertible {
    /// The pattern as written.
    package let pattern: String
    /// Whether the pattern has `*` or `?`, decided once: every webhook is matched against every route.
    package let isGlob: Bool

    init(_ pattern: String) {
        self.pattern = pattern
        isGlob = pattern.utf8.contains(UInt8(ascii: "*")) || pattern.utf8.contains(UInt8(ascii: "?"))
    }

    package var description: String { pattern }

    /// Whether an event type is one this pattern takes.
    package func matches(_ type: String) -> Bool {
        // Byte checks: String.contains(String) goes through the generic searcher, which allocates.
        guard isGlob else { return pattern == type }
        return Self.glob(Array(pattern.unicodeScalars)[...], Array(type.unicodeScalars)[...])
    }

    private static func glob(_ p: ArraySlice<Unicode.Scalar>, _ s: ArraySlice<Unicode.Scalar>) -> Bool {
        var p = p, s = s
        var star: (ArraySlice<Unicode.Scalar>, ArraySlice<Unicode.Scalar>)?
        while !s.isEmpty {
            if let c = p.first, c == "?" || c == s.first! {
                p = p.dropFirst()
                s = s.dropFirst()
            } else if p.first == "*" {
                p = p.dropFirst()
                star = (p, s)
            } else if let (sp, ss) = star {
                p = sp
                s = ss.dropFirst()
                star = (sp, s)
            } else {
                return false
            }
        }
        return p.allSatisfy { $0 == "*" }
    }
}

/// How a route finds the person (or account) a message is about.
package struct PersonSpec: Sendable {
    let email: Expression?
    let profileID: Expression?
    /// `person.user_id`: the id Segment-compatible destinations know the person by (Koala ignores it).
    var userID: Expression?
}

/// Ordered name → value pairs (properties, traits), kept in file order for stable output.
package typealias FieldList = [(name: String, value: Expression)]

/// One `remember` entry: under `name` and the provider id `key`, the route's resolved identity and, for
/// state memory, `values` as of the webhook's event time.
package struct MemorySpec: Sendable {
    let name: String
    let key: Expression
    /// Empty: identity only.
    let values: FieldList
}

/// A route's `billing:` block: where the payload says a subscription's state, for the revenue model. Each key
/// is one of `BillingSpec.keys`; `customer`, `subscription` and `status` are required.
package struct BillingSpec: Sendable {
    /// The keys, in the order README documents them.
    static let keys = ["customer", "subscription", "status", "mrr", "mrr_basis", "list_mrr", "pending_discounts", "currency", "plan", "seats",
                       "billing_interval", "trial_ends_at", "started_at", "ended_at", "version", "provider", "new_when",
                       "discount_id", "discount_percent", "discount_amount", "discount_per_seat", "discount_recurs"]
    static let required = ["customer", "subscription", "status"]
    /// A block that describes a discount (for subscriptions that name it by id only) needs these instead.
    static let requiredForDiscount = ["customer", "discount_id"]

    /// Whether this block describes a discount rather than a subscription.
    var describesDiscount: Bool { expression("discount_id") != nil }
    /// The keys with their expressions, as written (all but `new_when`).
    package let fields: FieldList
    /// `new_when`: when this webhook starts a subscription (a condition, as `when.where`). A subscription first
    /// seen on any other webhook existed before the service saw it: its revenue is a `baseline` movement, not
    /// `new` business.
    let newWhen: Condition?

    func expression(_ key: String) -> Expression? { fields.first { $0.name == key }?.value }

    /// The memory namespace the revenue model keeps each billing customer's ledger under (per source).
    package static let ledgerNamespace = "billing_ledger"
}

/// A Koala custom event a route sends.
package struct TrackOutput: Sendable {
    let event: Expression
    let properties: FieldList
}

/// Visitor traits a route sends.
package struct IdentifyOutput: Sendable {
    let traits: FieldList
}

/// Account traits a route sends, keyed by domain or account id.
package struct AccountOutput: Sendable {
    let domain: Expression?
    let accountID: Expression?
    let groupID: Expression?
    let traits: FieldList
}
